"""Where does each optimizer diverge? Bisection on η against the edge it reports.

A first-principles check of :mod:`eoslab.dynamics.optim`'s thresholds: on a random quadratic
L(θ) = ½ θᵀAθ (A symmetric positive definite, (P, P)) the optimizer's own dynamics are run
(the one stepper, :mod:`eoslab.dynamics.stepper`) at a step size η, and η is bisected for the
boundary between decay and growth of ‖θ_t‖. For adaptive methods the preconditioner is frozen
at P = diag(p): RMSProp and Adam run with β₂ = 1 from ν₀ (so ν_t = ν₀ for ever) and, for Adam,
without bias correction (with β₂ = 1 the correction 1 − β₂^t would vanish). The *predicted*
threshold is where the optimizer's reported edge meets its stability quantity:

    edge(η*) = λ_max(A)               (GD, heavy-ball, Nesterov)
    edge(η*) = λ_max(P^{-1/2} A P^{-1/2})   (RMSProp, Adam)

and since every edge is c/η, η* = η₀·edge(η₀)/λ for any reference η₀.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.dynamics import optim
from eoslab.dynamics.stepper import init_state, make_step, scan
from eoslab.errors import EoslabError
from eoslab.typing import Array, ArrayLike, DTypeLike, Float, PRNGKeyArray

#: The optimizers of the bisection test: name -> constructor of (lr) with fixed hyperparameters.
FROZEN = ("rmsprop", "adam")


def random_quadratic(key: PRNGKeyArray, dim: int, cond: float = 10.0, dtype: DTypeLike = jnp.float64
                     ) -> Float[Array, "n n"]:
    """A random SPD matrix (dim, dim) with eigenvalues log-spaced in [1, cond] and a random basis."""
    q, _ = jnp.linalg.qr(jax.random.normal(key, (dim, dim), dtype))
    ev = jnp.logspace(0.0, jnp.log10(cond), dim, dtype=dtype)
    return (q * ev) @ q.T


def _make(name: str, lr, hyper: dict):
    if name == "gd":
        return optim.gd(lr)
    if name == "heavy_ball":
        return optim.heavy_ball(lr, hyper.get("beta", 0.9))
    if name == "nesterov":
        return optim.nesterov(lr, hyper.get("beta", 0.9))
    if name == "rmsprop":
        return optim.rmsprop(lr, 0.99, hyper.get("eps", 0.0))
    if name == "adam":
        return optim.adam(lr, hyper.get("b1", 0.9), 0.999, hyper.get("eps", 0.0), bias_correction=False)
    raise EoslabError(f"unknown optimizer {name!r} for the threshold test; expected gd, heavy_ball, nesterov, "
                      "rmsprop or adam")


def _state(name, lr, hyper, theta0, nu0):
    opt = _make(name, lr, hyper)
    st = init_state(theta0, opt)
    if name in FROZEN:  # freeze the preconditioner: β₂ = 1 keeps ν at ν₀
        os_ = st.opt_state
        fields = {"nu": nu0}
        fields["beta2" if name == "rmsprop" else "b2"] = jnp.ones((), theta0.dtype)
        st = st._replace(opt_state=os_._replace(**fields))
    return opt, st


@functools.partial(jax.jit, static_argnames=("opt", "half"))
def _growth(A, state, opt, half):
    loss = lambda th: 0.5 * th @ A @ th
    step = make_step(loss, opt, stochastic=False)
    mid, _ = scan(step, state, half, records=False)
    end, _ = scan(step, mid, half, records=False)
    # growth over the second half: transients (momentum's non-normal amplification) have passed
    grow = jnp.log(jnp.linalg.norm(end.params)) - jnp.log(jnp.linalg.norm(mid.params))
    return jnp.where(end.diverged, jnp.inf, grow)


def predicted_threshold(name: str, A: Float[ArrayLike, "n n"], hyper: dict | None = None,
                        p: Float[ArrayLike, " n"] | None = None) -> float:
    """η* from the reported edge: edge(η*) equals λ_max of A (or of P^{-1/2}AP^{-1/2}, P = diag(p))."""
    hyper = hyper or {}
    A = jnp.asarray(A)
    theta0 = jnp.zeros(A.shape[0], A.dtype)
    nu0 = (jnp.ones_like(theta0) if p is None else jnp.asarray(p, A.dtype) ** 2)
    opt, st = _state(name, 1.0, hyper, theta0, nu0)
    _, new = opt.update(theta0, st.opt_state, theta0)  # one (zero-gradient) update: the state the edge reads
    if name in FROZEN:
        P = jax.flatten_util.ravel_pytree(opt.preconditioner(new))[0]
        s = 1.0 / jnp.sqrt(P)
        lam = jnp.linalg.eigvalsh(s[:, None] * A * s[None, :])[-1]
    else:
        lam = jnp.linalg.eigvalsh(A)[-1]
    return float(opt.edge(new) / lam)  # edge(η) = c/η: edge(1)/λ is η*


def bisect_threshold(name: str, A: Float[ArrayLike, "n n"], hyper: dict | None = None,
                     p: Float[ArrayLike, " n"] | None = None, *, key: PRNGKeyArray, steps: int = 4000,
                     rtol: float = 1e-3) -> float:
    """The step size where ``name``'s own dynamics on ½θᵀAθ turn from decay to growth, by
    bisection to relative width ``rtol`` (P frozen at diag(p) for RMSProp / Adam); θ₀ is drawn
    N(0, I) with ``key`` (required; the boundary is a property of A, θ₀ only has to be generic)."""
    hyper = hyper or {}
    A = jnp.asarray(A)
    if key is None:
        raise EoslabError("bisect_threshold draws θ₀: pass key=jax.random.PRNGKey(seed)")
    theta0 = jax.random.normal(key, (A.shape[0],), A.dtype)
    nu0 = jnp.ones_like(theta0) if p is None else jnp.asarray(p, A.dtype) ** 2
    guess = predicted_threshold(name, A, hyper, p)
    half = steps // 2
    # the optimizer objects of one kind are equal (the numbers live in the state): one compilation
    opt0, _ = _state(name, guess, hyper, theta0, nu0)
    grows = lambda lr: float(_growth(A, _state(name, lr, hyper, theta0, nu0)[1], opt0, half)) > 0
    lo, hi = guess / 4, guess * 4
    if grows(lo) or not grows(hi):
        raise EoslabError(f"{name}: no decay/growth boundary between {lo:.4g} and {hi:.4g}")
    while hi / lo - 1 > rtol:
        mid = np.sqrt(lo * hi)
        lo, hi = (lo, mid) if grows(mid) else (mid, hi)
    return float(np.sqrt(lo * hi))
