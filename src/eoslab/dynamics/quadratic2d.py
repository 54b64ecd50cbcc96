"""GD on Theorem 1's 2-D model in output space: the exact (z, λ) map and batched simulation.

Model (Q's eigenbasis): f = ½(θ₁² − εθ₂²), residual z = f − E, NTK λ = θ₁² + ε²θ₂², loss ½z².
With a = θ₁², b = εθ₂² one GD step is a' = a(1 − ηz)², b' = b(1 + εηz)², and (z, λ) ↔ (a, b)
is invertible, so GD closes *exactly* in (z, λ)::

    z' = z − ηλz + ½η²z²[(1−ε)λ + 2ε(z+E)],
    λ' = λ − 2ηz[(1−ε)λ + 2ε(z+E)] + η²z²[(1−ε+ε²)λ + 2ε(1−ε)(z+E)].

In the scaled variables x = ηz, ℓ = ηλ, e = ηE the map contains no η: a run at step size η and
target E is the run at η = 1 and target ηE. :func:`simulate` iterates this map for a batch of
initialisations and keeps per-run summaries only; :func:`trajectories` runs parameter-space GD
for the few runs a figure draws. The predicted limit of λ is :mod:`eoslab.theory.eos2d`.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import progress as eoslab_progress
from eoslab.dynamics.gd import EOS_THRESHOLD, gd, sweep
from eoslab.errors import EoslabError, check_positive, check_positive_int
from eoslab.models import quadratic2d
from eoslab.models.quadratic2d import check_eps
from eoslab._precision import x64
from eoslab.typing import Array, ArrayLike, Float, Scalar

# --------------------------------------------------------------------------- the exact map


@x64
def from_theta(theta: Float[ArrayLike, "*batch 2"], eps: float, E: float = 0.0
               ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """``(z, λ)`` of θ (..., 2) given in Q's eigenbasis: z = ½(θ₁² − εθ₂²) − E, λ = θ₁² + ε²θ₂²."""
    theta = jnp.asarray(theta)
    t1, t2 = theta[..., 0], theta[..., 1]
    return 0.5 * (t1**2 - eps * t2**2) - E, t1**2 + eps**2 * t2**2


@x64
def scaled_step(x: Float[ArrayLike, "*batch"], l: Float[ArrayLike, "*batch"], eps: Scalar, e: Scalar
                ) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """One GD step in x = ηz, ℓ = ηλ (e = ηE): the η-free form of :func:`step` (arrays broadcast)."""
    f = x + e
    c1 = (1 - eps) * l + 2 * eps * f
    c2 = (1 - eps + eps**2) * l + 2 * eps * (1 - eps) * f
    return x - l * x + 0.5 * x * x * c1, l - 2 * x * c1 + x * x * c2


@x64
def step(z: Float[ArrayLike, "*batch"], lam: Float[ArrayLike, "*batch"], eps: float, lr: Scalar = 1.0,
         E: Scalar = 0.0) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """One GD step of the 2-D model, exactly, in (z, λ). Arrays broadcast; returns ``(z', λ')``."""
    x, l = scaled_step(lr * z, lr * lam, eps, lr * E)
    return x / lr, l / lr


@x64
def two_step(z: Float[ArrayLike, "*batch"], lam: Float[ArrayLike, "*batch"], eps: float, lr: Scalar = 1.0,
             E: Scalar = 0.0) -> tuple[Float[Array, "*batch"], Float[Array, "*batch"]]:
    """The exact two-step map (:func:`step` composed with itself): removes the period-2
    oscillation of the EoS regime, so its orbits converge monotonically near the edge."""
    return step(*step(z, lam, eps, lr, E), eps, lr, E)


@functools.partial(jax.jit, static_argnames=("steps", "two"))
def _iterate(z0, lam0, eps, lr, E, steps, two):
    f = two_step if two else step

    def body(c, _):
        n = f(*c, eps, lr, E)
        return n, n

    _, (z, lam) = jax.lax.scan(body, (z0, lam0), None, length=steps)
    return jnp.concatenate([z0[None], z]), jnp.concatenate([lam0[None], lam])


@x64
def iterate(z0: float, lam0: float, eps: float, lr: float = 1.0, steps: int = 1000, E: float = 0.0,
            two: bool = False) -> tuple[Float[Array, " T+1"], Float[Array, " T+1"]]:
    """Iterate :func:`step` (or :func:`two_step` with ``two=True``) ``steps`` times from scalars
    ``(z0, λ0)``. Returns ``(z, λ)``, each (steps + 1,) including the start. No divergence
    masking: an overflow shows as inf/NaN (see :func:`simulate` for masked batches)."""
    steps = check_positive_int("steps", steps)
    f64 = lambda v: jnp.asarray(v, jnp.float64)
    return _iterate(f64(z0), f64(lam0), f64(eps), f64(lr), f64(E), steps=steps, two=two)


