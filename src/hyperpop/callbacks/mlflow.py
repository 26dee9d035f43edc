"""MLflow: one parent run for the population, one nested child run per member."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from hyperpop.callbacks._tracker import RunInfo, Tracker, import_extra
from hyperpop.population import Population
from hyperpop.space import flatten_config

__all__ = ["MLflow"]

#: MLflow's limits: characters of a tag value, entries of one log_batch
_TAG_CHARS = 8000
_BATCH = 1000
_PARAMS_PER_BATCH = 100
_PARAM_CHARS = 500  # what every MLflow server accepts (newer ones take 6000)


def _key(name: str) -> str:
    # MLflow accepts letters, digits, '_', '-', '.', ' ', ':' and '/' in names
    return re.sub(r"[^\w\-. :/]", "_", name)


def _value(v: Any) -> str:
    text = v if isinstance(v, str) else json.dumps(v, default=str)
    return text if len(text) <= _PARAM_CHARS else text[: _PARAM_CHARS - 3] + "..."


def _tail(lines: list[str]) -> str:
    """The last lines that fit in a tag (the oldest are dropped first)."""
    out: list[str] = []
    size = 0
    for line in reversed(lines):
        size += len(line) + 1
        if size > _TAG_CHARS - 40:
            out.append("(earlier notes left out)")
            break
        out.append(line)
    return "\n".join(reversed(out))


class MLflow(Tracker):
    """Log a run to MLflow: a parent run for the population, a nested run per member.

    The parent run (named after the store, e.g. ``digits``) holds the run's settings and space
    as params and, as its description, a line for every exploit, explore and rejuvenation. Each
    member's child run (``member-03``, nested under it) holds its initial config as params,
    every reported metric at its step, each hyperparameter as a metric ``hp/<name>`` at every
    report (a schedule is a step curve), the lineage notes as its description ("member-03
    copied member-05 at step 40; lr 0.01 -> 0.012") and tags ``hyperpop.exploits`` and
    ``hyperpop.parent`` (the last donor). A member's run ends FINISHED or FAILED with it; the
    parent ends FINISHED with the run, or KILLED when the session stops early (resumable).

    Pass an MLflow callback to :func:`hyperpop.resume` again to continue the same runs: they
    are found by the tag ``hyperpop.run``, and the parent's tag ``hyperpop.seq`` records how
    far the log is written there, so nothing is logged twice; in a fresh tracking store the
    run's whole history is logged first.

    Args:
        tracking_uri: where to log (``"sqlite:///mlflow.db"``, ``"http://host:5000"``, ...);
            None: MLflow's own default (``MLFLOW_TRACKING_URI``, else its local default).
        experiment: the MLflow experiment (created if missing).
        run_name: the parent run's name (default: the store's file name).
        tags: extra tags for the parent run.
        flush_secs: write what was logged at most this often (each write is a request per
            member that reported, and one for the parent); the session's end writes the rest.
            0: after every batch of events.

    Example:
        >>> hp.run(..., callbacks=[hp.callbacks.MLflow("sqlite:///mlflow.db")])  # doctest: +SKIP
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        *,
        experiment: str = "hyperpop",
        run_name: str | None = None,
        tags: dict[str, str] | None = None,
        flush_secs: float = 5.0,
    ):
        super().__init__()
        import_extra("mlflow", "mlflow", "hyperpop.callbacks.MLflow")
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self._client_class = MlflowClient
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.flush_secs = flush_secs
        self.parent_id: str | None = None
        #: member -> child run id
        self.run_ids: dict[int, str] = {}
        self._client: Any = None
        self._metrics: dict[int, list[Any]] = {}
        self._changed: set[int | None] = set()
        self._tags: dict[int, dict[str, str]] = {}
        #: members whose run changes status at the next write
        self._ended: dict[int, str] = {}
        self._seq = 0
        self._written = 0.0

    def __repr__(self) -> str:
        return f"MLflow({self.tracking_uri!r}, experiment={self.experiment!r})"

    def _open(self, pop: Population, info: RunInfo) -> int:
        client = self._client = self._client_class(self.tracking_uri)
        found = client.get_experiment_by_name(self.experiment)
        exp = found.experiment_id if found else client.create_experiment(self.experiment)
        self._experiment_id = exp
        self._metrics, self._changed, self._tags, self._ended = {}, set(), {}, {}
        self._written = time.monotonic()
        self.parent_id, self.run_ids = None, {}
        seq = 0
        token = None
        while True:
            page = client.search_runs(
                [exp], f"tags.`hyperpop.run` = '{info.key}'", max_results=1000, page_token=token
            )
            for run in page:
                tags = run.data.tags
                if "hyperpop.member" in tags:
                    self.run_ids[int(tags["hyperpop.member"])] = run.info.run_id
                elif self.parent_id is None:
                    self.parent_id = run.info.run_id
                    seq = int(tags.get("hyperpop.seq", 0))
            token = page.token
            if not token:
                break
        if self.parent_id is None:
            tags = {**self.tags, "hyperpop.run": info.key}
            if info.store is not None:
                tags["hyperpop.store"] = str(info.store)
            parent = client.create_run(exp, tags=tags, run_name=self.run_name or info.name)
            self.parent_id = parent.info.run_id
            params = {f"settings/{k}": v for k, v in flatten_config(pop.settings).items()}
            params.update({f"space/{k}": v for k, v in pop.space.items()})
            self._params(self.parent_id, params)
        else:
            client.update_run(self.parent_id, status="RUNNING")
            for m in pop.alive():
                if m.id in self.run_ids:
                    client.update_run(self.run_ids[m.id], status="RUNNING")
        return seq

    def _params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [self._Param(_key(k), _value(v)) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=items[i : i + _PARAMS_PER_BATCH])

    def _member(self, member: int, config: dict[str, Any], t: float) -> None:
        if member in self.run_ids:  # created before a crash cut the session short
            return
        info = self.info
        assert info is not None
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "hyperpop.run": info.key,
            "hyperpop.member": str(member),
        }
        run = self._client.create_run(
            self._experiment_id, int(t * 1000), tags=tags, run_name=info.member(member)
        )
        self.run_ids[member] = run.info.run_id
        self._params(run.info.run_id, config)

    def _report(self, member: int, step: int, values: dict[str, float], t: float) -> None:
        ms = int(t * 1000)
        self._metrics.setdefault(member, []).extend(
            self._Metric(_key(k), v, ms, step) for k, v in values.items()
        )

    def _note(self, member: int | None, step: int, text: str, t: float) -> None:
        self._changed |= {member, None}
        m = self._fold.members.get(member) if member is not None else None
        if m is not None:
            tags = self._tags.setdefault(m.id, {})
            tags["hyperpop.exploits"] = str(m.exploits)
            if m.parent is not None:
                tags["hyperpop.parent"] = str(m.parent)

    def _member_end(self, member: int, status: str) -> None:
        self._ended[member] = status  # after its metrics, at the next write

    def _flush_member(self, member: int) -> None:
        """Write a member's buffered metrics and, if its notes changed, its notes and tags:
        one request for both (more only past MLflow's limit of 1000 metrics a request)."""
        run = self.run_ids.get(member)
        metrics = self._metrics.pop(member, [])
        tags = self._member_tags(member)
        if run is None:
            return
        for i in range(0, max(len(metrics), 1), _BATCH):
            batch = metrics[i : i + _BATCH]
            if batch or tags:
                self._client.log_batch(run, metrics=batch, tags=tags if i == 0 else [])

    def _member_tags(self, who: int | None) -> list[Any]:
        if who not in self._changed:
            return []
        self._changed.discard(who)
        tags = dict(self._tags.pop(who, {})) if who is not None else {}
        tags["mlflow.note.content"] = _tail(self.notes.get(who, []))
        return [self._RunTag(k, v) for k, v in tags.items()]

    def _commit(self, seq: int) -> None:
        self._seq = seq
        if time.monotonic() - self._written >= self.flush_secs:
            self._write()

    def _write(self) -> None:
        """Write what is buffered, then the mark (the last event written)."""
        for member in {*self._metrics, *(w for w in self._changed if w is not None)}:
            self._flush_member(member)
        for member, status in self._ended.items():
            run = self.run_ids.get(member)
            if run is None:
                continue
            if status == "running":
                self._client.update_run(run, status="RUNNING")
            else:
                self._client.set_terminated(run, "FAILED" if status == "failed" else "FINISHED")
        self._ended = {}
        tags = [*self._member_tags(None), self._RunTag("hyperpop.seq", str(self._seq))]
        self._client.log_batch(self.parent_id, tags=tags)
        self._written = time.monotonic()

    def _close(self, pop: Population, reason: str) -> None:
        self._write()
        now = int(time.time() * 1000)
        for m in pop.alive():  # stopped early: the runs go on when the run is resumed
            if m.id in self.run_ids:
                self._client.set_terminated(self.run_ids[m.id], "KILLED", now)
        tags = {"hyperpop.end": reason}
        best = pop.best()
        if best is not None:
            tags["hyperpop.best_member"] = str(best.id)
        self._client.log_batch(self.parent_id, tags=[self._RunTag(k, v) for k, v in tags.items()])
        status = "FINISHED" if pop.finished else "KILLED"
        self._client.set_terminated(self.parent_id, status, now)
