"""The Gaussian process behind PB2 (:mod:`hyperpop.strategies.pb2`): a small exact GP on numpy
and SciPy's LAPACK.

The kernel is time-varying: an exponential kernel on the time (column 0 of the inputs) times a
squared-exponential kernel with one length scale per other input dimension, plus white noise.
:func:`tune` fits its hyperparameters by maximising the marginal likelihood
(:class:`Likelihood`, with its gradient) with L-BFGS-B; :class:`Posterior` conditions on data
and predicts, with batch (GP-BUCB) variance for a round's pending picks. SciPy is imported on
first use (:func:`require_scipy`).
"""

from __future__ import annotations

import contextlib
import importlib
import math
from typing import Any

import numpy as np

__all__ = ["Likelihood", "Posterior", "one_blas_thread", "require_scipy", "tune"]

_SCIPY: Any = None


def require_scipy() -> Any:
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


def one_blas_thread() -> Any:
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
    lapack, _, _ = require_scipy()
    jitter = 0.0
    for _ in range(6):
        low, info = lapack.dpotrf(k + jitter * np.eye(len(k)) if jitter else k, lower=1, clean=1)
        if info == 0:
            return low
        jitter = max(jitter * 100.0, 1e-9 * max(float(np.mean(np.diag(k))), 1e-12))
    raise np.linalg.LinAlgError("PB2: the GP's covariance is not positive definite")


class Likelihood:
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
        lapack, _, _ = require_scipy()
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


def tune(x: np.ndarray, y: np.ndarray, iterations: int) -> np.ndarray:
    """The kernel hyperparameters that maximise the marginal likelihood (L-BFGS-B from the
    default kernel, at most ``iterations`` iterations: a decision must stay cheap)."""
    _, _, minimize = require_scipy()
    dims = x.shape[1] - 1
    res = minimize(
        Likelihood(x, y),
        _start(dims),
        method="L-BFGS-B",
        jac=True,
        bounds=_bounds(dims),
        options={"maxiter": iterations},
    )
    return np.asarray(res.x, dtype=float)


class Posterior:
    """An exact GP regression of standardised targets on inputs ``x`` with hyperparameters
    ``theta``: the Cholesky factor of the training covariance is computed once, so each
    prediction costs two products and one triangular solve."""

    def __init__(self, theta: np.ndarray, x: np.ndarray, dy: np.ndarray):
        lapack, _, _ = require_scipy()
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
        _, solve_triangular, _ = require_scipy()
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