# --------------------------------------------------------------------------- batched simulation
#: Per-run summary keys of :func:`simulate` (each a (B,) array).
SUMMARY_KEYS = {
    "ratio": "mean of ηλ_t/2 over the last `tail` steps (NaN if diverged): the measured λ∞η/2",
    "final_ratio": "ηλ_T/2 after the last step",
    "max_ratio": "max_t ηλ_t/2 (> 1: the run crossed the edge of stability)",
    "first_cross": "first t with ηλ_t > 2, −1 if never",
    "final_z": "residual z_T after the last step",
    "diverged": "True if the state became non-finite",
    "diverged_at": "first step with a non-finite state, −1 if none",
}


def _init_state(x, l):
    i32 = jnp.int32
    return {"x": x, "l": l, "max_l": l, "ok_to": jnp.zeros(x.shape, i32), "below_to": (l <= 2).astype(i32),
            "tail": jnp.zeros_like(x)}


def _advance(state, eps, e, t0, n, tail_from):
    """``n`` steps of one run (a dict of scalars) from global step t0, accumulating summaries.

    The state is not frozen at a divergence, which keeps each step to the map and five cheap
    updates: a non-finite (x, ℓ) stays non-finite under +, − and × (inf·0 and inf − inf are
    NaN), so "finite" holds up to some step and never again, and the summaries only need the
    last step that was finite (``ok_to``), the maximum of ℓ over finite iterates (``max_l``)
    and the last step at which that maximum was still ≤ 2 (``below_to``). The tail sum of a
    diverged run is NaN and unused. Every summary of :func:`simulate` is bit-identical to
    freezing the state at the last finite iterate (the tests compare them)."""

    def body(s, t):
        x2, l2 = scaled_step(s["x"], s["l"], eps, e)
        ok = jnp.isfinite(x2) & jnp.isfinite(l2)
        t1 = (t + 1).astype(jnp.int32)  # index of the new iterate
        m = jnp.where(ok, jnp.maximum(s["max_l"], l2), s["max_l"])
        return {"x": x2, "l": l2, "max_l": m, "ok_to": jnp.where(ok, t1, s["ok_to"]),
                "below_to": jnp.where(m <= 2, t1 + 1, s["below_to"]),
                "tail": s["tail"] + jnp.where(t1 >= tail_from, l2, 0.0)}, None

    state, _ = jax.lax.scan(body, state, t0 + jnp.arange(n))
    return state


