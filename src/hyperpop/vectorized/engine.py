"""The stacked engine: every held member's parameters, buffers, optimiser state and
hyperparameters stacked along a leading member dimension, trained a chunk of slots at once (on a
:class:`~hyperpop.vectorized.lane.Lane`: ``torch.func.vmap`` over ``functional_call``; chunks on
different lanes may train at the same time), copied slot to slot (an exploit), and converted to
and from the plain trainable's state (a checkpoint). The measurements the backend chooses its
chunks from are in :mod:`~hyperpop.vectorized.probe`."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.func import stack_module_state

from hyperpop.trainable import TrainableError
from hyperpop.vectorized import probe
from hyperpop.vectorized.lane import Chunk, Lane
from hyperpop.vectorized.optim import DEFAULTS, OPTIMIZER_KEYS, OPTIMIZERS, group_template
from hyperpop.vectorized.trainable import (
    INIT_ONLY,
    ShapeError,
    VectorizedTrainable,
    member_seed,
    step_seed,
)

__all__ = ["StackedPopulation"]


class StackedPopulation:
    """Every held member's parameters, buffers, optimiser state and hyperparameters, stacked.

    Slot ``i`` of every tensor belongs to one member. The vectorized backend decides which member
    lives in which slot; this class trains slots, copies slots into slots (an exploit), writes
    hyperparameters, and converts a slot to and from the plain trainable's state.
    """

    def __init__(
        self,
        spec: VectorizedTrainable,
        config: dict[str, Any],
        device: str | torch.device,
    ):
        self.spec = spec
        self.device = torch.device(device)
        self.kind = spec.optimizer.lower()
        if self.kind not in OPTIMIZERS:
            raise TrainableError(f"optimizer must be one of {OPTIMIZERS}, got {spec.optimizer!r}")
        spec.config = dict(config)
        spec._device = self.device
        template = spec.build_model(dict(config)).to(self.device)
        self.module = template
        self.param_names = [n for n, _ in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        self.opt_keys = list(DEFAULTS[self.kind])
        self.hp_keys = spec._hp_keys()
        self.state_names = ["momentum_buffer"] if self.kind == "sgd" else ["exp_avg", "exp_avg_sq"]
        # the param_groups entry of a torch.optim state_dict, for checkpoints the plain trainable
        # loads (written out: building a torch optimiser here would import torch._dynamo)
        self.group_template = group_template(self.kind, spec.nesterov)
        self.size = 0
        self.params: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self.opt_steps = torch.zeros(0, dtype=torch.float64, device=self.device)
        self.hp: dict[str, torch.Tensor] = {}
        self.train_steps = torch.zeros(0, dtype=torch.long)
        self.shared = {k: v for k, v in config.items() if k not in self.per_member_keys()}
        #: lane 0 runs ``module``; more lanes (:meth:`lanes`) train chunks at the same time
        self._lanes = [Lane(spec, template, self.kind)]
        self._lanes_lock = threading.Lock()

    def per_member_keys(self) -> set[str]:
        """Config keys that may differ between stacked members."""
        return set(OPTIMIZER_KEYS) | set(self.hp_keys) | set(INIT_ONLY)

    def check_configs(self, configs: Sequence[Mapping[str, Any]]) -> None:
        """Refuse configs that differ from the first one in a key that is not per-member.

        Raises:
            ShapeError: naming the keys (e.g. ``batch_size``, a layer width).
        """
        per_member = self.per_member_keys()
        bad: dict[str, set[str]] = {}
        for config in configs:
            keys = (set(config) | set(self.shared)) - per_member
            for key in keys:
                if key not in config or key not in self.shared:
                    bad.setdefault(key, set()).add("missing")
                elif config[key] != self.shared[key]:
                    bad.setdefault(key, {repr(self.shared[key])}).add(repr(config[key]))
        if bad:
            detail = "; ".join(f"{k!r}: {', '.join(sorted(v))}" for k, v in sorted(bad.items()))
            raise ShapeError(
                f"the vectorized backend trains every member as one stacked model, so only "
                f"per-member numbers may differ between members: the optimiser's "
                f"{sorted(k for k, t in OPTIMIZER_KEYS.items() if t in self.opt_keys)} "
                f"and {type(self.spec).__name__}.hyperparameters {sorted(self.hp_keys)}. These "
                f"config keys differ between members: {detail}. Hyperparameters that change "
                "shapes (batch size, layer widths) cannot be stacked: make them constants in the "
                "space, list per-member numbers in `hyperparameters`, or use backend='local'"
            )

    # --- storage ---------------------------------------------------------------------------
    def grow(self, size: int) -> None:
        """Make room for at least ``size`` slots (new slots are zero until written)."""
        if size <= self.size:
            return
        new = size
        extra = new - self.size

        def pad(t: torch.Tensor) -> torch.Tensor:
            z = torch.zeros((extra,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
            return torch.cat([t, z])

        with torch.no_grad():
            if not self.params:
                params, buffers = stack_module_state([self.module])
                self.params = {k: v.detach()[:0].clone() for k, v in params.items()}
                self.buffers = {k: v.detach()[:0].clone() for k, v in buffers.items()}
                self.state = {
                    k: {s: torch.zeros_like(v) for s in self.state_names}
                    for k, v in self.params.items()
                }
                self.hp = {
                    k: torch.zeros(0, dtype=torch.float64, device=self.device)
                    for k in self.opt_keys + self.hp_keys
                }
            self.params = {k: pad(v) for k, v in self.params.items()}
            self.buffers = {k: pad(v) for k, v in self.buffers.items()}
            self.state = {k: {s: pad(v) for s, v in d.items()} for k, d in self.state.items()}
            self.hp = {k: pad(v) for k, v in self.hp.items()}
            self.opt_steps = pad(self.opt_steps)
            self.train_steps = pad(self.train_steps)
        self.size = new

    def fresh(self, slot: int, config: Mapping[str, Any]) -> None:
        """A newly initialised member in ``slot`` (seeded like the plain trainable's setup)."""
        seed = self.spec._init_seed(config)
        if seed is not None:
            torch.manual_seed(seed)
        module = self.spec.build_model(dict(config)).to(self.device)
        with torch.no_grad():
            for name, p in module.named_parameters():
                self.params[name][slot] = p
                for s in self.state_names:
                    self.state[name][s][slot] = 0
            for name, b in module.named_buffers():
                self.buffers[name][slot] = b
            self.opt_steps[slot] = 0
            self.train_steps[slot] = 0

    def set_config(self, slot: int, config: Mapping[str, Any]) -> None:
        """Write a member's hyperparameters into its slot of the hyperparameter tensors."""
        values = self.spec._optimizer_values(config)
        with torch.no_grad():
            for k in self.opt_keys:
                self.hp[k][slot] = values[k]
            for k in self.hp_keys:
                if k not in config:
                    raise TrainableError(f"hyperparameter {k!r} is not in the config {config}")
                self.hp[k][slot] = float(config[k])

    def copy(self, dst: Sequence[int], src: Sequence[int]) -> None:
        """Copy slots ``src`` into slots ``dst`` all at once (reads happen before writes)."""
        if not dst:
            return
        d = torch.tensor(list(dst), device=self.device)
        s = torch.tensor(list(src), device=self.device)
        with torch.no_grad():
            for t in self._all_tensors():
                t[d] = t[s]
            self.train_steps[d.cpu()] = self.train_steps[s.cpu()]

    def _all_tensors(self) -> list[torch.Tensor]:
        out = list(self.params.values()) + list(self.buffers.values())
        out += [v for d in self.state.values() for v in d.values()]
        out.append(self.opt_steps)
        return out

    def save(self, slot: int) -> dict[str, Any]:
        """The plain trainable's state of the member in ``slot`` (copies, not views)."""
        model = {}
        module_sd_names = list(self.module.state_dict().keys())
        stacked = {**self.params, **self.buffers}
        for name in module_sd_names:
            model[name] = stacked[name][slot].detach().clone().cpu()
        group = dict(self.group_template)
        values = {k: float(self.hp[k][slot]) for k in self.opt_keys}
        for k, v in values.items():
            if k in ("beta1", "beta2"):
                continue
            group[k] = v
        if "betas" in group:
            group["betas"] = (values["beta1"], values["beta2"])
        group["params"] = list(range(len(self.param_names)))
        state: dict[int, dict[str, Any]] = {}
        step = float(self.opt_steps[slot])
        # like torch.optim.SGD, no momentum buffers for a member without momentum
        if step > 0 and not (self.kind == "sgd" and values["momentum"] == 0):
            for i, name in enumerate(self.param_names):
                entry = {
                    s: self.state[name][s][slot].detach().clone().cpu() for s in self.state_names
                }
                if self.kind != "sgd":
                    entry = {"step": torch.tensor(step, dtype=torch.float32), **entry}
                state[i] = entry
        return {
            "model": model,
            "optimizer": {"state": state, "param_groups": [group]},
            "extra": {"steps": int(self.train_steps[slot])},
        }

    def load(self, slot: int, state: Mapping[str, Any]) -> None:
        """Write a plain trainable's state (from either backend) into ``slot``."""
        model = state["model"]
        opt = state["optimizer"]
        missing = [n for n in self.param_names + self.buffer_names if n not in model]
        if missing:
            raise TrainableError(f"the checkpoint's model lacks {missing[:5]}")
        with torch.no_grad():
            for name in self.param_names:
                self.params[name][slot] = model[name].to(self.device)
            for name in self.buffer_names:
                self.buffers[name][slot] = model[name].to(self.device)
            steps = 0.0
            for i, name in enumerate(self.param_names):
                entry = opt["state"].get(i, {})
                for s in self.state_names:
                    value = entry.get(s)
                    self.state[name][s][slot] = 0 if value is None else value.to(self.device)
                if "step" in entry:
                    steps = float(entry["step"])
            if self.kind == "sgd" and opt["state"]:
                steps = 1.0  # SGD records no step count; only "has stepped" matters
            self.opt_steps[slot] = steps
            self.train_steps[slot] = int(state.get("extra", {}).get("steps", 0))

    # --- training --------------------------------------------------------------------------
    def lanes(self, count: int) -> None:
        """From now on ``count`` chunks train at the same time, each in its own thread, on
        lanes ``0 .. count - 1`` (made here); each evaluates its share of
        ``evaluate_members`` per call, so the evaluation's peak memory stays as it was."""
        with self._lanes_lock:
            while len(self._lanes) < count:
                self._lanes.append(self._lanes[0].copy())
            for lane in self._lanes:
                lane.sharing = max(1, count)

    def lane(self, index: int) -> Lane:
        """Lane ``index`` (made by :meth:`lanes`)."""
        return self._lanes[index]

    def train(
        self,
        slots: Sequence[int],
        steps: Sequence[int | None],
        seconds: Sequence[float | None],
        seed: int = 0,
        lane: int = 0,
        members: Sequence[int] | None = None,
    ) -> list[list[dict[str, float]]]:
        """Train ``slots`` together on ``lane``: slot ``i`` for ``steps[i]`` steps (or
        ``seconds[i]``).

        Each slot draws its data from its own generator, seeded from the trainable's seed,
        ``seed``, its member's id (``members[i]``; default: the slot) and its training step
        only: a member's batches are the same whichever members train beside it. Returns
        each slot's metrics, one dict per step trained. Chunks of different slots may train
        on different lanes at the same time: each reads and writes only its own slots.
        """
        k = len(slots)
        runner = self._lanes[lane]
        full = list(slots) == list(range(self.size))
        idx = torch.tensor(list(slots), device=self.device)
        chunk = self.chunk(idx, share=full)
        for v in chunk.params.values():
            v.requires_grad_(True)
        reports: list[list[dict[str, float]]] = [[] for _ in range(k)]
        start = time.perf_counter()
        limit = [math.inf if s is None else int(s) for s in steps]
        deadline = [math.inf if s is None else float(s) for s in seconds]
        done = [False] * k
        step = 0
        ids = list(slots if members is None else members)
        base = [int(self.train_steps[int(s)]) for s in slots]
        own = (self.spec.seed or 0) * 1_000_003 + seed
        gens = [torch.Generator() for _ in range(k)]
        try:
            while not all(done):
                active = torch.tensor([not d for d in done], device=self.device)
                mask = None if bool(active.all()) else active
                at = [b + step for b in base]
                for g, m, s in zip(gens, ids, at):
                    g.manual_seed(member_seed(own, m, s))
                shared = [step_seed(self.spec.seed, s) for s in at]
                metrics = runner.step(chunk, gens, mask, at, shared)
                metrics_list = {n: v.tolist() for n, v in metrics.items()}
                step += 1
                elapsed = time.perf_counter() - start
                for i in range(k):
                    if done[i]:
                        continue
                    reports[i].append({n: float(v[i]) for n, v in metrics_list.items()})
                    if len(reports[i]) >= limit[i] or elapsed >= deadline[i]:
                        done[i] = True
        finally:
            for v in chunk.params.values():
                v.requires_grad_(False)
        counts = torch.tensor([len(r) for r in reports], dtype=torch.long)
        self._scatter(idx, full, chunk, counts)
        return reports

    def chunk(self, idx: torch.Tensor, share: bool = False) -> Chunk:
        """The members in slots ``idx`` as a :class:`~hyperpop.vectorized.lane.Chunk`: copies
        (a slot may repeat), or with ``share`` (``idx`` is every slot, in order) the stacked
        tensors themselves, which training then updates in place."""
        with torch.no_grad():
            if share:
                params, buffers, states = self.params, self.buffers, self.state
                opt_steps, hp = self.opt_steps, self.hp
            else:
                params = {n: v[idx] for n, v in self.params.items()}
                buffers = {n: v[idx] for n, v in self.buffers.items()}
                states = {n: {s: v[idx] for s, v in d.items()} for n, d in self.state.items()}
                opt_steps = self.opt_steps[idx]
                hp = {n: v[idx] for n, v in self.hp.items()}
            return Chunk(
                params,
                buffers,
                states,
                opt_steps,
                {n: hp[n].to(torch.float32) for n in self.hp_keys},
                {n: hp[n] for n in self.opt_keys},
            )

    def _scatter(
        self,
        idx: torch.Tensor,
        full: bool,
        trained: Chunk,
        counts: torch.Tensor,
    ) -> None:
        """Write what :meth:`chunk` copied back into slots ``idx`` (nothing to write when
        ``full``: training worked on the stacked tensors) and count each slot's steps."""
        with torch.no_grad():
            if full:
                self.train_steps[: self.size] += counts
                return
            for n, v in trained.params.items():
                self.params[n][idx] = v
            for n, v in trained.buffers.items():
                self.buffers[n][idx] = v
            for n, d in trained.states.items():
                for s, v in d.items():
                    self.state[n][s][idx] = v
            self.opt_steps[idx] = trained.opt_steps
            self.train_steps[idx.cpu()] += counts

    # --- measuring (the backend's automatic chunks): the functions of hyperpop.vectorized.probe
    # take the engine first, so they are its methods as they are
    measure = probe.measure
    activation_bytes = probe.activation_bytes
    draws_global_random = probe.draws_global_random
