"""PB2: Population Based Bandits (Parker-Holder et al. 2020, arXiv:2002.02518).

Where PBT's explore perturbs at random, PB2 fits a Gaussian process to what the population has
seen so far and picks the hyperparameters with the highest upper confidence bound on the
improvement they will bring over the next interval.

Each observation is one interval of training with constant hyperparameters, from ready point to
ready point, as the event log holds it (``Population.intervals``: every interval ever trained, those
of members that later copied another included, so a resumed run learns from exactly what the
uninterrupted one did): its inputs are the time ``t`` (the model's step when the interval began),
the score ``y0`` at that time and the hyperparameters ``x`` in the unit cube; its target is the
score change per step. The kernel is time-varying as in the paper: an exponential kernel on ``t``
(``(1-ε)^{|t-t'|/2}`` is ``exp(-|t-t'|/ℓ)``, with ``ℓ`` fitted) times a squared-exponential kernel
with one length scale per dimension of ``(y0, x)``, plus white noise. Members choosing in the same
synchronous round use batch UCB (GP-BUCB): each earlier pick of the round enters the model as a
hallucinated observation at its predicted mean, which shrinks the uncertainty there, so later
members pick elsewhere.

Differences from Ray's PB2: integers, ordered choices (one unit dimension each, snapped to legal
values) and unordered choices (one-hot) work; bounds are checked when the run starts, not deep
inside a fit (ray#14187); the GP sees at most ``max_history`` observations, the most recent ones,
so a decision costs the same at step 10 and step 10,000.

Cost: the GP is a small exact implementation on numpy and SciPy's LAPACK (its matrices are at most
``max_history`` wide). Conditioning on new data is one Cholesky factor; what costs is tuning the
kernel's hyperparameters (maximising the marginal likelihood with L-BFGS-B, from the default
kernel): at every fit while the observations fit in ``max_history``, then only on every ``refit``-th
new observation, on the data as it stood then; in between the GP conditions the last tuned kernel
on the newest data.
What is tuned on and what is conditioned on are functions of the set of observations alone (a
tuning is reused only for exactly the data it saw), so a resumed run fits the same GP.

Needs SciPy (``pip install 'hyperpop[pb2]'``), imported when PB2 is bound to a run.
"""

from __future__ import annotations

import bisect
import copy
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hyperpop.population import MemberState
from hyperpop.space import Choice, Float, Int, Space, SpaceError
from hyperpop.strategies.base import Context, ExploreStrategy
from hyperpop.strategies.gp import Likelihood, Posterior, one_blas_thread, require_scipy, tune

__all__ = ["PB2"]

#: the GP's parts under the names they had here
_Likelihood, _Posterior = Likelihood, Posterior


class _Encoder:
    """Configs to GP inputs: one unit dimension per number or ordered choice, one-hot for
    unordered choices; constants have none."""

    def __init__(self, space: Space, bounds: Mapping[str, tuple[float, float]]):
        self.space = space
        self.bounds = dict(bounds)
        self.params = [(p, space[p]) for p in space.searchable]
        self.dims = sum(
            len(v.options) if isinstance(v, Choice) and not v.ordered else 1 for _, v in self.params
        )

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        flat = self.space.flatten(config)
        out: list[float] = []
        for path, param in self.params:
            value = flat[path]
            if isinstance(param, Choice) and not param.ordered:
                out.extend(1.0 if o == value else 0.0 for o in param.options)
            else:
                out.append(param.to_unit(value))
        return np.asarray(out, dtype=float)

    def inside(self, config: Mapping[str, Any]) -> bool:
        flat = self.space.flatten(config)
        return all(lo <= flat[p] <= hi for p, (lo, hi) in self.bounds.items())

    def clip(self, config: Mapping[str, Any]) -> dict[str, Any]:
        flat = self.space.flatten(config)
        for p, (lo, hi) in self.bounds.items():
            v = min(max(flat[p], lo), hi)
            flat[p] = int(round(v)) if isinstance(self.space[p], Int) else float(v)
        return self.space.unflatten(flat)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """``n`` random legal configs inside the bounds, drawn as PBT's prior draws them (each
        number uniform on its scale, each choice uniform), as GP inputs (one row each) and
        the values of each parameter (:meth:`decode` builds row ``i``'s config)."""
        columns: list[np.ndarray] = []
        values: list[np.ndarray] = []
        for path, param in self.params:
            if isinstance(param, Choice):
                k = len(param.options)
                idx = rng.integers(k, size=n)
                values.append(idx)
                if param.ordered:
                    columns.append(((idx + 0.5) / k)[:, None])
                else:
                    columns.append(np.eye(k)[idx])
                continue
            assert isinstance(param, (Float, Int))
            lo, hi = self.bounds.get(path, (param.low, param.high))
            a, b = param.to_unit(lo), param.to_unit(hi)
            u = a + (b - a) * rng.random(n)
            if isinstance(param, Int):
                low, high = math.ceil(lo), math.floor(hi)
                ints = np.array([min(max(param.from_unit(v), low), high) for v in u], dtype=int)
                values.append(ints)
                columns.append(np.array([param.to_unit(int(v)) for v in ints])[:, None])
            else:
                values.append(u)
                columns.append(u[:, None])
        return np.hstack(columns), values

    def decode(self, base: Mapping[str, Any], values: list[np.ndarray], i: int) -> dict[str, Any]:
        """Row ``i`` of :meth:`sample`'s values as a config (constants from ``base``)."""
        flat = self.space.flatten(base)
        for (path, param), vals in zip(self.params, values):
            if isinstance(param, Choice):
                flat[path] = param.options[int(vals[i])]
            elif isinstance(param, Int):
                flat[path] = int(vals[i])
            else:
                assert isinstance(param, Float)
                lo, hi = self.bounds.get(path, (param.low, param.high))
                flat[path] = float(min(max(param.from_unit(float(vals[i])), lo), hi))
        return self.space.unflatten(flat)


