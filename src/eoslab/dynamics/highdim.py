"""Batched output-space GD for high-dimensional second-order models, and its analysis.

* :func:`batched_gd_output`: B step sizes on ONE model, advanced together. The curvature
  contraction ``Q(g_b, ·)`` for the whole batch is a single ``(D·P, P) × (P, B)`` matmul per
  step (Q is read once per step, not B times): that is the whole cost of a step,
  ``2·D·P²·B`` flops.
* :func:`sweep_highdim`: random models for several seeds × a batch of step sizes (one model at
  a time, since each model's Q is D·P² floats, with the batched stepper inside).
* :func:`onset_step`, :func:`summarize`, :func:`nonlinear_events`: the analysis of a
  trajectory: EoS onset, outcome, and the non-linear contribution's timing.

Trajectory rows describe the state *before* update t (as in :data:`eoslab.dynamics.TRAJECTORY_KEYS`);
arrays have a leading batch axis B and then the step axis.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from eoslab import progress
from eoslab.dynamics.gd import EOS_THRESHOLD, first_true
from eoslab.errors import EoslabError, check_memory, check_positive_int, runtime_check
from eoslab.models import second_order
from eoslab.models.second_order import SecondOrder, jacobian, predict
from eoslab.spectra.lanczos import fixed_start, lanczos
from eoslab._precision import x64
from eoslab.typing import Array, ArrayLike, Float, Int, PRNGKeyArray

NTK_METHODS = ("lanczos", "dense", "none")

#: Extra keys of a batched high-dimensional trajectory (besides loss, residual_norm, ntk_eigs,
#: eta_ntk_half, diverged, with the meanings of :data:`eoslab.dynamics.TRAJECTORY_KEYS`).
HIGHDIM_KEYS = {
    "hessian_eigs": "(1,) λ_max(∇²L) by Lanczos every `hessian_every` steps (NaN on other rows)",
    "eta_lambda_half": "η·λ_max(∇²L)/2",
    "edge": "2/η, GD's stability threshold (per row, as in every trajectory)",
    "linear_norm": "‖ηJg‖",
    "nonlinear_norm": "‖½η²Q(g,g)‖",
    "linear_top": "|u·ηJg|, u the top NTK eigenvector",
    "nonlinear_top": "|u·½η²Q(g,g)|",
}


@x64
def batched_output_step(z: Float[Array, "B D"], J: Float[Array, "B D P"], Q: Float[Array, "D P P"],
                        lrs: Float[Array, " B"], norm: float
                        ) -> tuple[Float[Array, "B D"], Float[Array, "B D P"], Float[Array, "B D"], Float[Array, "B D"]]:
    """One GD step for B runs sharing Q.

    Args: z (B, D), J (B, D, P), Q (D, P, P), lrs (B,), norm the loss normaliser.
    Returns ``(z', J', linear, nonlinear)``, the last two (B, D) with
    ``z' = z − linear + nonlinear``, ``linear = ηJg``, ``nonlinear = ½η²Q(g, g)``.
    """
    D, P = Q.shape[0], Q.shape[1]
    g = jnp.einsum("bdp,bd->bp", J, z) / norm
    # The one O(D·P²·B) contraction: (D·P, P) @ (P, B).
    Qg = (Q.reshape(D * P, P) @ g.T).reshape(D, P, -1)
    eta = lrs[:, None]
    linear = eta * jnp.einsum("bdp,bp->bd", J, g)
    nonlinear = 0.5 * eta**2 * jnp.einsum("dpb,bp->bd", Qg, g)
    J2 = J - lrs[:, None, None] * jnp.moveaxis(Qg, -1, 0)
    return z - linear + nonlinear, J2, linear, nonlinear


def _finite_rows(x):
    return jnp.all(jnp.isfinite(x.reshape(x.shape[0], -1)), axis=1)


@x64
def records_bytes(B: int, steps: int, k: int = 2) -> float:
    """Bytes of :func:`batched_gd_output`'s per-step records: about 16 + 2k float64 numbers per
    step and run, twice (the chunks and their concatenation)."""
    return 2 * 8.0 * B * steps * (16 + 2 * k)


def batched_gd_output(model: SecondOrder, lrs: Float[ArrayLike, " B"], steps: int, *, k: int = 2, ntk: str = "lanczos",
                      lanczos_iters: int = 16, hessian_every: int = 0, hessian_iters: int = 20,
                      record_nonlinear: bool = False, theta0: Float[ArrayLike, " P"] | None = None,
                      chunks: int | None = None
                      ) -> tuple[dict[str, Float[Array, "B T ..."]], tuple[Float[Array, "B D"], Float[Array, "B D P"]]]:
    """GD on one second-order model for a batch of step sizes ``lrs`` (B,), in output space.

    Args:
      model: the model (Q (D, P, P) is shared by the whole batch).
      lrs: step sizes (B,).
      steps: number of updates (static).
      k: number of top NTK eigenvalues recorded (NTK = J Jᵀ/norm, so ηλ = 2 is the edge).
      ntk: ``"lanczos"`` (warm-started from the previous step's top eigenvector, step 0
        from the deterministic :func:`~eoslab.spectra.lanczos.fixed_start`; ``lanczos_iters``
        products of cost O(D·P)), ``"dense"`` (eigvalsh of D×D) or ``"none"``.
      hessian_every: if > 0, the top Hessian eigenvalue by Lanczos (``hessian_iters``
        products ``v ↦ (Jᵀ(Jv) + Q(z)v)/norm``, each as costly as a GD step) every that many
        steps; NaN on other rows. 0 skips it.
      record_nonlinear: record ‖ηJg‖, ‖½η²Q(g,g)‖ and their projections on the top NTK
        eigenvector (needs ``ntk="lanczos"``).
      chunks: the steps run as this many ``lax.scan`` calls of one compiled length (the last
        one's extra steps inactive), progress reported to :mod:`eoslab.progress` after each;
        the numbers are bit-identical to one scan (tested). None: :data:`PROGRESS_CHUNKS` when a
        progress listener is active and ``steps`` ≥ 100, else 1.

    Returns ``(trajectory, (z_final (B, D), J_final (B, D, P)))``; trajectory arrays are
    (B, steps, ...). A run whose state overflows is frozen and flagged ``diverged`` from that
    step on (its rows NaN); the others go on.
    """
    lrs = jnp.atleast_1d(jnp.asarray(lrs, model.Q.dtype))
    check_positive_int("steps", steps)
    check_positive_int("k", k)
    if ntk not in NTK_METHODS:
        raise EoslabError(f"unknown NTK method {ntk!r}; expected one of {NTK_METHODS}")
    if record_nonlinear and ntk != "lanczos":
        raise EoslabError("record_nonlinear needs ntk='lanczos' (the top eigenvector)")
    if int(hessian_every) != hessian_every or hessian_every < 0:
        raise EoslabError(f"hessian_every must be a non-negative integer, got {hessian_every!r}")
    runtime_check(jnp.all((lrs > 0) & jnp.isfinite(lrs)), "step sizes must be finite and positive", lrs)
    check_memory(f"steps = {steps:,} for {lrs.shape[0]} step sizes", records_bytes(lrs.shape[0], steps, k),
                 "use fewer steps")
    theta0 = model.theta0 if theta0 is None else theta0
    if chunks is None:
        chunks = PROGRESS_CHUNKS if progress.active() and steps >= 100 else 1
    chunks = max(1, min(check_positive_int("chunks", chunks), steps))
    length = -(-steps // chunks)  # one compiled chunk length; the last chunk's surplus is inactive
    static = dict(k=k, ntk=ntk, lanczos_iters=lanczos_iters, hessian_every=int(hessian_every),
                  hessian_iters=hessian_iters, record_nonlinear=record_nonlinear)
    carry = _initial_carry(model, lrs, theta0)
    parts = []
    with progress.task(f"GD on a second-order model (D={model.Q.shape[0]}, P={model.Q.shape[1]}), "
                       f"{lrs.shape[0]} step sizes", steps, "steps") as bar:
        for start in range(0, steps, length):
            carry, traj = _advance(model, lrs, carry, jnp.asarray(start), jnp.asarray(steps), length=length,
                                   **static)
            parts.append(traj)
            bar.update(min(start + length, steps))
    traj = parts[0] if len(parts) == 1 else {key: jnp.concatenate([p[key] for p in parts]) for key in parts[0]}
    traj = {key: jnp.moveaxis(x[:steps], 0, 1) for key, x in traj.items()}
    return traj, (carry[0], carry[1])


#: Chunks of :func:`batched_gd_output` when progress is shown (the bar moves every ~10 % of the run).
PROGRESS_CHUNKS = 10


@jax.jit
def _initial_carry(model, lrs, theta0):
    D, P = model.Q.shape[0], model.Q.shape[1]
    B = lrs.shape[0]
    dtype = model.Q.dtype
    z0 = jnp.broadcast_to(predict(theta0, model), (B, D))
    J0 = jnp.broadcast_to(jacobian(theta0, model), (B, D, P))
    warm0 = jnp.broadcast_to(fixed_start(D, dtype), (B, D))
    warm_h0 = jnp.broadcast_to(fixed_start(P, dtype, 1), (B, P))
    return (z0, J0, warm0, warm_h0, jnp.zeros(B, bool))


@functools.partial(jax.jit, static_argnames=("length", "k", "ntk", "lanczos_iters", "hessian_every",
                                             "hessian_iters", "record_nonlinear"))
def _advance(model, lrs, carry0, start, total, *, length, k, ntk, lanczos_iters, hessian_every, hessian_iters,
             record_nonlinear):
    """Steps start … start+length−1 from ``carry0``; a step t ≥ total leaves the carry as it
    is (its rows are dropped by the caller). Rows are (length, B, ...)."""
    norm = model.normaliser
    Q = model.Q
    D, P = Q.shape[0], Q.shape[1]
    B = lrs.shape[0]
    dtype = Q.dtype
    nan_b = jnp.full((B,), jnp.nan, dtype)

    def ntk_spectrum(J, warm):
        if ntk == "dense":
            ev = jnp.linalg.eigvalsh(jnp.einsum("bdp,bep->bde", J, J) / norm)[:, ::-1][:, :k]
            return ev, warm
        if ntk == "none":
            return jnp.full((B, k), jnp.nan, dtype), warm

        def one(Jb, w):
            r = lanczos(lambda u: Jb @ (Jb.T @ u) / norm, w, lanczos_iters, k)
            return r.values, r.vectors[0]

        return jax.vmap(one)(J, warm)

    def hessian_top(z, J, warm_h):
        def one(zb, Jb, w):
            Qz = jnp.einsum("d,dpq->pq", zb, Q)
            r = lanczos(lambda v: (Jb.T @ (Jb @ v) + Qz @ v) / norm, w, hessian_iters, 1)
            return r.values[0], r.vectors[0]

        return jax.vmap(one)(z, J, warm_h)

    def body(carry, t):
        z, J, warm, warm_h, div = carry
        loss = jnp.sum(z**2, axis=1) / (2 * norm)
        ev, warm2 = ntk_spectrum(J, warm)
        rec = {"loss": loss, "residual_norm": jnp.linalg.norm(z, axis=1), "ntk_eigs": ev,
               "eta_ntk_half": lrs * ev[:, 0] / 2, "edge": 2.0 / lrs}
        if hessian_every:
            h, warm_h2 = jax.lax.cond(t % hessian_every == 0, lambda: hessian_top(z, J, warm_h),
                                      lambda: (nan_b, warm_h))
            rec["hessian_eigs"], rec["eta_lambda_half"] = h[:, None], lrs * h / 2
        else:
            warm_h2 = warm_h
        z2, J2, lin, nonlin = batched_output_step(z, J, Q, lrs, norm)
        if record_nonlinear:
            u = warm2
            rec["linear_norm"] = jnp.linalg.norm(lin, axis=1)
            rec["nonlinear_norm"] = jnp.linalg.norm(nonlin, axis=1)
            rec["linear_top"] = jnp.abs(jnp.sum(u * lin, axis=1))
            rec["nonlinear_top"] = jnp.abs(jnp.sum(u * nonlin, axis=1))
        # Divergence per run: from the first non-finite loss or state, the run is frozen.
        div = div | ~(jnp.isfinite(loss) & _finite_rows(z2) & _finite_rows(J2))
        rec = {key: jnp.where(div.reshape((B,) + (1,) * (x.ndim - 1)), jnp.nan, x) for key, x in rec.items()}
        rec["diverged"] = div
        keep = lambda new, old: jnp.where(div.reshape((B,) + (1,) * (new.ndim - 1)), old, new)
        new_carry = (keep(z2, z), keep(J2, J), keep(warm2, warm), keep(warm_h2, warm_h), div)
        # a step past the end (the last chunk's surplus) changes nothing
        new_carry = jax.tree_util.tree_map(lambda a, b: jnp.where(t < total, a, b), new_carry, carry)
        return new_carry, rec

    return jax.lax.scan(body, carry0, start + jnp.arange(length))


@x64
def sweep_highdim(keys: PRNGKeyArray, lrs: Float[ArrayLike, " B"], steps: int, *, D: int, P: int, sigma_z: float = 1.0,
                  sigma_j: float = 1.0, sigma_q: float = 1.0, **kw: Any) -> dict[str, Float[Array, "S B T ..."]]:
    """Random models ``second_order.random(key, D, P, σ_z, σ_J, σ_q)`` for each key in ``keys``
    (S, 2) × every step size in ``lrs`` (B,). Models are built and run one seed at a time (a
    model's Q is D·P² floats; one compiled program serves them all), the B step sizes batched;
    progress is reported per model and, inside a model, per chunk of steps. Keyword arguments go
    to :func:`batched_gd_output`. Returns trajectories (S, B, steps, ...)."""
    lrs = jnp.asarray(lrs, jnp.float64)
    keys = jnp.asarray(keys)
    parts = []
    with progress.task(f"random second-order models (D={D}, P={P}, σ_z={sigma_z:g})", keys.shape[0],
                       "models") as bar:
        for key in keys:
            m = second_order.random(key, D, P, sigma_z, sigma_j, sigma_q)
            parts.append(batched_gd_output(m, lrs, steps, **kw)[0])
            bar.advance(1)
    return {k: jnp.stack([p[k] for p in parts]) for k in parts[0]}


# ----------------------------------------------------------------------------- analysis
@x64
def onset_step(eta_lambda_half: Float[ArrayLike, "*batch T"], threshold: float = 0.95) -> Int[Array, "*batch"]:
    """First step t with ``ηλ_max/2 ≥ threshold`` (along the last axis), −1 if never.
    NaN rows (not computed, or diverged) never count."""
    x = jnp.asarray(eta_lambda_half)
    return first_true(jnp.nan_to_num(x, nan=-jnp.inf) >= threshold)


def _mean_from(x, start, valid=None):
    """Mean of ``x[t]`` over finite rows with ``t ≥ start`` (NaN when start < 0 or no rows)."""
    x = np.asarray(x, float)
    if start < 0:
        return float("nan")
    tail = x[start:]
    tail = tail[np.isfinite(tail)]
    return float(tail.mean()) if tail.size else float("nan")


OUTCOMES = ("converged", "eos", "diverged")


@x64
def outcome(diverged: bool, onset: int, final_eta_half: float, eos_level: float = EOS_THRESHOLD) -> str:
    """``diverged`` if the run overflowed; ``eos`` if it reached the edge (``onset ≥ 0``) and
    its final ηλ_max/2 (mean of the last rows) is still ≥ ``eos_level``; else ``converged``
    (it never reached the edge, or left it and relaxed below, as after a catapult)."""
    if diverged:
        return "diverged"
    if onset >= 0 and final_eta_half >= eos_level:
        return "eos"
    return "converged"


@x64
def summarize(traj: dict, lrs: Float[ArrayLike, " B"], threshold: float = 0.95, tail: int = 200) -> list[dict]:
    """Per-run scalars of a batched trajectory (B, steps, ...) (or (S, B, ...): flattened).

    For each run: ``lr``, ``onset_ntk`` / ``onset_hessian`` (first step with ηλ/2 ≥
    ``threshold``; −1 never; hessian only if recorded), ``final_eta_ntk_half`` (mean over the
    last ``tail`` finite rows: at EoS ηλ oscillates), ``mean_eta_ntk_half_after_onset``
    (time average from the onset on), the same for the Hessian when recorded,
    ``final_ntk2`` (second NTK eigenvalue, same tail mean), ``eta_ntk2_half``, ``final_loss``,
    ``initial_loss``, ``diverged``, ``diverged_at`` and ``outcome`` (:func:`outcome`).
    """
    lead = traj["loss"].shape[:-1]
    lrs = np.broadcast_to(np.asarray(lrs, float), lead).reshape(-1)
    flat = {k: np.asarray(v).reshape((-1,) + np.asarray(v).shape[len(lead):]) for k, v in traj.items()}
    rows = []
    for i in range(lrs.size):
        lr = float(lrs[i])
        eh = flat["eta_ntk_half"][i]
        div = bool(flat["diverged"][i, -1])
        n_fin = int(np.sum(~flat["diverged"][i]))
        on = int(onset_step(eh, threshold))
        last = max(n_fin - tail, 0)
        row = {
            "lr": lr, "onset_ntk": on,
            "final_eta_ntk_half": _mean_from(eh[:n_fin], last),
            "mean_eta_ntk_half_after_onset": _mean_from(eh[:n_fin], on),
            "final_ntk2": _mean_from(flat["ntk_eigs"][i, :n_fin, 1], last) if flat["ntk_eigs"].shape[-1] > 1 else float("nan"),
            "initial_loss": float(flat["loss"][i, 0]),
            "final_loss": _mean_from(flat["loss"][i, :n_fin], last),
            "diverged": div,
            "diverged_at": int(np.argmax(flat["diverged"][i])) if div else -1,
        }
        row["eta_ntk2_half"] = lr * row["final_ntk2"] / 2
        if "eta_lambda_half" in flat:
            hh = flat["eta_lambda_half"][i]
            onh = int(onset_step(hh, threshold))
            row["onset_hessian"] = onh
            row["final_eta_lambda_half"] = _mean_from(hh[:n_fin], last)
            row["mean_eta_lambda_half_after_onset"] = _mean_from(hh[:n_fin], onh)
        row["outcome"] = outcome(div, on, row["final_eta_ntk_half"])
        rows.append(row)
    return rows


@x64
def smoothed_ratio(nonlinear: Float[ArrayLike, " T"], linear: Float[ArrayLike, " T"], window: int = 10
                   ) -> Float[np.ndarray, " T"]:
    """``√(Σ nonlinear²) / √(Σ linear²)`` over a trailing window of ``window`` steps (1-D
    arrays over steps; shorter windows at the start). At the edge the top-mode residual
    oscillates with period 2 and crosses zero, so the step-by-step ratio of projections spikes;
    the windowed RMS ratio measures the size of the two terms, not their phase."""
    n2 = np.cumsum(np.nan_to_num(np.asarray(nonlinear, float)) ** 2)
    l2 = np.cumsum(np.nan_to_num(np.asarray(linear, float)) ** 2)
    shift = lambda c: np.concatenate([np.zeros(window), c[:-window]]) if c.size > window else np.zeros_like(c)
    num, den = n2 - shift(n2), l2 - shift(l2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(num / den)


@x64
def nonlinear_events(eta_half: Float[ArrayLike, " T"], nonlinear: Float[ArrayLike, " T"],
                     linear: Float[ArrayLike, " T"], threshold: float = 0.95, drop: float = 0.02,
                     growth: float = 10.0, window: int = 2) -> dict:
    """Timing of the non-linear contribution along ONE trajectory (1-D arrays over steps).

    Definitions (steps; −1 when the event does not happen):
      * ``ratio = smoothed_ratio(nonlinear, linear, window)`` (default: ‖½η²Q(g,g)‖ over ‖ηJg‖,
        RMS over the period-2 window);
      * ``onset``: first t with ηλ_max/2 ≥ ``threshold`` (:func:`onset_step`);
      * ``fall``: first t after the onset with λ_t < (1 − ``drop``)·max_{s≤t} λ_s (the top
        eigenvalue falls back); ``peak`` = argmax of λ on [0, fall];
      * ``sharpening_ratio``: median of ``ratio`` over the sharpening phase [0, onset);
      * ``grow``: first t ≥ onset with ``ratio[t] ≥ growth × min_{onset≤s≤t} ratio[s]`` (the
        non-linear term has grown ``growth``-fold from its low point at the edge);
      * ``ratio_at_fall``: ``ratio[fall]``.
    ``ok`` ⇔ ``0 ≤ grow ≤ fall`` and ``ratio_at_fall > sharpening_ratio``: small during
    sharpening, growing before the top eigenvalue falls.
    """
    eh = np.asarray(eta_half, float)
    ratio = smoothed_ratio(nonlinear, linear, window)
    on = int(onset_step(eh, threshold))
    out = {"onset": on, "fall": -1, "peak": -1, "grow": -1, "sharpening_ratio": float("nan"),
           "ratio_at_fall": float("nan"), "ok": False}
    if on <= 0:
        return out
    steps = np.arange(eh.size)
    running = np.fmax.accumulate(np.nan_to_num(eh, nan=-np.inf))
    fell = np.nonzero((steps > on) & (eh < (1 - drop) * running))[0]
    out["sharpening_ratio"] = float(np.nanmedian(ratio[:on]))
    low = np.fmin.accumulate(np.nan_to_num(ratio[on:], nan=np.inf))
    grown = np.nonzero(ratio[on:] >= growth * low)[0]
    out["grow"] = int(on + grown[0]) if grown.size else -1
    if fell.size:
        f = int(fell[0])
        out["fall"], out["peak"] = f, int(np.nanargmax(eh[: f + 1]))
        out["ratio_at_fall"] = float(ratio[f])
        out["ok"] = bool(0 <= out["grow"] <= f and out["ratio_at_fall"] > out["sharpening_ratio"])
    return out


@x64
def natural_scales(D: int, P: int, sharpening: float = 0.15) -> tuple[float, float]:
    """``(σ_J, σ_q)`` for a random model whose dynamics reach the edge within ~10³ steps.

    ``σ_J = √D/(√D + √P)`` puts the initial top NTK eigenvalue (J Jᵀ/D) near 1, so η ≈ 1 starts
    at ηλ/2 ≈ ½. ``σ_q = sharpening·√(D/P)`` fixes the Theorem-2 sharpening rate in the
    package's time (loss ‖z‖²/(2D)): E[λ̈]/E[λ] → 2Pσ_q²σ_z²/D = 2·sharpening²·σ_z², the same
    for every D/P. See docs/theorem2.md ("Choosing scales").
    """
    return float(np.sqrt(D) / (np.sqrt(D) + np.sqrt(P))), float(sharpening * np.sqrt(D / P))
