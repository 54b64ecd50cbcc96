"""What the explorer shows, computed with eoslab (no plotting, no web framework here).

Every function takes plain numbers and returns NumPy arrays or Python scalars, so the same
values can be checked against eoslab's Python API directly (the browser test does that).

The 2-D model of Theorem 1 is f(θ) = ½(θ₁² − εθ₂²) in Q's eigenbasis, loss ½(f − E)², NTK
λ = θ₁² + ε²θ₂² (``eoslab.models.quadratic2d``). "Ratio" below is η·λ/2: 1 is the edge of
stability (λ = 2/η).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.dynamics import EOS_THRESHOLD as _EOS_THRESHOLD
from eoslab.dynamics import gd, gd_output, summarize, sweep
from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.models import quadratic2d, second_order
from eoslab.models.quadratic2d import check_eps
from eoslab.dynamics import quadratic2d as exact2d
from eoslab.theory import eos2d
from eoslab.view import in_x64

#: A run "ended at the edge of stability" if it crossed the edge (η·λ_t/2 > 1 at some step) and
#: the mean ratio over its last steps exceeds this (the rule of
#: :func:`eoslab.dynamics.quadratic2d.count_outcomes`).
EOS_THRESHOLD = _EOS_THRESHOLD
#: Rows averaged for the final ratio (as :func:`eoslab.dynamics.summarize`).
TAIL = 100
#: Outcome codes of the phase diagram.
OUTCOMES = ("below the edge", "edge of stability", "diverged")
MAX_STEPS = 1_000_000


def check_inputs(eps, lr, E, steps) -> tuple[float, float, float, int]:
    """Validate the explorer's inputs (before any work); raise :class:`EoslabError` naming the field."""
    eps = check_eps(eps)
    lr = check_positive("η (step size)", lr)
    E = float(E)
    if not math.isfinite(E):
        raise EoslabError(f"E (target) must be finite, got {E!r}")
    steps = check_positive_int("steps", steps)
    if steps > MAX_STEPS:
        raise EoslabError(f"steps must be at most {MAX_STEPS:,} in the explorer, got {steps:,}")
    return eps, lr, E, steps


def outcome(diverged: bool, ratio: float, crossed: bool) -> str:
    """One of :data:`OUTCOMES` from a run's divergence flag, final ratio and whether it crossed
    the edge (a run that only sharpened towards the edge converged below it)."""
    if diverged:
        return OUTCOMES[2]
    return OUTCOMES[1] if crossed and ratio > EOS_THRESHOLD else OUTCOMES[0]


def predicted_ratio(eps: float, lr: float, E: float) -> float:
    """Theorem 1's limit of η·λ/2 at the edge of stability (exact slow-manifold value,
    :func:`eoslab.theory.eos2d.eos_limit`); NaN when ηE ≥ 1 (no limit exists)."""
    return _predicted(float(eps), float(lr) * float(E))


@functools.lru_cache(maxsize=256)
@in_x64
def _predicted(eps: float, e: float) -> float:
    # The limit depends on (ε, ηE) only: cache on those (each new ε costs ~0.2 s once).
    if not e < 1.0:
        return math.nan
    return eos2d.eos_limit(eps, 1.0, e).ratio


def bucket(steps: int) -> int:
    """The scan length actually compiled for ``steps``: 2,000·2ᵏ ≥ steps. Trajectories are
    computed at that length and cut, so changing ``steps`` rarely triggers a new compilation
    (row t of a scan does not depend on the scan's length)."""
    n = 2000
    while n < steps:
        n *= 2
    return n


