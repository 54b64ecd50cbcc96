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

import contextlib
import functools
import os
from concurrent.futures import ThreadPoolExecutor
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
    B = x.shape[0]
    return {"z": jax.lax.complex(x, l), "max_l": l, "tail": jnp.zeros_like(x), "div": jnp.zeros(B, bool),
            "div_at": jnp.full(B, -1, jnp.int32), "first_cross": jnp.where(l > 2, 0, -1).astype(jnp.int32)}


def _cstep(z, eps, e):
    """:func:`scaled_step` on the packed state z = x + iℓ (complex128). One output array
    makes one fused loop per step for XLA:CPU (two real outputs make two loops, each
    recomputing the whole map); the barrier keeps the summaries that read ℓ from being fused
    into, i.e. recomputing, the map as well."""
    x2, l2 = scaled_step(jnp.real(z), jnp.imag(z), eps, e)
    return jax.lax.optimization_barrier(jax.lax.complex(x2, l2))


def _steps(body, state, t0, n):
    """``n`` (traced) steps of ``body(state, t)`` from global step ``t0``: one compilation for
    every segment length."""
    return jax.lax.fori_loop(t0, t0 + n, lambda t, s: body(s, t), state)


def _exact(state, eps, e, t0, n, tail):
    """``n`` steps of a block with every summary updated at every step; a run is frozen at its
    last finite iterate (``div`` from the first non-finite one, at step ``div_at``)."""

    def body(s, t):
        z2 = _cstep(s["z"], eps, e)
        bad = ~jnp.isfinite(z2) & ~s["div"]
        div = s["div"] | bad
        z2 = jnp.where(div, s["z"], z2)
        l2 = jnp.imag(z2)
        t1 = (t + 1).astype(jnp.int32)  # index of the new iterate
        return {"z": z2, "max_l": jnp.maximum(s["max_l"], l2), "tail": s["tail"] + l2 if tail else s["tail"],
                "div": div, "div_at": jnp.where(bad, t1, s["div_at"]),
                "first_cross": jnp.where((s["first_cross"] < 0) & (l2 > 2), t1, s["first_cross"])}

    return _steps(body, state, t0, n)


def _fast(state, eps, e, t0, n, tail):
    """The same ``n`` steps with only what changes when nothing happens: the map, the running
    maximum of ℓ and (in the tail) its sum."""
    keys = ("z", "max_l") + (("tail",) if tail else ())

    def body(s, t):
        z2 = _cstep(s["z"], eps, e)
        l2 = jnp.imag(z2)
        out = {"z": z2, "max_l": jnp.maximum(s["max_l"], l2)}
        if tail:
            out["tail"] = s["tail"] + l2
        return out

    return _steps(body, {k: state[k] for k in keys}, t0, n)


def _segment(state, eps, e, t0, n, tail):
    """``n`` steps of one block: the fast steps, and the exact ones again from the same start
    when a live run of the block diverged or crossed ηλ = 2 during them. Without such an event
    the exact path would do the fast path's arithmetic and only leave the other summaries as
    they are, so the result is that of exact steps throughout."""
    fast = _fast(state, eps, e, t0, n, tail)
    live = ~state["div"]
    crossed = (state["first_cross"] < 0) & ~(fast["max_l"] <= 2)
    event = jnp.any(live & (~jnp.isfinite(fast["z"]) | crossed))

    def quiet():
        out = dict(state)
        out.update({k: jnp.where(live, v, state[k]) for k, v in fast.items()})
        return out

    return jax.lax.cond(event, lambda: _exact(state, eps, e, t0, n, tail), quiet)


#: Per-compilation XLA options of the sweep (not process flags): LLVM may use 512-bit vectors
#: where the CPU has them (AVX-512; XLA:CPU's default is 256 bits, ignored elsewhere).
_XLA_OPTIONS = {"xla_cpu_prefer_vector_width": 512}

#: Runs per block in :func:`simulate`: 6 state arrays (41 bytes a run) of 16,384 runs ≈ 0.7 MB, within the L2 cache
#: (``benchmarks/quadratic2d.py --blocks`` times other sizes).
BLOCK = 16384

