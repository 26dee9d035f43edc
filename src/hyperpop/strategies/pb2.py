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
import contextlib
import copy
import importlib
import math
import time
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

_SCIPY: Any = None


def _scipy() -> Any:
    """SciPy's LAPACK, triangular solve and L-BFGS-B, imported when PB2 is first bound."""
    global _SCIPY
    if _SCIPY is None:
        try:
            from scipy.linalg import lapack, solve_triangular
            from scipy.optimize import minimize
        except ImportError:
            raise ImportError(
                "the pb2 explore strategy needs SciPy: pip install 'hyperpop[pb2]'"
            ) from None
        _SCIPY = (lapack, solve_triangular, minimize)
    return _SCIPY


_BLAS: Any = None


def _one_blas_thread() -> Any:
    """A context in which BLAS runs on one thread: the GP's matrices are at most a few hundred
    wide, where a second thread saves little on a quiet machine and can take ten times as long
    on a loaded one (threads waiting for a core another process holds). Needs threadpoolctl
    (in the pb2 extra); without it, BLAS keeps its own setting."""
    global _BLAS
    if _BLAS is None:
        try:
            _BLAS = importlib.import_module("threadpoolctl").ThreadpoolController()
        except Exception:  # noqa: BLE001 - absent or unable to inspect: leave BLAS alone
            _BLAS = False
    if _BLAS is False:
        return contextlib.nullcontext()
    return _BLAS.limit(limits=1, user_api="blas")


#: kernel hyperparameters, in this order, as logs: signal variance, time length scale, one
#: length scale per dimension of (y0, x), noise; bounds and starting values of the tuning
_BOUNDS_SIGNAL, _BOUNDS_TIME, _BOUNDS_DIM = (1e-3, 1e3), (1e-2, 1e3), (1e-2, 1e2)
_BOUNDS_NOISE = (1e-5, 1e1)
_JITTER = 1e-10  # added to the diagonal, as scikit-learn's GaussianProcessRegressor does


def _start(dims: int) -> np.ndarray:
    """The default kernel every tuning starts from: unit signal and length scales, noise 0.01."""
    return np.log(np.r_[1.0, 1.0, np.ones(dims), 1e-2])


def _bounds(dims: int) -> list[tuple[float, float]]:
    pairs = [_BOUNDS_SIGNAL, _BOUNDS_TIME] + [_BOUNDS_DIM] * dims + [_BOUNDS_NOISE]
    return [(math.log(lo), math.log(hi)) for lo, hi in pairs]


