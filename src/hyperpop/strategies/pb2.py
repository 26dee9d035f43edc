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

Needs scikit-learn (``pip install 'hyperpop[pb2]'``), imported only when PB2 first fits.
"""

from __future__ import annotations

import math
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hyperpop.population import MemberState
from hyperpop.space import Choice, Float, Int, Space, SpaceError
from hyperpop.strategies.base import Context, ExploreStrategy

__all__ = ["PB2"]


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

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        flat = self.space.flatten(self.space.sample(rng))
        for p, (lo, hi) in self.bounds.items():
            param = self.space[p]
            a, b = param.to_unit(lo), param.to_unit(hi)
            flat[p] = param.from_unit(a + (b - a) * float(rng.random()))
            if isinstance(param, Int):
                flat[p] = int(min(max(flat[p], math.ceil(lo)), math.floor(hi)))
            else:
                flat[p] = float(min(max(flat[p], lo), hi))
        return self.space.unflatten(flat)


_KERNEL_CLS: Any = None


def _sklearn() -> Any:
    try:
        from sklearn.gaussian_process import GaussianProcessRegressor, kernels
    except ImportError:
        raise ImportError(
            "the pb2 explore strategy needs scikit-learn: pip install 'hyperpop[pb2]'"
        ) from None
    global _KERNEL_CLS
    if _KERNEL_CLS is None:

        class Dims(kernels.Kernel):
            """Applies ``kernel`` to the columns ``dims`` of the inputs only."""

            def __init__(self, kernel: Any, dims: tuple[int, ...]):
                self.kernel = kernel
                self.dims = tuple(dims)

            def get_params(self, deep: bool = True) -> dict[str, Any]:
                params = {"kernel": self.kernel, "dims": self.dims}
                if deep:
                    params.update(("kernel__" + k, v) for k, v in self.kernel.get_params().items())
                return params

            @property
            def hyperparameters(self) -> list[Any]:
                return [
                    kernels.Hyperparameter(
                        "kernel__" + h.name, h.value_type, h.bounds, h.n_elements, h.fixed
                    )
                    for h in self.kernel.hyperparameters
                ]

            @property
            def theta(self) -> np.ndarray:
                return self.kernel.theta

            @theta.setter
            def theta(self, theta: np.ndarray) -> None:
                self.kernel.theta = theta

            @property
            def bounds(self) -> np.ndarray:
                return self.kernel.bounds

            def __eq__(self, other: object) -> bool:
                return (
                    type(self) is type(other)
                    and self.dims == other.dims
                    and self.kernel == other.kernel
                )

            def __call__(self, X: Any, Y: Any = None, eval_gradient: bool = False) -> Any:
                cols = list(self.dims)
                X = np.asarray(X)[:, cols]
                if Y is not None:
                    Y = np.asarray(Y)[:, cols]
                return self.kernel(X, Y, eval_gradient=eval_gradient)

            def diag(self, X: Any) -> np.ndarray:
                return self.kernel.diag(np.asarray(X)[:, list(self.dims)])

            def is_stationary(self) -> bool:
                return self.kernel.is_stationary()

            def __repr__(self) -> str:
                return f"{self.kernel!r}[dims={list(self.dims)}]"

        _KERNEL_CLS = Dims
    return GaussianProcessRegressor, kernels, _KERNEL_CLS


def _lbfgs(obj_func: Any, initial_theta: np.ndarray, bounds: np.ndarray) -> tuple[Any, float]:
    """sklearn's default optimiser with a cap on iterations (a decision must stay cheap)."""
    from scipy.optimize import minimize

    res = minimize(
        obj_func,
        initial_theta,
        method="L-BFGS-B",
        jac=True,
        bounds=bounds,
        options={"maxiter": 25},
    )
    return res.x, float(res.fun)


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
        refit: tune the kernel's hyperparameters on every ``refit``-th new observation (and
            whenever the data grew by half), on the data as it stood then; in between only the
            data is updated. 1 (default): on all the data at every fit. The tune points depend
            on the data alone, so a resumed run fits the same GP.
        seed: seed of the GP's optimiser restarts (the candidates use the controller's rng).
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
        refit: int = 1,
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
        #: how many of them also fitted the kernel's hyperparameters
        self.tunes = 0
        self._space: Space | None = None
        self._encoder: _Encoder | None = None
        #: one entry per interval of the population's log (None: not an observation)
        self._obs: list[tuple[tuple[int, int, int, int], int, float, np.ndarray, float] | None]
        self._obs = []
        self._valid = 0
        self._fit_key: Any = None
        self._gp: Any = None
        self._tuned: tuple[int, Any] | None = None  # (tune point, fitted kernel)
        self._norm: tuple[float, float, float] = (1.0, 0.0, 1.0)

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
        _sklearn()  # fail at the start of a run, not at the first decision

    # --- data ----------------------------------------------------------------------------
    def _collect(self, ctx: Context) -> None:
        """Turn the intervals the log holds into observations ``(key, t, y0, x, dy)``: every
        interval ever trained, those before a member copied another included, so a resumed
        run learns from exactly what the uninterrupted one did."""
        assert self._encoder is not None
        intervals = ctx.population.intervals
        if len(intervals) < len(self._obs):  # another population: start over
            self._obs, self._valid, self._tuned, self._fit_key = [], 0, None, None
        for iv in intervals[len(self._obs) :]:
            obs = None
            if iv.score_start is not None and iv.score_end is not None and iv.end > iv.start:
                y0, y1 = ctx.oriented(iv.score_start), ctx.oriented(iv.score_end)
                if math.isfinite(y0) and math.isfinite(y1):
                    x = self._encoder.encode(iv.config)
                    obs = (iv.key, iv.start, y0, x, (y1 - y0) / (iv.end - iv.start))
                    self._valid += 1
            self._obs.append(obs)

    def _items(self, valid: int) -> list[tuple[tuple[int, int, int, int], int, float, Any, float]]:
        """The newest ``max_history`` of the first ``valid`` observations in (t, key) order:
        a function of the set of observations, not of the order intervals happened to finish
        in (so a resumed or repeated synchronous run fits the same data)."""
        items = sorted((o for o in self._obs if o is not None), key=lambda o: (o[1], o[0]))
        return items[:valid][-self.max_history :]

    def _tune_point(self, valid: int) -> int:
        """Observations the kernel was last tuned on: tuning happens when the data has grown
        by half, and at least every ``refit`` observations (a function of the data alone, so
        resume tunes on the same data)."""
        point = self.min_data
        while True:
            nxt = max(point + 1, min(math.ceil(1.5 * point), point + self.refit))
            if nxt > valid:
                return point
            point = nxt

    def _fit(self, ctx: Context) -> bool:
        items = self._items(self._valid)
        if len(items) < self.min_data:
            return False
        fit_key = tuple(o[0] for o in items)
        if fit_key == self._fit_key:
            return True
        gpr_cls, _, _ = _sklearn()
        point = self._tune_point(self._valid)
        t_max = max(max(float(o[1]) for o in items), 1.0)
        y = [o[2] for o in items]
        self._norm = (t_max, min(y), max(max(y) - min(y), 1e-12))
        if self._tuned is None or self._tuned[0] != point:
            # fitting the kernel's hyperparameters is the expensive part: from the default
            # kernel, on the data as it stood at the tune point
            tuned = self._gp_fit(self._items(point), self._default_kernel(items), tune=True)
            self._tuned = (point, tuned.kernel_)
            self.tunes += 1
        self._gp = self._gp_fit(items, self._tuned[1], tune=False)
        self._fit_key = fit_key
        self.fits += 1
        return True

    def _default_kernel(self, items: list[Any]) -> Any:
        _, kernels, dims_cls = _sklearn()
        d = 2 + len(items[0][3])
        return kernels.ConstantKernel(1.0, (1e-3, 1e3)) * dims_cls(
            kernels.Matern(length_scale=1.0, length_scale_bounds=(1e-2, 1e3), nu=0.5), (0,)
        ) * dims_cls(
            kernels.RBF(length_scale=np.ones(d - 1), length_scale_bounds=(1e-2, 1e2)),
            tuple(range(1, d)),
        ) + kernels.WhiteKernel(1e-2, (1e-5, 1e1))

    def _gp_fit(self, items: list[Any], kernel: Any, *, tune: bool) -> Any:
        gpr_cls, _, _ = _sklearn()
        t = np.array([o[1] for o in items], dtype=float)
        y0 = np.array([o[2] for o in items], dtype=float)
        x = np.stack([o[3] for o in items])
        dy = np.array([o[4] for o in items], dtype=float)
        gp = gpr_cls(
            kernel=kernel,
            normalize_y=True,
            random_state=self.seed,
            optimizer=_lbfgs if tune else None,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gp.fit(self._inputs(t, y0, x), dy)
        return gp

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
        if not self._fit(ctx):
            return enc.clip(ctx.space.perturb(config, ctx.rng))
        gp = self._gp
        configs = [enc.sample(ctx.rng) for _ in range(self.n_candidates)]
        configs += [ctx.space.perturb(config, ctx.rng) for _ in range(self.n_candidates // 4)]
        configs.append(config)
        configs = [c for c in configs if enc.inside(c)] or [enc.clip(config)]
        t0 = float(donor.checkpoint_step)
        y0 = ctx.oriented(donor.ready_score) if donor.ready_score is not None else -math.inf
        if not math.isfinite(y0):
            y0 = self._norm[1]
        xc = np.stack([enc.encode(c) for c in configs])
        n = len(configs)
        q = self._inputs(np.full(n, t0), np.full(n, y0), xc)
        mean, std = gp.predict(q, return_std=True)
        pending = [c for c in ctx.batch if enc.inside(c)]
        if pending:
            std = self._batch_std(q, pending, t0, y0)
        ucb = mean + self.kappa * std
        return configs[int(np.argmax(ucb))]

    def _batch_std(
        self, q: np.ndarray, pending: list[dict[str, Any]], t0: float, y0: float
    ) -> np.ndarray:
        """GP-BUCB: the posterior std once the round's earlier picks are hallucinated in."""
        assert self._encoder is not None
        gp = self._gp
        xp = np.stack([self._encoder.encode(c) for c in pending])
        qp = self._inputs(np.full(len(pending), t0), np.full(len(pending), y0), xp)
        X = np.vstack([gp.X_train_, qp])
        K = gp.kernel_(X)
        K[np.diag_indices_from(K)] += gp.alpha
        L = np.linalg.cholesky(K)
        Ks = gp.kernel_(q, X)
        v = np.linalg.solve(L, Ks.T)
        var = gp.kernel_.diag(q) - np.einsum("ij,ij->j", v, v)
        return np.sqrt(np.maximum(var, 0.0)) * float(np.atleast_1d(gp._y_train_std)[0])

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