@in_x64
def trajectory2d(eps, lr, E, theta0, steps) -> dict:
    """GD on the 2-D model from ``theta0`` (2,): :func:`eoslab.dynamics.gd` with dense spectra.

    Returns a dict of NumPy arrays, each (steps,) unless said: ``t``; ``theta`` (steps, 2),
    θ_t before the t-th update; ``loss``; ``ratio`` = η·λ_NTK/2 (Theorem 1's λ);
    ``hessian_ratio`` = η·λ_max(∇²L)/2; ``diverged``; and scalars ``final_ratio`` (mean of the
    last :data:`TAIL` finite rows), ``max_ratio``, ``diverged_at`` (−1 if not), ``outcome``,
    ``predicted_ratio``.
    """
    eps, lr, E, steps = check_inputs(eps, lr, E, steps)
    theta0 = np.asarray(theta0, dtype=np.float64)
    if theta0.shape != (2,) or not np.all(np.isfinite(theta0)):
        raise EoslabError(f"θ₀ must be two finite numbers, got {theta0.tolist()}")
    traj, _ = gd(quadratic2d.problem(eps, theta0, E), lr, bucket(steps), k=1, spectra="dense",
                 record_params=True)
    traj = {k: np.asarray(v)[:steps] for k, v in traj.items()}
    s = summarize(traj, tail=TAIL)
    diverged = bool(s["diverged"])
    final = float(s["final_eta_ntk_half"])
    ratio = traj["eta_ntk_half"]
    max_ratio = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else math.nan
    return {
        "t": np.arange(steps),
        "theta": traj["params"],
        "loss": traj["loss"],
        "ratio": ratio,
        "hessian_ratio": traj["eta_lambda_half"],
        "diverged": traj["diverged"],
        "final_ratio": math.nan if diverged else final,
        "max_ratio": max_ratio,
        "diverged_at": int(s["diverged_at"]),
        "outcome": outcome(diverged, final, max_ratio > 1),
        "predicted_ratio": predicted_ratio(eps, lr, E),
    }


def box(eps: float, lr: float, theta0=None) -> tuple[float, float, float, float]:
    """The (θ₁ min, θ₁ max, θ₂ min, θ₂ max) window of the landscape: |θ₁√η| ≤ 1.5 and
    |θ₂√(εη)| ≤ 3.5 (the default initialisation box of ``eoslab run quadratic2d`` lies
    inside), widened to contain ``theta0``."""
    a, b = 1.5 / math.sqrt(lr), 3.5 / math.sqrt(eps * lr)
    if theta0 is not None:
        a = max(a, 1.1 * abs(float(theta0[0])))
        b = max(b, 1.1 * abs(float(theta0[1])))
    return -a, a, -b, b


def landscape(eps: float, E: float, window, n: int = 160) -> dict:
    """f and log₁₀ L on an n × n grid of ``window`` (θ₁ along columns, θ₂ along rows).
    Returns ``x`` (n,), ``y`` (n,), ``f`` (n, n), ``log_loss`` (n, n)."""
    x = np.linspace(window[0], window[1], n)
    y = np.linspace(window[2], window[3], n)
    X, Y = np.meshgrid(x, y)
    f = np.asarray(quadratic2d.output(np.stack([X, Y], -1), eps))  # NumPy in, NumPy out: no dispatch
    return {"x": x, "y": y, "f": f, "log_loss": np.log10(0.5 * (f - E) ** 2 + 1e-12)}