def _cov(theta: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The kernel without its noise: ``s * exp(-|t-t'|/l_t) * exp(-|z-z'|^2/2)`` with ``z`` the
    inputs ``(y0, x)`` over their length scales; column 0 of ``a`` and ``b`` is the time."""
    ls = np.exp(theta[2:-1])
    za, zb = a[:, 1:] / ls, b[:, 1:] / ls
    d2 = (za * za).sum(1)[:, None] + (zb * zb).sum(1)[None, :] - 2.0 * (za @ zb.T)
    dt = np.abs(a[:, :1] - b[:, :1].T)
    return math.exp(theta[0]) * np.exp(-dt / math.exp(theta[1]) - 0.5 * np.maximum(d2, 0.0))


def _chol(k: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor of ``k``, with growing jitter if rounding made it indefinite."""
    lapack, _, _ = _scipy()
    jitter = 0.0
    for _ in range(6):
        low, info = lapack.dpotrf(k + jitter * np.eye(len(k)) if jitter else k, lower=1, clean=1)
        if info == 0:
            return low
        jitter = max(jitter * 100.0, 1e-9 * max(float(np.mean(np.diag(k))), 1e-12))
    raise np.linalg.LinAlgError("PB2: the GP's covariance is not positive definite")


class _Likelihood:
    """Minus the log marginal likelihood of standardised targets ``y`` at inputs ``x``, and its
    gradient in the log hyperparameters: ``-log p = y'a/2 + sum(log diag L) + n log(2 pi)/2``
    with ``K = LL'`` and ``a = K^-1 y``; ``d(-log p)/dθ = -tr((aa' - K^-1) dK/dθ)/2``. The
    pairwise distances are computed once, so one evaluation is a Cholesky factor, its inverse
    and a few elementwise products."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        self.y, n = y, len(y)
        self.dt = np.abs(x[:, :1] - x[:, :1].T)
        diff = x[:, None, 1:] - x[None, :, 1:]
        #: squared differences per input dimension, one column per dimension
        self.sq = (diff * diff).reshape(n * n, -1)
        # work arrays, reused by every evaluation (fresh ones cost page faults)
        self._kf, self._k, self._w = np.empty((n, n)), np.empty((n, n)), np.empty((n, n))
        self._diag = np.arange(n) * (n + 1)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        lapack, _, _ = _scipy()
        y, n, kf, k, w = self.y, len(self.y), self._kf, self._k, self._w
        inv_ls2 = np.exp(-2.0 * theta[2:-1])
        np.matmul(self.sq, -0.5 * inv_ls2, out=kf.reshape(-1))
        np.multiply(self.dt, math.exp(-theta[1]), out=k)
        kf -= k
        np.exp(kf, out=kf)
        kf *= math.exp(theta[0])
        noise = math.exp(theta[-1])
        np.copyto(k, kf)
        k.reshape(-1)[self._diag] += noise + _JITTER
        low, info = lapack.dpotrf(k, lower=1, clean=1, overwrite_a=1)
        if info != 0:  # not positive definite at these hyperparameters: steer away
            return 1e25, np.zeros_like(theta)
        alpha, _ = lapack.dpotrs(low, y, lower=1)
        value = 0.5 * float(y @ alpha) + float(np.log(np.diag(low)).sum())
        inv, _ = lapack.dpotri(low, lower=1, overwrite_c=1)  # the lower triangle of K^-1
        np.outer(alpha, alpha, out=w)
        w -= inv
        w -= inv.T
        w.reshape(-1)[self._diag] += np.diag(inv)
        grad = np.empty_like(theta)
        grad[-1] = noise * float(np.trace(w))
        w *= kf  # tr(W dK/dθ) = sum(W * dK/dθ) for a symmetric W
        grad[0] = w.sum()
        grad[1] = float(np.vdot(w, self.dt)) * math.exp(-theta[1])
        grad[2:-1] = (w.reshape(-1) @ self.sq) * inv_ls2
        return value + 0.5 * n * math.log(2.0 * math.pi), -0.5 * grad


def _tune(x: np.ndarray, y: np.ndarray, iterations: int) -> np.ndarray:
    """The kernel hyperparameters that maximise the marginal likelihood (L-BFGS-B from the
    default kernel, at most ``iterations`` iterations: a decision must stay cheap)."""
    _, _, minimize = _scipy()
    dims = x.shape[1] - 1
    res = minimize(
        _Likelihood(x, y),
        _start(dims),
        method="L-BFGS-B",
        jac=True,
        bounds=_bounds(dims),
        options={"maxiter": iterations},
    )
    return np.asarray(res.x, dtype=float)


class _Posterior:
    """An exact GP regression of standardised targets on inputs ``x`` with hyperparameters
    ``theta``: the Cholesky factor of the training covariance is computed once, so each
    prediction costs two products and one triangular solve."""

    def __init__(self, theta: np.ndarray, x: np.ndarray, dy: np.ndarray):
        lapack, _, _ = _scipy()
        self.theta, self.x = theta, x
        self.y_mean = float(np.mean(dy))
        std = float(np.std(dy))
        self.y_std = std if std > 0.0 else 1.0
        y = (dy - self.y_mean) / self.y_std
        k = _cov(theta, x, x)
        k[np.diag_indices(len(x))] += self.noise + _JITTER
        self.low = _chol(k)
        self.alpha, _ = lapack.dpotrs(self.low, y, lower=1)

    @property
    def noise(self) -> float:
        return math.exp(float(self.theta[-1]))

    @property
    def prior_var(self) -> float:
        """The predictive variance far from all data (signal plus noise)."""
        return math.exp(float(self.theta[0])) + self.noise

    def predict(
        self, q: np.ndarray, pending: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the predicted target at the rows of ``q``; with
        ``pending`` rows, the standard deviation once those are observed too (GP-BUCB: the
        round's earlier picks, hallucinated at their predicted mean, which leaves the mean
        unchanged)."""
        _, solve_triangular, _ = _scipy()
        ks = _cov(self.theta, self.x, q)
        mean = ks.T @ self.alpha
        v = solve_triangular(self.low, ks, lower=True, check_finite=False)
        var = self.prior_var - (v * v).sum(0)
        if pending is not None and len(pending):
            # the joint factor of (training, pending) by blocks: only the pending block is new
            kp = _cov(self.theta, self.x, pending)
            vp = solve_triangular(self.low, kp, lower=True, check_finite=False)
            s = _cov(self.theta, pending, pending) - vp.T @ vp
            s[np.diag_indices(len(pending))] += self.noise + _JITTER
            u = solve_triangular(
                _chol(s), _cov(self.theta, pending, q) - vp.T @ v, lower=True, check_finite=False
            )
            var = var - (u * u).sum(0)
        std = np.sqrt(np.maximum(var, 0.0))
        return mean * self.y_std + self.y_mean, std * self.y_std


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
        self._gp: _Posterior | None = None
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
        _scipy()  # fail at the start of a run, not at the first decision

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
            theta = _tune(tx, (tdy - np.mean(tdy)) / (std if std > 0 else 1.0), _ITERATIONS)
            # in the data's own units, so that later fits on other data can use them
            self._tuned = (tune_key, theta + self._unit_shift(tnorm))
            self.tunes += 1
        self._norm = norm
        self._gp = _Posterior(self._tuned[1] - self._unit_shift(norm), x, dy)
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
        with _one_blas_thread():
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