#: one observation: (interval key, t, y0, x, dy)
_Obs = tuple[tuple[int, int, int, int], int, float, np.ndarray, float]

#: L-BFGS-B iterations of one tuning at most
_ITERATIONS = 25


class PB2(ExploreStrategy):
    """Population Based Bandits: choose hyperparameters by a GP's upper confidence bound.

    Pair it with an exploit strategy as usual (``exploit="truncation", explore="pb2"``): the
    copied member gets the config that maximises ``mean + kappa * std`` of the predicted score
    change per step, given the donor's step and score.

    Args:
        bounds: optional narrower search ranges ``{"lr": (1e-4, 1e-2)}`` for numeric
            parameters, inside the space's own bounds (default: the whole space).
        kappa: weight of the uncertainty in the upper confidence bound.
        max_history: the GP is fitted on at most this many observations, the most recent.
        candidates: random configs scored per decision (plus perturbations of the donor's).
        min_data: below this many observations PB2 perturbs like PBT.
        refit: once there are more than ``max_history`` observations, tune the kernel's
            hyperparameters on every ``refit``-th new one only, on the data as it stood then;
            in between the tuned kernel is conditioned on the newest data (before, every fit
            tunes). 1: tune at every fit. The tune points depend on the data alone, so a
            resumed run fits the same GP.
        seed: kept for the settings of earlier runs (the tuning starts from the default kernel
            and has no random restarts; the candidates use the controller's rng).
    """

    name = "pb2"

    def __init__(
        self,
        bounds: Mapping[str, Sequence[float]] | None = None,
        *,
        kappa: float = 1.5,
        max_history: int = 200,
        candidates: int = 256,
        min_data: int = 8,
        refit: int = 20,
        seed: int = 0,
    ):
        self.bounds: dict[str, tuple[float, float]] = {}
        for path, b in (bounds or {}).items():
            try:
                lo, hi = (float(v) for v in b)
            except (TypeError, ValueError):
                raise ValueError(
                    f"PB2 bounds for {path!r} must be a pair (low, high) of numbers, got {b!r}"
                ) from None
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError(f"PB2 bounds for {path!r} must be finite, got {b!r}")
            if lo >= hi:
                raise ValueError(
                    f"PB2 bounds for {path!r} are reversed or empty: low={lo:g} >= high={hi:g}; "
                    f"write them as ({min(lo, hi):g}, {max(lo, hi):g})"
                )
            self.bounds[path] = (lo, hi)
        if not kappa >= 0:
            raise ValueError(f"PB2 kappa must be >= 0, got {kappa!r}")
        if not isinstance(max_history, int) or max_history < 4:
            raise ValueError(f"PB2 max_history must be an int >= 4, got {max_history!r}")
        if not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"PB2 candidates must be a positive int, got {candidates!r}")
        if not isinstance(min_data, int) or min_data < 2:
            raise ValueError(f"PB2 min_data must be an int >= 2, got {min_data!r}")
        self.kappa, self.max_history = float(kappa), max_history
        if not isinstance(refit, int) or refit < 1:
            raise ValueError(f"PB2 refit must be a positive int, got {refit!r}")
        self.n_candidates, self.min_data, self.seed = candidates, min_data, seed
        self.refit = refit
        #: seconds each decision took (the newest 10,000)
        self.decision_seconds: deque[float] = deque(maxlen=10_000)
        #: how many GP fits were made (a round whose data did not change reuses the fit)
        self.fits = 0
        #: how many of them also tuned the kernel's hyperparameters
        self.tunes = 0
        self._space: Space | None = None
        self._encoder: _Encoder | None = None
        #: one entry per interval of the population's log (None: not an observation)
        self._obs: list[_Obs | None] = []
        #: the observations' (t, key, index in _obs), in (t, key) order
        self._order: list[tuple[int, tuple[int, int, int, int], int]] = []
        self._fit_key: Any = None
        self._gp: Posterior | None = None
        #: the last tuning: the keys of its data, its hyperparameters in the data's own units
        self._tuned: tuple[Any, np.ndarray] | None = None
        self._norm: tuple[float, float, float] = (1.0, 0.0, 1.0)

    @property
    def observations(self) -> int:
        """How many observations PB2 has learnt from so far (intervals with a known start and
        end score)."""
        return len(self._order)

    @property
    def _valid(self) -> int:
        return len(self._order)

    # --- setup ---------------------------------------------------------------------------
    def bind(self, space: Space) -> None:
        """Check the bounds against the space (called when the run starts)."""
        for path, (lo, hi) in self.bounds.items():
            if path not in space.parameters:
                raise SpaceError(
                    f"PB2 bounds name {path!r}, which is not a parameter of the space "
                    f"({', '.join(space.searchable)})"
                )
            param = space[path]
            if not isinstance(param, (Float, Int)):
                raise SpaceError(
                    f"PB2 bounds for {path!r}: only numeric parameters take bounds; "
                    f"{path!r} is a {type(param).__name__}"
                )
            if lo < param.low or hi > param.high:
                raise SpaceError(
                    f"PB2 bounds for {path!r} ({lo:g}, {hi:g}) reach outside the space's "
                    f"({param.low:g}, {param.high:g}); narrow them or widen the space"
                )
            if isinstance(param, Int) and math.floor(hi) < math.ceil(lo):
                raise SpaceError(f"PB2 bounds for {path!r} ({lo:g}, {hi:g}) hold no integer")
        if space.searchable == []:
            raise SpaceError("PB2 needs at least one searchable parameter in the space")
        self._space = space
        self._encoder = _Encoder(space, self.bounds)
        require_scipy()  # fail at the start of a run, not at the first decision

    # --- data ----------------------------------------------------------------------------
    def _collect(self, ctx: Context) -> None:
        """Turn the intervals the log holds into observations ``(key, t, y0, x, dy)``: every
        interval ever trained, those before a member copied another included, so a resumed
        run learns from exactly what the uninterrupted one did."""
        assert self._encoder is not None
        intervals = ctx.population.intervals
        if len(intervals) < len(self._obs):  # another population: start over
            self._obs, self._order, self._tuned, self._fit_key = [], [], None, None
        for iv in intervals[len(self._obs) :]:
            obs = None
            if iv.score_start is not None and iv.score_end is not None and iv.end > iv.start:
                y0, y1 = ctx.oriented(iv.score_start), ctx.oriented(iv.score_end)
                if math.isfinite(y0) and math.isfinite(y1):
                    x = self._encoder.encode(iv.config)
                    obs = (iv.key, iv.start, y0, x, (y1 - y0) / (iv.end - iv.start))
                    bisect.insort(self._order, (iv.start, iv.key, len(self._obs)))
            self._obs.append(obs)

    def _items(self, valid: int) -> list[_Obs]:
        """The newest ``max_history`` of the first ``valid`` observations in (t, key) order:
        a function of the set of observations, not of the order intervals happened to finish
        in (so a resumed or repeated synchronous run fits the same data); its cost does not
        grow with the run."""
        window = self._order[max(0, valid - self.max_history) : valid]
        return [self._obs[i] for _, _, i in window]  # type: ignore[misc]

    def _tune_point(self, valid: int) -> int:
        """How many observations the kernel is tuned on: all of them at every fit until they
        fill the history (``max_history``: while the data is small, each new observation is a
        large part of it, and a tuning is cheap), then those up to the last multiple of
        ``refit`` new observations since (a function of the data alone, so a resumed run tunes
        on the same data)."""
        if valid <= self.max_history:
            return valid
        return self.max_history + self.refit * ((valid - self.max_history) // self.refit)

    @staticmethod
    def _arrays(items: list[_Obs]) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
        """GP inputs, targets and the units of the inputs (time and start-score scales)."""
        t = np.array([o[1] for o in items], dtype=float)
        y0 = np.array([o[2] for o in items], dtype=float)
        t_scale = max(float(t.max()), 1.0)
        y_lo = float(y0.min())
        norm = (t_scale, y_lo, max(float(y0.max()) - y_lo, 1e-12))
        x = np.column_stack([t / norm[0], (y0 - y_lo) / norm[2], np.stack([o[3] for o in items])])
        return x, np.array([o[4] for o in items], dtype=float), norm

    def _fit(self, ctx: Context) -> bool:
        """Condition the GP on the newest observations, tuning its kernel first where the
        tuning data (:meth:`_tune_point`) changed. Both depend on the observations alone."""
        valid = self._valid
        items = self._items(valid)
        if len(items) < self.min_data:
            return False
        fit_key = tuple(o[0] for o in items)
        point = self._tune_point(valid)
        tune_items = items if point == valid else self._items(point)
        tune_key = fit_key if point == valid else tuple(o[0] for o in tune_items)
        if (fit_key, tune_key) == self._fit_key:  # the same data to tune on and condition on
            return True
        x, dy, norm = self._arrays(items)
        if self._tuned is None or self._tuned[0] != tune_key:
            tx, tdy, tnorm = (x, dy, norm) if tune_items is items else self._arrays(tune_items)
            std = float(np.std(tdy))
            theta = tune(tx, (tdy - np.mean(tdy)) / (std if std > 0 else 1.0), _ITERATIONS)
            # in the data's own units, so that later fits on other data can use them
            self._tuned = (tune_key, theta + self._unit_shift(tnorm))
            self.tunes += 1
        self._norm = norm
        self._gp = Posterior(self._tuned[1] - self._unit_shift(norm), x, dy)
        self._fit_key = (fit_key, tune_key)
        self.fits += 1
        return True

    def _unit_shift(self, norm: tuple[float, float, float]) -> np.ndarray:
        """What the log length scales of time and start score gain when the inputs go from
        ``norm``'s units back to steps and scores."""
        assert self._encoder is not None
        shift = np.zeros(4 + self._encoder.dims)
        shift[1], shift[2] = math.log(norm[0]), math.log(norm[2])
        return shift

    def _inputs(self, t: np.ndarray, y0: np.ndarray, x: np.ndarray) -> np.ndarray:
        t_scale, y_lo, y_range = self._norm
        return np.column_stack([t / t_scale, (y0 - y_lo) / y_range, x])

    # --- the decision --------------------------------------------------------------------
    def explore(
        self, config: dict[str, Any], member: MemberState, donor: MemberState, ctx: Context
    ) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return self._explore(config, donor, ctx)
        finally:
            self.decision_seconds.append(time.perf_counter() - start)

    def _explore(self, config: dict[str, Any], donor: MemberState, ctx: Context) -> dict[str, Any]:
        if self._encoder is None or self._space is not ctx.space:
            self.bind(ctx.space)
        enc = self._encoder
        assert enc is not None
        self._collect(ctx)
        with one_blas_thread():
            if not self._fit(ctx):
                return enc.clip(ctx.space.perturb(config, ctx.rng))
            gp = self._gp
            assert gp is not None
            # candidates: random legal configs, perturbations of the donor's, the donor's own
            sampled, values = enc.sample(ctx.rng, self.n_candidates)
            others = [ctx.space.perturb(config, ctx.rng) for _ in range(self.n_candidates // 4)]
            others = [c for c in others + [config] if enc.inside(c)]
            xc = np.vstack([sampled] + [enc.encode(c)[None, :] for c in others])
            t0 = float(donor.checkpoint_step)
            y0 = ctx.oriented(donor.ready_score) if donor.ready_score is not None else -math.inf
            if not math.isfinite(y0):
                y0 = self._norm[1]
            n = len(xc)
            q = self._inputs(np.full(n, t0), np.full(n, y0), xc)
            pending = [enc.encode(c) for c in ctx.batch if enc.inside(c)]
            qp = None
            if pending:
                k = len(pending)
                qp = self._inputs(np.full(k, t0), np.full(k, y0), np.stack(pending))
            mean, std = gp.predict(q, qp)
            best = int(np.argmax(mean + self.kappa * std))
        if best < len(sampled):
            return enc.decode(config, values, best)
        return copy.deepcopy(others[best - len(sampled)])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "bounds": {p: list(b) for p, b in self.bounds.items()},
            "kappa": self.kappa,
            "max_history": self.max_history,
            "candidates": self.n_candidates,
            "min_data": self.min_data,
            "refit": self.refit,
            "seed": self.seed,
        }