#: Segments of :func:`simulate`: steps [0, FIRST), then [2^k, 2^(k+1)) up to ``SEGMENT``, then
#: every ``SEGMENT`` steps (a block whose runs cross the edge or diverge in a segment redoes it
#: with every summary; the events of a sweep are few and mostly early, so early segments are
#: short and late ones long). Both are powers of two.
FIRST = 4
SEGMENT = 1024


def _segment_end(t, stop):
    """End of the segment that starts at global step ``t`` (traced int32), cut at ``stop``."""
    pow2 = jnp.left_shift(jnp.int32(1), 32 - jax.lax.clz(jnp.maximum(t, 1)))  # smallest 2^k > t
    nxt = jnp.where(t < SEGMENT, jnp.maximum(pow2, FIRST), (t // SEGMENT + 1) * SEGMENT)
    return jnp.minimum(nxt, stop)


@functools.partial(jax.jit, static_argnames=("block", "tail"), compiler_options=_XLA_OPTIONS)
def _advance_batch(state, eps, e, start, stop, block, tail):
    """Steps ``start`` … ``stop`` (traced) of a batch (B = k·block runs), block by block
    (``lax.map``; a block's state is a few arrays of ``block`` runs, within the L2 cache), each
    block in segments (:func:`_segment_end`)."""
    B = state["z"].shape[0]

    def run_block(s):
        def seg(c):
            t, s = c
            t1 = _segment_end(t, stop)
            return t1, _segment(s, eps, e, t, t1 - t, tail)

        return jax.lax.while_loop(lambda c: c[0] < stop, seg, (start, s))[1]

    blocks = jax.tree_util.tree_map(lambda a: a.reshape(B // block, block), state)
    out = jax.lax.map(run_block, blocks)
    return jax.tree_util.tree_map(lambda a: a.reshape(B), out)


def _devices() -> list:
    """The devices :func:`simulate` places its groups on, in turn: every local CPU device when
    JAX runs on the CPU (one, unless the process set
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``), else the default device."""
    devs = jax.local_devices()
    return devs if devs[0].platform == "cpu" else devs[:1]


#: Threads :func:`simulate` advances its groups of blocks with, at most one per core (CPU
#: only). Calls made from one Python thread run one after the other on a CPU device; calls
#: from several threads run concurrently, so ``THREADS = 2`` lets two cores share a sweep. On
#: a shared 2-core machine under load (6–9) that cost 10–20 % more CPU time and gave no wall-time
#: gain, so the default is one; ``benchmarks/quadratic2d.py`` times both.
THREADS = 1


def _workers() -> int:
    """Groups :func:`simulate` runs at the same time, one thread each (:data:`THREADS`, at most
    the cores this process may use; 1 off the CPU)."""
    if THREADS <= 1 or jax.default_backend() != "cpu":
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(THREADS, cores))


def _layout(B: int, workers: int = 1) -> tuple[int, int, int]:
    """``(groups, blocks per group, runs per block)`` for a batch of B runs and ``workers``
    threads (one group each, at most one group per block). Blocks hold at most :data:`BLOCK`
    runs, as equal as possible and a multiple of 8 (one AVX-512 vector), so that padding
    wastes under 8 runs per block."""
    nblocks = -(-B // BLOCK)
    groups = max(1, min(workers, nblocks))
    nblocks = -(-nblocks // groups) * groups
    return groups, nblocks // groups, -(-(-(-B // nblocks)) // 8) * 8


def _phases(steps: int, tail: int, chunk: int) -> list[tuple[int, int, bool]]:
    """``(start, stop, in_tail)`` of the calls of a run: cut where the tail starts and at every
    multiple of ``chunk`` (where progress is reported)."""
    cuts = sorted({0, steps - tail, steps, *range(0, steps, chunk)})
    return [(a, b, a >= steps - tail) for a, b in zip(cuts[:-1], cuts[1:])]


@x64
def simulate(eps: float, lr: float, theta0: Float[ArrayLike, "B 2"], steps: int, *, E: float = 0.0, tail: int = 100,
             chunk: int = 20_000, progress: Callable[[int], None] | None = None) -> dict:
    """GD from a batch of initialisations, summarised per run without storing trajectories.

    Iterates the exact (z, λ) map (identical to parameter-space GD, see the tests) for
    ``steps`` steps, blocks of runs one after the other, each block in segments of
    (at most :data:`SEGMENT`) steps that keep only x + iℓ (one complex128 array, so one fused
    loop per step) and max ℓ up to date unless a run of the block crosses the edge or diverges
    in the segment (then the segment is redone with every summary, bit-identical);
    ``progress(steps_done)`` is called after every ``chunk`` steps. With :data:`THREADS` > 1
    the blocks are split into groups, each advanced by its own thread (a process with several
    CPU devices places the groups on them in turn); the results do not depend on the split,
    bit for bit.

    Args:
      theta0: (B, 2) initialisations in Q's eigenbasis.
      tail: the limit is the mean of ηλ_t/2 over the iterates t = steps−tail+1 … steps
        (an even ``tail`` averages out the period-2 oscillation before λ has converged; at
        EoS z → 0 geometrically, so λ converges and the mean equals the last value).
    Returns: a dict of (B,) arrays with keys :data:`SUMMARY_KEYS`; a run that diverges is
    frozen at its last finite iterate.
    """
    eps = check_eps(eps)
    lr = check_positive("step size", lr)
    steps = check_positive_int("steps", steps)
    tail = min(check_positive_int("tail", tail), steps)
    chunk = check_positive_int("chunk", chunk)
    theta0 = jnp.asarray(theta0, jnp.float64)
    if theta0.ndim != 2 or theta0.shape[1] != 2 or theta0.shape[0] == 0:
        raise EoslabError(f"theta0 must have shape (B, 2) with B >= 1, got {theta0.shape}")
    B = theta0.shape[0]
    devices = _devices()
    groups, per_group, block = _layout(B, _workers())
    z0, lam0 = from_theta(theta0, eps, E)  # op by op, as the references round
    states = _start(z0, lam0, jnp.float64(lr), groups * per_group * block - B, groups)
    if len(devices) > 1:
        states = [jax.device_put(s, devices[g % len(devices)]) for g, s in enumerate(states)]
    args = (jnp.float64(eps), jnp.float64(lr * E))
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(eoslab_progress.task(f"GD, {B:,} runs", steps, "steps"))
        pool = stack.enter_context(ThreadPoolExecutor(groups)) if groups > 1 else None
        for start, done, in_tail in _phases(steps, tail, chunk):
            phase = (*args, jnp.int32(start), jnp.int32(done), block, in_tail)
            if pool is None:
                states = [_advance_batch(states[0], *phase)]
            else:  # one thread per group: the cores share the sweep
                states = list(pool.map(x64()(lambda s: jax.block_until_ready(_advance_batch(s, *phase))), states))
            if done % chunk == 0 or done == steps:
                bar.update(done)
                if progress is not None:
                    progress(done)
    if len(devices) > 1:
        states = [jax.device_put(s, devices[0]) for s in states]
    return _summaries(states, jnp.float64(lr), tail, B)


@functools.partial(jax.jit, static_argnames=("pad", "groups"))
def _start(z0, lam0, lr, pad, groups):
    """The initial state of a batch padded by ``pad`` runs (copies of the first, dropped at the
    end), split into ``groups`` equal parts."""
    z0, lam0 = (jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad,))]) for a in (z0, lam0))
    state = _init_state(lr * z0, lr * lam0)
    return [jax.tree_util.tree_map(lambda a: a.reshape(groups, -1)[g], state) for g in range(groups)]


@functools.partial(jax.jit, static_argnames=("tail", "B"))
def _summaries(states, lr, tail, B):
    """The :data:`SUMMARY_KEYS` of the first ``B`` runs of the final states of the groups."""
    state = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a)[:B], *states)
    div = state["div"]
    x, l = jnp.real(state["z"]), jnp.imag(state["z"])
    nan = jnp.nan
    return {
        "ratio": jnp.where(div, nan, state["tail"] / (2 * tail)),
        "final_ratio": jnp.where(div, nan, l / 2),
        "max_ratio": state["max_l"] / 2,
        "first_cross": state["first_cross"].astype(jnp.int64),
        "final_z": jnp.where(div, nan, x / lr),
        "diverged": div,
        "diverged_at": state["div_at"].astype(jnp.int64),
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