@functools.partial(jax.jit, static_argnames=("n", "block"))
def _advance_batch(state, eps, e, t0, n, tail_from, block):
    """``n`` steps of a batch (B = k·block runs): ``lax.map`` over blocks of ``block`` runs,
    each a ``vmap`` of the scan over steps. Each step of a block is a few fused loops over
    its runs, with a fixed dispatch cost; a block sized to the L2 cache (:data:`BLOCK`)
    keeps the state in cache without paying that cost for every few thousand runs."""
    B = state["x"].shape[0]
    blocks = jax.tree_util.tree_map(lambda a: a.reshape(B // block, block), state)
    run = lambda s: sweep(_advance, batched={"state": s}, eps=eps, e=e, t0=t0, n=n, tail_from=tail_from)
    out = jax.lax.map(run, blocks)
    return jax.tree_util.tree_map(lambda a: a.reshape(B), out)


#: Runs per block in :func:`simulate`: 6 states of 16,384 runs (4 float64, 2 int32) ≈ 0.66 MB,
#: within the L2 cache (``benchmarks/quadratic2d.py --blocks`` measures the choice).
BLOCK = 16384


def _block_size(B: int) -> int:
    """Runs per block for a batch of B: at most :data:`BLOCK`, as equal as possible and a
    multiple of 8 (one AVX-512 vector), so that padding wastes under 8 runs per block."""
    nblocks = -(-B // BLOCK)
    return -(-(-(-B // nblocks)) // 8) * 8


@x64
def simulate(eps: float, lr: float, theta0: Float[ArrayLike, "B 2"], steps: int, *, E: float = 0.0, tail: int = 100,
             chunk: int = 20_000, progress: Callable[[int], None] | None = None) -> dict:
    """GD from a batch of initialisations, summarised per run without storing trajectories.

    Iterates the exact (z, λ) map (identical to parameter-space GD, see the tests) for
    ``steps`` steps as one ``vmap`` (:func:`eoslab.dynamics.sweep`) of a ``lax.scan``, in
    chunks of ``chunk`` steps so that ``progress(steps_done)`` can be called between them.

    Args:
      theta0: (B, 2) initialisations in Q's eigenbasis.
      tail: the limit is the mean of ηλ_t/2 over the iterates t = steps−tail+1 … steps
        (an even ``tail`` averages out the period-2 oscillation before λ has converged; at
        EoS z → 0 geometrically, so λ converges and the mean equals the last value).
    Returns: a dict of (B,) arrays with keys :data:`SUMMARY_KEYS`.
    """
    eps = check_eps(eps)
    lr = check_positive("step size", lr)
    steps = check_positive_int("steps", steps)
    tail = min(check_positive_int("tail", tail), steps)
    theta0 = jnp.asarray(theta0, jnp.float64)
    if theta0.ndim != 2 or theta0.shape[1] != 2 or theta0.shape[0] == 0:
        raise EoslabError(f"theta0 must have shape (B, 2) with B >= 1, got {theta0.shape}")
    B = theta0.shape[0]
    block = _block_size(B)
    pad = -B % block  # padded runs repeat the first one and are dropped at the end
    theta0 = jnp.concatenate([theta0, jnp.broadcast_to(theta0[:1], (pad, 2))])
    z0, lam0 = from_theta(theta0, eps, E)
    state = _init_state(lr * z0, lr * lam0)
    args = (jnp.float64(eps), jnp.float64(lr * E))
    done = 0
    with eoslab_progress.task(f"GD, {B:,} runs", steps, "steps") as bar:
        while done < steps:
            n = min(chunk, steps - done)
            state = _advance_batch(state, *args, jnp.asarray(done), n, jnp.asarray(steps - tail + 1), block)
            done += n
            bar.update(done)
            if progress is not None:
                progress(done)
    state = jax.tree_util.tree_map(lambda a: a[:B], state)
    div = ~(jnp.isfinite(state["x"]) & jnp.isfinite(state["l"]))
    nan = jnp.nan
    return {
        "ratio": jnp.where(div, nan, state["tail"] / (2 * tail)),
        "final_ratio": jnp.where(div, nan, state["l"] / 2),
        "max_ratio": state["max_l"] / 2,
        "first_cross": jnp.where(state["max_l"] > 2, state["below_to"], -1).astype(jnp.int64),
        "final_z": jnp.where(div, nan, state["x"] / lr),
        "diverged": div,
        "diverged_at": jnp.where(div, state["ok_to"] + 1, -1).astype(jnp.int64),
    }


@x64
def count_outcomes(summary: dict, threshold: float = EOS_THRESHOLD) -> dict:
    """Counts and quantiles of a :func:`simulate` summary: a run ended at the EoS if it crossed
    ηλ = 2 at some step and its λ∞η/2 > ``threshold``, below it otherwise (``n_below_near_edge``:
    those that end above the threshold without having crossed), unless it diverged."""
    r = np.asarray(summary["ratio"])
    div = np.asarray(summary["diverged"])
    crossed = np.asarray(summary["first_cross"]) >= 0
    # At the EoS = crossed ηλ = 2 at some step and ended near the edge; a run that ends above
    # the threshold without ever crossing converged below the edge (it sharpened towards it).
    eos = ~div & crossed & (r > threshold)
    below = ~div & ~eos
    q = np.quantile(r[eos], [0.05, 0.25, 0.5, 0.75, 0.95]) if eos.any() else np.full(5, np.nan)
    return {
        "n_runs": int(r.size),
        "n_eos": int(eos.sum()),
        "n_below": int(below.sum()),
        "n_diverged": int(div.sum()),
        "n_crossed_edge": int(crossed.sum()),
        "n_below_near_edge": int((below & (r > threshold)).sum()),
        "median_ratio": float(q[2]),
        "quantiles_ratio": {"q05": float(q[0]), "q25": float(q[1]), "q75": float(q[3]), "q95": float(q[4])},
        "unconverged_eos": int((eos & ~(np.abs(np.asarray(summary["final_z"])) < 1e-8)).sum()),
    }


@x64
def trajectories(eps: float, lr: float, theta0: Float[ArrayLike, "K 2"], steps: int, *, E: float = 0.0, max_points: int = 4000) -> dict:
    """Full trajectories of a few runs, by parameter-space GD (:func:`eoslab.dynamics.gd`, one
    ``sweep``), decimated to at most ``max_points`` log-spaced steps for plotting.

    Args: theta0 (K, 2) in Q's eigenbasis. Returns ``{"t": (M,), "theta": (K, M, 2),
    "ratio": (K, M) = ηλ_t/2, "eps", "lr", "E"}`` (NaN after a divergence)."""
    theta0 = jnp.asarray(theta0, jnp.float64)
    steps = check_positive_int("steps", steps)
    prob = quadratic2d.problem(eps, theta0[0], E)
    traj, _ = sweep(gd, batched={"params0": theta0}, problem=prob, lr=lr, steps=steps, k=1,
                    spectra="none", record_params=True)
    t = np.unique(np.geomspace(1, steps, max_points).astype(int) - 1)
    th = np.asarray(traj["params"])[:, t]
    return {"t": t, "theta": th, "ratio": lr * np.asarray(quadratic2d.ntk(th, eps)) / 2,
            "eps": eps, "lr": lr, "E": E}
