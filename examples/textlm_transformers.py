"""A tiny GPT-2 built from a config, trained with Hugging Face's ``Trainer`` on Python's own
sources, PBT-tuned by hyperpop.

Nothing is downloaded: the model is ``GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, ...))``
with fresh weights, the vocabulary is the characters of the text (built here, no tokenizer), and
the text is the source of a few standard-library modules of the Python running this file, split
into training, validation and held-out test text. ``make_trainer(config)`` is the ordinary
transformers code; ``TransformersTrainable.wrap`` makes it a hyperpop trainable: one interval is
``STEPS`` optimiser steps, then an evaluation on the validation text (``eval_loss``, nats per
character). PBT tunes the learning rate, weight decay and warmup of AdamW and its linear decay;
an exploit copies the donor's weights, Adam moments and schedule position, then the member's own
values take over in place. Only :func:`evaluate` reads the test text. docs/integrations.md shows
the plain script this came from.

Run it (needs ``pip install "hyperpop[transformers]"``):

    hyperpop run examples/textlm_transformers.py --overwrite   # PBT with the live view
    python examples/textlm_transformers.py                     # PBT, test loss and a sample
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is built here; never reach the hub

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

import hyperpop as hp
from hyperpop.integrations.transformers import TransformersTrainable

#: standard-library modules whose sources make the text (about 300k characters)
MODULES = ("textwrap", "string", "shlex", "fractions", "argparse", "calendar", "difflib", "heapq")
SEQ = 64  # characters per training sequence
STEPS = 25  # optimiser steps per PBT interval
BUDGET = 16  # intervals per member
EVAL_CHUNKS = 96  # validation sequences per evaluation (6k characters)

_DATA: dict[str, Any] = {}


def data() -> dict[str, Any]:
    """The vocabulary (``chars``) and the train (92%), validation (4%) and held-out test (4%)
    character ids, in file order."""
    if not _DATA:
        root = os.path.dirname(os.__file__)
        parts = []
        for name in MODULES:
            with open(os.path.join(root, name + ".py"), encoding="utf-8") as f:
                parts.append(f.read())
        text = "\n".join(parts)
        chars = ["\0", *sorted(set(text))]  # id 0 is for characters outside the vocabulary
        _DATA["chars"] = chars
        _DATA["index"] = {c: i for i, c in enumerate(chars)}
        ids = _ids(text, _DATA["index"])
        a, b = int(len(ids) * 0.92), int(len(ids) * 0.96)
        _DATA.update(train=ids[:a], val=ids[a:b], test=ids[b:])
    return _DATA


def _ids(text: str, index: dict[str, int]) -> torch.Tensor:
    return torch.tensor([index.get(c, 0) for c in text], dtype=torch.long)


def encode(text: str) -> torch.Tensor:
    """Characters to ids (0 for a character the vocabulary lacks)."""
    return _ids(text, data()["index"])


def decode(ids: list[int]) -> str:
    """Ids to characters."""
    chars = data()["chars"]
    return "".join(chars[i] for i in ids)


class Chunks(torch.utils.data.Dataset):
    """Non-overlapping ``SEQ``-character windows; the labels are the inputs (GPT-2 shifts)."""

    def __init__(self, ids: torch.Tensor, limit: int | None = None):
        self.ids = ids
        self.n = (len(ids) - 1) // SEQ if limit is None else min(limit, (len(ids) - 1) // SEQ)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.ids[i * SEQ : (i + 1) * SEQ]
        return {"input_ids": x, "labels": x}


def make_model() -> GPT2LMHeadModel:
    """A 2-layer GPT-2 with 64-wide embeddings (about 120k parameters), from its config."""
    config = GPT2Config(
        vocab_size=len(data()["chars"]),
        n_positions=SEQ,
        n_embd=64,
        n_layer=2,
        n_head=4,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def make_trainer(config: dict[str, Any]) -> Trainer:
    """The transformers code: a model, its TrainingArguments (from the config) and the data."""
    d = data()
    args = TrainingArguments(
        output_dir=os.path.join(tempfile.gettempdir(), "hyperpop-textlm"),
        learning_rate=config["learning_rate"],
        weight_decay=config["weight_decay"],
        warmup_steps=config["warmup_steps"],
        lr_scheduler_type="linear",
        max_steps=STEPS * BUDGET,  # the schedule's length: the whole PBT run
        per_device_train_batch_size=16,
        per_device_eval_batch_size=EVAL_CHUNKS,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    return Trainer(
        model=make_model(),
        args=args,
        train_dataset=Chunks(d["train"]),
        eval_dataset=Chunks(d["val"], limit=EVAL_CHUNKS),
    )


@torch.no_grad()
def evaluate(state: dict[str, Any]) -> float:
    """Held-out test loss (nats per character) of a saved member state."""
    model = make_model()
    model.load_state_dict(state["model"])
    model.eval()
    test = Chunks(data()["test"])
    batch = torch.stack([test[i]["input_ids"] for i in range(len(test))])
    return float(model(input_ids=batch, labels=batch).loss)


@torch.no_grad()
def sample(state: dict[str, Any], prompt: str = "def ", length: int = 120) -> str:
    """Greedy text from a saved member state."""
    model = make_model()
    model.load_state_dict(state["model"])
    model.eval()
    ids = encode(prompt).tolist()
    for _ in range(length):
        logits = model(input_ids=torch.tensor([ids[-SEQ:]])).logits
        ids.append(int(logits[0, -1].argmax()))
    return decode(ids)


trainable = TransformersTrainable.wrap(make_trainer, steps=STEPS)
space = {
    "learning_rate": hp.loguniform(3e-4, 3e-2),
    "weight_decay": hp.loguniform(1e-4, 0.1),
    "warmup_steps": hp.randint(0, 50),
}
settings = dict(
    metric="eval_loss",
    mode="min",
    population=8,
    workers=2,
    budget=hp.Steps(BUDGET),
    ready=4,
    seed=0,
    storage="runs/textlm_transformers.db",
)


if __name__ == "__main__":
    result = hp.run(trainable, space, progress=True, overwrite=True, **settings)
    best = result.best
    state = result.load_checkpoint()
    print(f"best member {best.id}: eval_loss {best.score:.3f}, config {best.config}")
    print(f"held-out test loss: {evaluate(state):.3f} nats/char")
    print(sample(state))
