"""Weights & Biases: one run per member, grouped by the population."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hyperpop.callbacks._tracker import RunInfo, Tracker, import_extra, safe_name
from hyperpop.population import Population

__all__ = ["WandB"]

#: characters of a run's notes kept (the newest lines)
_NOTES_CHARS = 20000


class WandB(Tracker):
    """Log a run to Weights & Biases: one W&B run per member, all in one group.

    Each member's run (``member-03``, in the group named after the population, job type
    ``member``) has its initial config as the W&B config; every report is one ``log`` call
    with the reported metrics, each hyperparameter as ``hp/<name>`` (a schedule is a step
    curve) and ``step``, the member's step, which every chart uses as its x axis (W&B's own
    step only counts up, while a member's step goes back to the donor's at an exploit). Its
    notes list the exploits, explores and rejuvenations ("member-03 copied member-05 at step
    40; lr 0.01 -> 0.012"); its summary has ``pbt/exploits`` and ``pbt/parent``. A member's run
    finishes with the member (exit code 1 if it failed for good).

    Runs have fixed ids (from the run's start time and the member), so passing a WandB callback
    to :func:`hyperpop.resume` continues the same runs (``resume="allow"``). How far the log is
    written is kept in ``<dir>/wandb/hyperpop-<run>.json``: resume from the same ``dir`` and
    nothing is logged twice; elsewhere the whole history is logged again.

    Args:
        project: the W&B project.
        entity: the W&B entity (user or team); None: your default.
        group: the group of the members' runs (default: the store's name and the run's start
            time, e.g. ``digits-20261126-174646-123456``).
        mode: ``"online"``, ``"offline"`` (files only, ``wandb sync`` later) or
            ``"disabled"``; None: W&B's default (``WANDB_MODE``, else online).
        dir: the folder W&B writes under (``<dir>/wandb/``); None: ``WANDB_DIR`` or the
            current folder.
        tags: tags for every member's run.
        settings: extra ``wandb.Settings`` fields. By default W&B prints nothing, captures no
            console output and samples no system metrics (the members train elsewhere).

    Example:
        >>> hp.run(..., callbacks=[hp.callbacks.WandB("digits", mode="offline")])  # doctest: +SKIP
    """

    def __init__(
        self,
        project: str,
        *,
        entity: str | None = None,
        group: str | None = None,
        mode: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        tags: list[str] | None = None,
        settings: dict[str, Any] | None = None,
    ):
        super().__init__()
        if mode not in (None, "online", "offline", "disabled"):
            raise ValueError(f"mode must be 'online', 'offline', 'disabled' or None, not {mode!r}")
        self._wandb = import_extra("wandb", "wandb", "hyperpop.callbacks.WandB")
        self.project, self.entity, self.group, self.mode = project, entity, group, mode
        self.dir = Path(dir) if dir is not None else None
        self.tags = list(tags or [])
        self.settings = {
            "console": "off",
            "silent": True,
            "x_disable_stats": True,
            "save_code": False,
            **(settings or {}),
        }
        #: member -> its open W&B run
        self.runs: dict[int, Any] = {}
        self._configs: dict[int, dict[str, Any]] = {}
        self._mark: Path | None = None

    def __repr__(self) -> str:
        return f"WandB({self.project!r}, mode={self.mode!r})"

    def run_id(self, member: int) -> str:
        """The W&B id of ``member``'s run."""
        info = self.info
        assert info is not None, "the run has not started"
        return safe_name(f"{info.name[:40]}-{info.key}-m{member}")

    def _open(self, pop: Population, info: RunInfo) -> int:
        self.runs, self._configs = {}, {}
        self._group = self.group or safe_name(f"{info.name}-{info.key}")
        root = self.dir or Path(os.environ.get("WANDB_DIR") or ".")
        self._root = root
        self._mark = root / "wandb" / f"hyperpop-{safe_name(info.name)}-{info.key}.json"
        if self._mark.exists():
            return int(json.loads(self._mark.read_text()).get("seq", 0))
        return 0

    def _run(self, member: int) -> Any:
        run = self.runs.get(member)
        if run is not None:
            return run
        self._root.mkdir(parents=True, exist_ok=True)
        config = self._configs.get(member)
        if config is None:  # resumed: the config was logged in an earlier session
            config = dict(self._fold.members[member].schedule[0].config)
        info = self.info
        assert info is not None, "the run has not started"
        wandb = self._wandb
        run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self._group,
            job_type="member",
            name=info.member(member),
            id=self.run_id(member),
            config=config,
            tags=self.tags or None,
            mode=self.mode,
            dir=str(self._root),
            reinit="create_new",
            resume="allow",
            settings=wandb.Settings(**self.settings),
        )
        run.define_metric("step")
        run.define_metric("*", step_metric="step")
        self.runs[member] = run
        return run

    def _member(self, member: int, config: dict[str, Any], t: float) -> None:
        self._configs[member] = config
        self._run(member)

    def _report(self, member: int, step: int, values: dict[str, float], t: float) -> None:
        self._run(member).log({"step": step, **values})

    def _note(self, member: int | None, step: int, text: str, t: float) -> None:
        if member is None:
            return
        run = self._run(member)
        m = self._fold.members[member]
        notes = "\n".join(self.notes.get(member, []))
        run.notes = notes[-_NOTES_CHARS:]
        run.summary["pbt/exploits"] = m.exploits
        if m.parent is not None:
            run.summary["pbt/parent"] = m.parent

    def _member_end(self, member: int, status: str) -> None:
        if status == "running":
            self._run(member)
            return
        run = self.runs.pop(member, None)
        if run is not None:
            run.finish(exit_code=1 if status == "failed" else 0)

    def _commit(self, seq: int) -> None:
        info = self.info
        assert info is not None and self._mark is not None
        self._mark.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._mark.with_name(self._mark.name + ".tmp")
        tmp.write_text(json.dumps({"run": info.key, "group": self._group, "seq": seq}))
        os.replace(tmp, self._mark)

    def _close(self, pop: Population, reason: str) -> None:
        for run in self.runs.values():
            run.finish()
        self.runs = {}