def minimiser_curve(eps: float, lr: float, E: float, window, n: int = 400) -> dict:
    """The global minima {f = E} inside ``window`` as short segments, with their sharpness.

    At a minimum the Hessian of L is JJᵀ, so its top eigenvalue is the NTK λ = θ₁² + ε²θ₂²;
    the minimum is linearly stable for GD at step size η iff ηλ/2 < 1. Returns ``x0, y0, x1,
    y1, ratio`` (η·λ/2 at the segment's midpoint, (m,)) and ``stable`` (bool, (m,))."""
    segs = []
    if E >= 0:  # θ₁ = ±√(2E + εθ₂²) over θ₂
        t = np.linspace(window[2], window[3], n)
        r = np.sqrt(2 * E + eps * t**2)
        for sgn in (1.0, -1.0):
            segs.append((sgn * r, t))
    else:  # θ₂ = ±√((θ₁² − 2E)/ε) over θ₁
        t = np.linspace(window[0], window[1], n)
        r = np.sqrt((t**2 - 2 * E) / eps)
        for sgn in (1.0, -1.0):
            segs.append((t, sgn * r))
    cols = {k: [] for k in ("x0", "y0", "x1", "y1")}
    for px, py in segs:
        cols["x0"].append(px[:-1]), cols["y0"].append(py[:-1])
        cols["x1"].append(px[1:]), cols["y1"].append(py[1:])
    out = {k: np.concatenate(v) for k, v in cols.items()}
    mx, my = (out["x0"] + out["x1"]) / 2, (out["y0"] + out["y1"]) / 2
    out["ratio"] = lr * (mx**2 + eps**2 * my**2) / 2
    out["stable"] = out["ratio"] < 1.0
    return out


@functools.partial(jax.jit, static_argnames=("length",))
def _phase(eps, E, lrs, theta0, steps, length):
    """Summaries of GD runs at step sizes ``lrs`` (B,) from ``theta0`` (B, 2) after ``steps``
    (traced, ≤ ``length``) updates, by the exact (z, λ) map of
    :func:`eoslab.dynamics.quadratic2d.step` (identical to parameter-space GD)."""
    tail_from = steps - jnp.minimum(TAIL, steps)

    def one(lr, th):
        z0, lam0 = exact2d.from_theta(th, eps, E)

        def body(c, t):
            z, lam, div, acc, top = c
            live = t < steps
            z2, lam2 = exact2d.step(z, lam, eps, lr, E)
            # Row t describes the iterate before the t-th update (as in gd): λ_t.
            acc = acc + jnp.where(live & (t >= tail_from), lam, 0.0)
            top = jnp.where(live, jnp.maximum(top, lam), top)
            div = div | (live & ~(jnp.isfinite(z2) & jnp.isfinite(lam2)))
            keep = div | ~live
            return (jnp.where(keep, z, z2), jnp.where(keep, lam, lam2), div, acc, top), None

        zero = jnp.zeros_like(lam0)
        (z, lam, div, acc, top), _ = jax.lax.scan(body, (z0, lam0, jnp.array(False), zero, zero),
                                                  jnp.arange(length))
        ratio = lr * acc / (2 * (steps - tail_from))
        code = jnp.where(div, 2, jnp.where((ratio > EOS_THRESHOLD) & (lr * top > 2), 1, 0))
        return code, jnp.where(div, jnp.nan, ratio)

    return sweep(one, batched={"lr": lrs, "th": theta0})


@in_x64
def phase_diagram(eps, E, theta1, lrs, theta2s, steps) -> dict:
    """Outcome of GD over the grid (η, θ₂) at fixed θ₁ = ``theta1``, one vectorised call
    (:func:`eoslab.dynamics.sweep` of the exact map).

    Args: ``lrs`` (n_η,), ``theta2s`` (n_θ,). Returns ``code`` (n_θ, n_η) int (index into
    :data:`OUTCOMES`), ``ratio`` (n_θ, n_η) final η·λ/2 (NaN if diverged), ``lrs``, ``theta2s``.
    """
    eps, _, E, steps = check_inputs(eps, 1.0, E, steps)
    lrs = np.asarray(lrs, np.float64)
    theta2s = np.asarray(theta2s, np.float64)
    if np.any(~np.isfinite(lrs) | (lrs <= 0)):
        raise EoslabError("every step size of the phase diagram must be finite and positive")
    L, T2 = np.meshgrid(lrs, theta2s)
    th = np.stack([np.full(T2.size, float(theta1)), T2.ravel()], axis=1)
    code, ratio = _phase(jnp.float64(eps), jnp.float64(E), jnp.asarray(L.ravel()), jnp.asarray(th),
                         jnp.asarray(steps), length=bucket(steps))
    shape = T2.shape
    return {"code": np.asarray(code).reshape(shape), "ratio": np.asarray(ratio).reshape(shape),
            "lrs": lrs, "theta2s": theta2s}


