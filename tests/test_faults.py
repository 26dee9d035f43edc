"""Fault injection: kill a real run at random moments, resume it, and check after every round
that nothing was lost or recorded twice and that the store and the checkpoints agree.

Each test is one seeded campaign on a fresh run (:mod:`fault_job`): every round waits (by
polling the store, never by sleeping) until a random number of new reports is recorded, then
strikes — SIGKILL or SIGINT to the driver, ``hyperpop stop``, or SIGKILL to one of its workers —
and checks the invariants; a killed driver is resumed by the next round. A failure prints the
seed and the rounds so far: ``HYPERPOP_FAULT_SEEDS=<seed>`` replays the same campaign.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from in_process import hyperpop_in_process

import hyperpop as hp
from hyperpop.checkpoints import checkpoint_dir_for
from hyperpop.store.sqlite import SQLiteStore

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

HERE = Path(__file__).resolve().parent
STEPS = 36
ROUNDS = int(os.environ.get("HYPERPOP_FAULT_ROUNDS", "8"))
SEEDS = [int(s) for s in os.environ.get("HYPERPOP_FAULT_SEEDS", "1,2,3,4").split(",")]
STRIKES = ["sigkill", "sigkill", "sigint", "stop", "worker", "worker"]


class Campaign:
    """One seeded sequence of runs, strikes and resumes over one store."""

    def __init__(self, tmp: Path, seed: int):
        self.db = tmp / "run.db"
        self.seed = seed
        self.rng = random.Random(seed)
        self.env = dict(os.environ)
        self.env.update(
            PYTHONPATH=os.pathsep.join([str(HERE), self.env.get("PYTHONPATH", "")]),
            FAULT_SYNC=str(seed % 2),
            # synchronous: 3 workers for 4 members leave workers idle at every barrier, where
            # a worker strike finds them
            FAULT_WORKERS=str(2 + seed % 2),
            FAULT_SEED=str(seed),
            FAULT_STEPS=str(STEPS),
        )
        self.proc: subprocess.Popen | None = None
        self.err = ""
        self.log: list[str] = []
        self.seen: dict[int, tuple] = {}  # every event ever read, by seq: none may change
        self._read, self._reports = 0, 0  # the last seq :meth:`reports` read; reports up to it

    # --- processes -------------------------------------------------------------------------
    def start(self) -> None:
        cli = [sys.executable, "-m", "hyperpop"]
        if self.db.exists():
            cmd = cli + ["resume", str(self.db), "-q"]
        else:
            cmd = cli + ["run", str(HERE / "fault_job.py"), "-q", "--storage", str(self.db)]
        self.proc = subprocess.Popen(
            cmd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def events(self):
        try:
            store = SQLiteStore(self.db)
        except Exception:  # noqa: BLE001 - not created yet
            return []
        try:
            return store.read()
        finally:
            store.close()

    def reports(self) -> int:
        """Reports in the store (read incrementally: the log only grows, and this is polled)."""
        try:
            store = SQLiteStore(self.db)
        except Exception:  # noqa: BLE001 - not created yet
            return self._reports
        try:
            fresh = store.read(self._read)
        finally:
            store.close()
        if fresh:
            self._read = fresh[-1].seq
            self._reports += sum(1 for e in fresh if e.kind == "reported")
        return self._reports

    def wait(self, cond, what: str, timeout: float = 90) -> bool:
        """Poll until ``cond()`` holds (True) or the driver exits (False)."""
        deadline = time.time() + timeout
        while not cond():
            if self.proc.poll() is not None:
                return False
            assert time.time() < deadline, self.failure(f"no {what} after {timeout}s")
            time.sleep(0.01)
        return True

    def wait_reports(self, n: int) -> bool:
        """Wait until the store holds ``n`` reports (True) or the driver exits (False)."""
        return self.wait(lambda: self.reports() >= n, f"{n} reports")

    def writing(self) -> bool:
        try:
            store = SQLiteStore(self.db)
        except Exception:  # noqa: BLE001 - not created yet
            return False
        try:
            return store.writer_alive()
        finally:
            store.close()

    def workers(self) -> list[int]:
        """Worker processes of the driver (its children that run hyperpop's worker)."""
        out = []
        children: set[int] = set()  # the kernel's list of each of the driver's threads' children
        lists = list(Path(f"/proc/{self.proc.pid}/task").glob("*/children"))
        for listed in lists:
            try:
                children.update(int(pid) for pid in listed.read_text().split())
            except OSError:
                continue
        if not lists:  # a kernel without those lists: every process (its parent is checked)
            children = {int(p.name) for p in Path("/proc").glob("[0-9]*")}
        for pid in children:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            worker = b"hyperpop.backends._worker" in cmd or b"spawn_main" in cmd
            if int(fields[1]) == self.proc.pid and fields[0] != "Z" and worker:
                out.append(pid)
        return sorted(out)

    def end(self, timeout: float = 60) -> int:
        """Wait for the driver to exit; its exit code (a traceback other than Ctrl-C's fails)."""
        code = self.proc.wait(timeout=timeout)
        self.err = self.proc.stderr.read()
        self.proc.stderr.close()
        if code in (0, -signal.SIGKILL) or "Traceback" not in self.err:
            return code  # after SIGKILL, stderr holds only what half-started workers said
        if "KeyboardInterrupt" in self.err:
            return code
        raise AssertionError(self.failure(f"the driver crashed (exit {code}):\n{self.err}"))

    def failure(self, what: str) -> str:
        return f"seed {self.seed}, rounds {self.log}: {what}"

    # --- invariants ------------------------------------------------------------------------
    def check(self, final: bool = False) -> None:
        """What must hold whenever no driver is writing (and ``final``: after the run ended)."""
        events = self.events()
        for e in events:  # no event ever recorded is lost or changed
            key = (e.kind, e.member, json.dumps(e.data, sort_keys=True, default=str))
            assert self.seen.setdefault(e.seq, key) == key, self.failure(f"event {e.seq} changed")
        assert len(events) >= len(self.seen), self.failure("events were lost")
        state: dict[int, tuple[int, float]] = {}  # member -> (step, x) its model holds
        config: dict[int, dict] = {}
        blobs: dict[str, tuple[tuple[int, float], dict]] = {}
        for e in events:
            m, d = e.member, e.data
            where = self.failure(f"event {e.seq} ({e.kind}, member {m})")
            if e.kind == "member_created":
                state[m], config[m] = (0, 0.0), d["config"]
            elif e.kind == "reported":
                # a member's reports continue its own recorded history, one step at a time: no
                # (member, step) twice along it, none skipped, the model's own counter agrees
                step, x = state[m]
                metrics = d["metrics"]
                assert d["step"] == step + 1 == metrics["n"], where
                assert metrics["lr_used"] == config[m]["lr"], where
                assert math.isclose(metrics["x"], x + metrics["lr_used"], rel_tol=1e-9), where
                state[m] = (d["step"], metrics["x"])
            elif e.kind == "checkpointed":
                assert d["step"] == state[m][0], where
                blobs[d["checkpoint"]] = (state[m], dict(config[m]))
            elif e.kind == "exploited":
                state[m], config[m] = blobs[d["checkpoint"]][0], dict(blobs[d["checkpoint"]][1])
                assert d["step"] == state[m][0], where
            elif e.kind == "explored":
                config[m] = d["config"]
            assert e.kind != "rejuvenated", where
        result = hp.load(self.db)
        live = result.population.live_checkpoints()
        root = checkpoint_dir_for(self.db)
        on_disk = {p.name[: -len(".ckpt")] for p in root.glob("*.ckpt")}
        assert live <= on_disk, self.failure(
            f"checkpoints the log names are gone: {live - on_disk}"
        )
        if final:
            assert on_disk == live, self.failure(f"checkpoints nothing names: {on_disk - live}")
            assert not list(root.glob(".*.tmp")), self.failure("half-written checkpoints left")
            assert result.summary()["status"] == "finished", self.failure("not finished")
            for m in result.members:
                assert m.status == "finished" and m.step == STEPS, self.failure(f"member {m}")

    # --- one campaign ----------------------------------------------------------------------
    def play(self) -> dict[str, int]:
        tally: dict[str, int] = {}
        self.start()
        target = 0
        for _ in range(ROUNDS):
            # the same seed strikes the same way at the same report counts
            target += self.rng.randint(1, 24)
            strike = self.rng.choice(STRIKES)
            if not self.wait_reports(target):
                break  # the run finished first
            if strike == "worker":
                # a driver resumed past the target may not have started its workers yet
                if not self.wait(lambda: len(self.workers()) > 0, "worker process"):
                    break
                pids = self.workers()
                os.kill(pids[self.rng.randrange(len(pids))], signal.SIGKILL)
            elif strike == "stop":
                if not self.wait(self.writing, "driver holding the lease"):
                    break
                # `hyperpop stop` in this process: a request through the store, as from any other
                out = hyperpop_in_process("stop", self.db)
                if out.returncode != 0 and self.proc.poll() is None:
                    if "the run has finished" in out.stderr:
                        break  # the run finished as the stop was sent; its driver is exiting
                    raise AssertionError(self.failure(f"stop failed: {out.stderr}"))
            else:
                sig = signal.SIGKILL if strike == "sigkill" else signal.SIGINT
                self.proc.send_signal(sig)
            self.log.append(f"{strike}@{target}")
            tally[strike] = tally.get(strike, 0) + 1
            if strike != "worker":
                self.end()
                self.check()
                self.start()
        # the last driver was struck by nothing but worker kills: it must finish the run
        code = self.end(timeout=120)
        assert code == 0, self.failure(f"the driver exited with {code}:\n{self.err}")
        self.check(final=True)
        return tally


@pytest.mark.parametrize("seed", SEEDS)
def test_random_kills_and_resumes_lose_nothing(tmp_path, seed):
    campaign = Campaign(tmp_path, seed)
    tally = campaign.play()
    print(f"seed {seed} ({'sync' if seed % 2 else 'async'}): {campaign.log} -> held {tally}")
    assert sum(tally.values()) >= 3, campaign.failure("too few strikes landed")
