"""Optimizers: optax-shaped ``(init, update)`` plus each optimizer's stability threshold.

An :class:`Optimizer` is an ``optax.GradientTransformation`` (it has ``init(params)`` and
``update(grads, state, params) -> (updates, state)``, so it can be passed anywhere optax
expects one, chained, wrapped) with three additions used by eoslab's dynamics:

* ``edge(state)``: the stability threshold of the optimizer's *stability quantity* for the
  update that produced ``state`` (so a schedule's current η is used), a scalar;
* ``preconditioner(state)``: for adaptive methods, the diagonal P of that update (a pytree
  like the parameters, ``update = −η P⁻¹ m``), else ``None``;
* ``quantity``: ``"hessian"`` (the edge bounds λ_max(∇²L)), ``"preconditioned"`` (it bounds
  λ_max(P⁻¹∇²L), the *preconditioned sharpness* of Cohen et al. 2022, "Adaptive gradient
  methods at the edge of stability", §3) or ``"unknown"`` (any other optax transformation,
  wrapped by :func:`as_optimizer`: eoslab still reports the raw sharpness, with edge NaN).

Every hyperparameter is stored in the state (as optax's ``inject_hyperparams`` does), so a
batch of states made by ``jax.vmap(lambda lr: heavy_ball(lr, 0.9).init(p))(lrs)`` is advanced
by one vmapped ``update`` of any ``heavy_ball`` instance; a schedule (a callable of the step
count, e.g. from :func:`warmup` or :func:`cosine`) replaces the stored η at every step.

Thresholds (frozen curvature λ of a quadratic, or frozen P; derivations in docs/optimizers.md):
GD 2/η; heavy-ball 2(1+β)/η; Nesterov (optax's form below) 2(1+β)/((1+2β)η); RMSProp 2/η on
λ(P⁻¹H); Adam (2+2β₁)/((1−β₁)η) on λ(P⁻¹H).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from eoslab.errors import EoslabError
from eoslab.typing import Scalar, Schedule

QUANTITIES = ("hessian", "preconditioned", "unknown")


@dataclasses.dataclass(frozen=True, eq=True)
class Optimizer:
    """An optax ``GradientTransformation`` (``init``, ``update``) that also knows its edge.

    ``edge(state) -> scalar`` and ``preconditioner(state) -> pytree | None`` read the state
    returned by ``update`` at step t (the update just made); ``quantity`` names what the edge
    bounds (:data:`QUANTITIES`); ``name`` and ``hyper`` (the constructor's arguments) are for
    reports. Equality and hashing ignore ``init`` and ``hyper``: built-ins of one kind share
    their ``update`` (the numbers live in the state), so a jitted run is compiled once for all
    step sizes.
    """

    init: Callable = dataclasses.field(compare=False)
    update: Callable
    edge: Callable
    preconditioner: Callable
    quantity: str
    name: str
    hyper: dict = dataclasses.field(default_factory=dict, compare=False)

    def __iter__(self):  # unpacks like optax's (init, update) pair
        return iter((self.init, self.update))


def as_optimizer(tx: optax.GradientTransformation | Optimizer, *, name: str = "optax", edge: Callable | None = None,
                 preconditioner: Callable | None = None, quantity: str | None = None) -> Optimizer:
    """Any ``optax.GradientTransformation`` as an :class:`Optimizer` (an Optimizer is returned as is).

    Without ``edge`` the threshold is unknown (NaN) and only the raw sharpness is reported:
    eoslab cannot derive a stability threshold from an arbitrary update rule.
    """
    if isinstance(tx, Optimizer):
        return tx
    if not (hasattr(tx, "init") and hasattr(tx, "update")):
        raise EoslabError(f"optimizer must be an optax GradientTransformation (init, update), got {type(tx).__name__}")
    if quantity is None:
        quantity = "unknown" if edge is None else ("preconditioned" if preconditioner is not None else "hessian")
    if quantity not in QUANTITIES:
        raise EoslabError(f"quantity must be one of {QUANTITIES}, got {quantity!r}")
    edge_fn = edge if edge is not None else _unknown_edge
    pre = preconditioner if preconditioner is not None else _no_preconditioner
    return Optimizer(tx.init, tx.update, edge_fn, pre, quantity, name, {})


def _unknown_edge(state):
    return jnp.asarray(jnp.nan)


# ---- schedules (optax schedules: callables of the int step count) -------------------------------

def constant(lr: Scalar) -> Schedule:
    """η_t = lr."""
    return optax.constant_schedule(lr)


def warmup(lr: Scalar, steps: int, init: float = 0.0) -> Schedule:
    """Linear warm-up from ``init`` to ``lr`` over ``steps`` steps, then constant lr:
    η_t = init + (lr − init)·min(t, steps)/steps."""
    if int(steps) != steps or steps < 0:
        raise EoslabError(f"warm-up steps must be a non-negative integer, got {steps!r}")
    if steps == 0:
        return optax.constant_schedule(lr)
    return optax.linear_schedule(init, lr, int(steps))


def cosine(lr: Scalar, steps: int, warmup_steps: int = 0, final: float = 0.0) -> Schedule:
    """Linear warm-up over ``warmup_steps`` then cosine decay to ``final`` at step ``steps``:
    η_t = final + (lr − final)(1 + cos(π (t − w)/(steps − w)))/2 for w ≤ t ≤ steps."""
    if int(steps) != steps or steps <= warmup_steps:
        raise EoslabError(f"cosine schedule needs steps > warmup_steps, got {steps!r} ≤ {warmup_steps!r}")
    if warmup_steps == 0:
        return optax.cosine_decay_schedule(lr, int(steps), alpha=final / lr if lr else 0.0)
    return optax.warmup_cosine_decay_schedule(0.0, lr, int(warmup_steps), int(steps), end_value=final)


# ---- built-ins -----------------------------------------------------------------------------------

def _dtype(params):
    leaves = [x for x in jax.tree_util.tree_leaves(params) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.result_type(leaves[0]) if leaves else jnp.result_type(float)


def _lr_now(lr, count, stored):
    """η for the update at step ``count``: the schedule's value, or the stored constant."""
    return jnp.asarray(lr(count), stored.dtype) if callable(lr) else stored


def _check_lr(lr):
    if callable(lr):
        return
    if isinstance(lr, (int, float)) and not (0 < lr < float("inf")):
        raise EoslabError(f"lr must be a finite positive number or a schedule, got {lr!r}")


def _check_unit(name, value, closed_low=True):
    if isinstance(value, (int, float)) and not ((0 <= value < 1) if closed_low else (0 < value < 1)):
        raise EoslabError(f"{name} must be in {'[0, 1)' if closed_low else '(0, 1)'}, got {value!r}")


def _check_eps(eps):
    if isinstance(eps, (int, float)) and not (0 <= eps < float("inf")):
        raise EoslabError(f"eps must be a finite non-negative number, got {eps!r}")


def _lr0(lr, dtype):
    return jnp.asarray(lr(0) if callable(lr) else lr, dtype)


class GDState(NamedTuple):
    count: jax.Array  # int32: updates made
    lr: jax.Array     # η of the latest update (η₀ before any)


class MomentumState(NamedTuple):
    count: jax.Array
    lr: jax.Array
    beta: jax.Array
    momentum: Any     # m, like params


class RMSPropState(NamedTuple):
    count: jax.Array
    lr: jax.Array
    beta2: jax.Array
    eps: jax.Array
    nu: Any           # ν, like params


class AdamState(NamedTuple):
    count: jax.Array
    lr: jax.Array
    b1: jax.Array
    b2: jax.Array
    eps: jax.Array
    mu: Any           # m, like params
    nu: Any           # ν, like params


def _tmap(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


def _no_preconditioner(state):
    return None


def _cached(make):
    """``make(schedule)`` builds an update; constant step sizes share one (module-level) function,
    so the jitted dynamics compile once for every η."""
    cache = {}

    def get(lr, *flags):
        if callable(lr):
            return make(lr, *flags)
        if flags not in cache:
            cache[flags] = make(None, *flags)
        return cache[flags]

    return get


@_cached
def _gd_update(schedule):
    def update(grads, state, params=None):
        eta = _lr_now(schedule, state.count, state.lr)
        return _tmap(lambda g: -eta * g, grads), GDState(state.count + 1, eta)

    return update


def _gd_edge(s):
    return 2.0 / s.lr


def gd(lr: Scalar | Schedule) -> Optimizer:
    """Gradient descent: θ_{t+1} = θ_t − η_t g_t (g_t = ∇L(θ_t)). Equals ``optax.sgd(lr)``.

    Edge: 2/η_t on λ_max(∇²L) (the GD map on a quadratic of curvature λ multiplies the error
    by 1 − ηλ).
    """
    _check_lr(lr)

    def init(params):
        return GDState(jnp.zeros([], jnp.int32), _lr0(lr, _dtype(params)))

    return Optimizer(init, _gd_update(lr), _gd_edge, _no_preconditioner, "hessian", "gd", {"lr": lr})


@_cached
def _momentum_update(schedule, nesterov):
    def update(grads, state, params=None):
        eta, b = _lr_now(schedule, state.count, state.lr), state.beta
        m = _tmap(lambda g, m: g + b * m, grads, state.momentum)
        if nesterov:
            u = _tmap(lambda g, m: -eta * (g + b * m), grads, m)
        else:
            u = _tmap(lambda m: -eta * m, m)
        return u, MomentumState(state.count + 1, eta, b, m)

    return update


def _heavy_ball_edge(s):
    return 2.0 * (1 + s.beta) / s.lr


def _nesterov_edge(s):
    return 2.0 * (1 + s.beta) / ((1 + 2 * s.beta) * s.lr)


def _momentum(lr, beta, nesterov: bool) -> Optimizer:
    _check_lr(lr)
    _check_unit("beta", beta)

    def init(params):
        dt = _dtype(params)
        return MomentumState(jnp.zeros([], jnp.int32), _lr0(lr, dt), jnp.asarray(beta, dt), _tmap(jnp.zeros_like, params))

    return Optimizer(init, _momentum_update(lr, nesterov), _nesterov_edge if nesterov else _heavy_ball_edge,
                     _no_preconditioner, "hessian", "nesterov" if nesterov else "heavy_ball", {"lr": lr, "beta": beta})


def heavy_ball(lr: Scalar | Schedule, beta: float = 0.9) -> Optimizer:
    """Heavy-ball momentum: m_{t+1} = β m_t + g_t, θ_{t+1} = θ_t − η_t m_{t+1} (m₀ = 0).
    Equals ``optax.sgd(lr, momentum=beta)`` (and, at constant η, the form v ← βv − ηg, θ ← θ + v).

    Edge: 2(1+β)/η_t on λ_max(∇²L): on curvature λ the characteristic polynomial is
    z² − (1 + β − ηλ) z + β, whose root crosses z = −1 at ηλ = 2 + 2β (Polyak 1964).
    """
    return _momentum(lr, beta, nesterov=False)


def nesterov(lr: Scalar | Schedule, beta: float = 0.9) -> Optimizer:
    """Nesterov momentum (optax's form): m_{t+1} = β m_t + g_t,
    θ_{t+1} = θ_t − η_t (g_t + β m_{t+1}). Equals ``optax.sgd(lr, momentum=beta, nesterov=True)``.

    Edge: 2(1+β)/((1+2β)η_t) on λ_max(∇²L): the characteristic polynomial on curvature λ is
    z² − (1+β)(1−ηλ) z + β(1−ηλ), with a root at z = −1 when ηλ = 2(1+β)/(1+2β).
    """
    return _momentum(lr, beta, nesterov=True)


@_cached
def _rmsprop_update(schedule):
    def update(grads, state, params=None):
        eta, b2, e = _lr_now(schedule, state.count, state.lr), state.beta2, state.eps
        nu = _tmap(lambda g, n: (1 - b2) * g**2 + b2 * n, grads, state.nu)
        u = _tmap(lambda g, n: -eta * (jax.lax.rsqrt(n + e) * g), grads, nu)
        return u, RMSPropState(state.count + 1, eta, b2, e, nu)

    return update


def _rmsprop_preconditioner(s):
    return _tmap(lambda n: jnp.sqrt(n + s.eps), s.nu)


def rmsprop(lr: Scalar | Schedule, beta2: float = 0.99, eps: float = 1e-8) -> Optimizer:
    """RMSProp: ν_{t+1} = β₂ ν_t + (1−β₂) g_t², θ_{t+1} = θ_t − η_t g_t / √(ν_{t+1} + ε) (ν₀ = 0).
    Equals ``optax.rmsprop(lr, decay=beta2, eps=eps)`` (ε inside the root, optax's default).

    Preconditioner P_t = √(ν_{t+1} + ε) (the update is −η P⁻¹g). Edge: 2/η_t on
    λ_max(P⁻¹∇²L): with P frozen the step is GD on the preconditioned quadratic.
    """
    _check_lr(lr)
    _check_unit("beta2", beta2)
    _check_eps(eps)

    def init(params):
        dt = _dtype(params)
        return RMSPropState(jnp.zeros([], jnp.int32), _lr0(lr, dt), jnp.asarray(beta2, dt), jnp.asarray(eps, dt),
                            _tmap(jnp.zeros_like, params))

    return Optimizer(init, _rmsprop_update(lr), _gd_edge, _rmsprop_preconditioner, "preconditioned", "rmsprop",
                     {"lr": lr, "beta2": beta2, "eps": eps})


def _adam_hat(s, bias_correction):
    if not bias_correction:
        return s.mu, s.nu
    c1, c2 = 1 - s.b1 ** s.count, 1 - s.b2 ** s.count
    return _tmap(lambda m: m / c1, s.mu), _tmap(lambda n: n / c2, s.nu)


@_cached
def _adam_update(schedule, bias_correction):
    def update(grads, state, params=None):
        eta, B1, B2 = _lr_now(schedule, state.count, state.lr), state.b1, state.b2
        mu = _tmap(lambda g, m: (1 - B1) * g + B1 * m, grads, state.mu)
        nu = _tmap(lambda g, n: (1 - B2) * g**2 + B2 * n, grads, state.nu)
        new = AdamState(state.count + 1, eta, B1, B2, state.eps, mu, nu)
        mh, nh = _adam_hat(new, bias_correction)
        u = _tmap(lambda m, n: -eta * (m / (jnp.sqrt(n) + new.eps)), mh, nh)
        return u, new

    return update


def _adam_pre_bc(s):
    return _tmap(lambda n: jnp.sqrt(n) + s.eps, _adam_hat(s, True)[1])


def _adam_pre_raw(s):
    return _tmap(lambda n: jnp.sqrt(n) + s.eps, s.nu)


def _adam_edge(s):
    return (2.0 + 2.0 * s.b1) / ((1.0 - s.b1) * s.lr)


def adam(lr: Scalar | Schedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, bias_correction: bool = True) -> Optimizer:
    """Adam (Kingma & Ba 2015): m_{t+1} = β₁m_t + (1−β₁)g_t, ν_{t+1} = β₂ν_t + (1−β₂)g_t²,
    m̂ = m_{t+1}/(1−β₁^{t+1}), ν̂ = ν_{t+1}/(1−β₂^{t+1}) (m̂ = m, ν̂ = ν without bias correction),
    θ_{t+1} = θ_t − η_t m̂ / (√ν̂ + ε). With bias correction it equals ``optax.adam(lr, b1, b2, eps)``.

    Preconditioner (Cohen et al. 2022, §3): P_t = diag(√ν̂ + ε), the bias-corrected second
    moment *including* g_t, i.e. the P that divides the update made at step t. Edge:
    (2+2β₁)/((1−β₁)η_t) on λ_max(P⁻¹∇²L): with P frozen, Adam is heavy-ball with momentum β₁
    and step (1−β₁)η on the preconditioned quadratic (the first-moment bias correction tends
    to 1 and does not move the threshold). 38/η at β₁ = 0.9.
    """
    _check_lr(lr)
    _check_unit("b1", b1)
    _check_unit("b2", b2)
    _check_eps(eps)
    bias_correction = bool(bias_correction)

    def init(params):
        dt = _dtype(params)
        z = _tmap(jnp.zeros_like, params)
        return AdamState(jnp.zeros([], jnp.int32), _lr0(lr, dt), jnp.asarray(b1, dt), jnp.asarray(b2, dt),
                         jnp.asarray(eps, dt), z, z)

    return Optimizer(init, _adam_update(lr, bias_correction), _adam_edge,
                     _adam_pre_bc if bias_correction else _adam_pre_raw, "preconditioned", "adam",
                     {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "bias_correction": bias_correction})


#: Built-in optimizers by name (the CLI's ``--optimizer``; ``momentum`` is heavy-ball).
BUILTINS = {"gd": gd, "momentum": heavy_ball, "heavy_ball": heavy_ball, "nesterov": nesterov,
            "rmsprop": rmsprop, "adam": adam}