def phase_axes(lr: float, window, n_lr: int = 49, n_theta: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """The phase diagram's grid: η over [0.1η, 1.9η] (odd ``n_lr``: the middle column is η
    itself) and θ₂ over the landscape window."""
    lrs = lr * np.linspace(0.1, 1.9, n_lr)
    lrs[n_lr // 2] = lr
    return lrs, np.linspace(window[2], window[3], n_theta)


# --------------------------------------------------------------------------- random second-order models
def check_second_order(D, P, sigma_z, sigma_j, sigma_q, lr, steps, seed) -> tuple:
    D = check_positive_int("D (datapoints)", D)
    P = check_positive_int("P (parameters)", P)
    if D > 400 or P > 400:
        raise EoslabError(f"D and P must be at most 400 in the explorer, got D = {D}, P = {P}")
    sz, sj = check_positive("σ_z", sigma_z), check_positive("σ_J", sigma_j)
    sq = check_positive("σ_q", sigma_q)
    lr = check_positive("η (step size)", lr)
    steps = check_positive_int("steps", steps)
    if steps > 100_000:
        raise EoslabError(f"steps must be at most 100,000 for second-order models, got {steps:,}")
    if int(seed) != seed or seed < 0:
        raise EoslabError(f"seed must be a non-negative integer, got {seed!r}")
    return D, P, sz, sj, sq, lr, steps, int(seed)


def second_order_run(D, P, sigma_z, sigma_j, sigma_q, lr, steps, seed) -> dict:
    """GD on a random second-order model of Theorem 2 (``eoslab.models.second_order.random``,
    θ₀ = 0), iterated exactly in output space (:func:`eoslab.dynamics.gd_output`).

    Returns ``t``, ``loss``, ``ratio`` = η·λ_max(NTK)/2, ``hessian_ratio`` = η·λ_max(∇²L)/2,
    ``ntk2_ratio`` (the second NTK eigenvalue, η·λ₂/2), each (steps,), and the scalars
    ``final_ratio``, ``max_ratio``, ``diverged_at``, ``outcome``."""
    return dict(_second_order_run(*check_second_order(D, P, sigma_z, sigma_j, sigma_q, lr, steps, seed)))


@functools.lru_cache(maxsize=32)
@in_x64
def _second_order_run(D, P, sz, sj, sq, lr, steps, seed) -> dict:
    # Cached on the (validated) inputs (pages and repeated clicks reuse a run). Callers get a
    # fresh dict; the arrays are shared, treat them as read-only.
    m = second_order.random(jax.random.PRNGKey(seed), D, P, sz, sj, sq)
    traj, _ = gd_output(m, lr, steps, k=2, spectra="dense")
    s = summarize(traj, tail=TAIL)
    diverged = bool(s["diverged"])
    final = float(s["final_eta_ntk_half"])
    ratio = np.asarray(traj["eta_ntk_half"])
    max_ratio = float(np.nanmax(ratio)) if np.isfinite(ratio).any() else math.nan
    ntk = np.asarray(traj["ntk_eigs"])
    return {
        "t": np.arange(steps),
        "loss": np.asarray(traj["loss"]),
        "ratio": ratio,
        "hessian_ratio": np.asarray(traj["eta_lambda_half"]),
        "ntk2_ratio": lr * ntk[:, 1] / 2 if ntk.shape[1] > 1 else np.full(steps, np.nan),
        "final_ratio": math.nan if diverged else final,
        "max_ratio": max_ratio,
        "diverged_at": int(s["diverged_at"]),
        "outcome": outcome(diverged, final, max_ratio > 1),
    }
