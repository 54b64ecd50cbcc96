"""Warm-started block Davidson for the top-k eigenpairs of a slowly changing symmetric operator.

Along a GD trajectory the loss Hessian (or the NTK) moves a little at each step, so last step's
eigenvectors are excellent starting vectors for this step. :func:`track` carries a block of
``b = k + guard`` orthonormal vectors (the top-k Ritz vectors and guard vectors that watch the
eigenvalues just below) and, at each call:

1. multiplies the k tracked vectors of the (orthonormal) block in one ``vmap``-ped call, or
   takes their products from the caller (``products``, e.g. computed with the training step's
   gradient in one pass); if fewer than ``guard_every − 1`` calls in a row skipped the guards
   and the tracked values pass the guard-skipping check (:func:`_skip_guards`), it stops: k
   products;
2. otherwise multiplies the guards too and starts from the block, except at the first call
   (count 0: the block is grown into a block Krylov space of ``cold_basis`` vectors, because a
   random block can converge to a lower member of a top cluster larger than the block and pass
   the stopping rule) and every ``check_every`` calls (``check_depth`` Lanczos vectors from a
   pseudo-random vector in the complement of the block join it, so an eigenvalue above the
   tracked set that the warm start cannot see is found);
3. Rayleigh-Ritz, error estimates of the top-k values (:func:`_errors`), and while they exceed
   ``max(tol·|θ|, atol)``: add the residual of the Ritz vector that limits the estimate most
   (block Davidson without preconditioner, i.e. a block Krylov space grown where it is needed),
   thick-restarting to the top Ritz vectors when the basis is full;
4. carries the top-b Ritz vectors, each moved by one free step of shifted subspace iteration
   (:func:`_filtered_block`: ``(A − c)u`` is known from the products) and re-orthonormalised,
   then moved along the block's motion since the last call where that motion is steady
   (:func:`_predicted_block`), their values and each tracked value's effective gap.

Error bars. For symmetric A and a unit vector v with Rayleigh quotient θ, ``‖Av − θv‖`` bounds
the distance from θ to the *nearest* eigenvalue (rigorously), which need not be the i-th
largest: it is stored with every value. That the values are the top k rests on the Krylov space
having seen the top of the spectrum (cold depth, warm start, periodic check). The stopping rule
uses the quadratic estimate ``‖R_c‖²_F / (θ_c − θ_{c+1} − ‖r_{c+1}‖)`` minimised over cuts c ≥ i
(R_c the residuals of the top c Ritz vectors, θ_{c+1} a carried tracked or guard value: its Ritz
vector within 45° of the rows the call started from), capped by the residual: inside a tight cluster the error is governed by the gap *below* the cluster. At the
block-only check it may also be ``SCALE_SAFETY·‖r‖²/g``, g the residual's effective gap measured
by an earlier call that expanded (``TrackState.scales``). Estimates, not proofs; the benchmark
checks them against a float64 reference. Measurements and the variants tried: docs/tracking.md.

Everything is a pure function of arrays (``lax.while_loop``), so :func:`track` runs inside
``jax.jit`` and ``lax.scan``. Eigenvalues are the largest *algebraic* ones.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from eoslab.errors import EoslabError, check_positive_int
from eoslab.spectra.lanczos import orthogonalize
from eoslab.spectra.operators import rows
from eoslab.typing import ArrayLike, Bool, DTypeLike, Matvec, PRNGKeyArray, PyTree

Matvec = Callable[[jax.Array], jax.Array]

#: Cosine threshold: a new eigenvalue "entered" when some direction of the new top-k
#: subspace has less than this overlap with the previous one (more than 45° away).
ENTRY_OVERLAP = 0.5 ** 0.5

#: Effective-gap error estimate at the block-only check: ``SCALE_SAFETY · ‖r‖² / g`` with g
#: the residual's effective gap measured by an earlier call; g shrinks by SCALE_DECAY at
#: each call that multiplies the guards without re-measuring it (halved after about four),
#: so that it is re-measured regularly; the calls that skip their guards leave it unchanged.
SCALE_SAFETY = 2.0
SCALE_DECAY = 0.85

#: A cut's lower Ritz value counts as carried (a usable gap end, :func:`_errors`) when its Ritz
#: vector has at least this squared norm on the span of the rows the call started from
#: (within 45° of it, the threshold of :data:`ENTRY_OVERLAP`).
CARRIED_WEIGHT = 0.5

#: The filter of the carried vectors, ``v ↦ (A − c)v`` with c halfway between the last carried
#: Ritz value and ``floor − FILTER_MARGIN·(θ₁ − floor)`` (floor: the lowest eigenvalue estimate):
#: the margin keeps the filter from amplifying the bottom of the spectrum if the estimate is high.
FILTER_MARGIN = 0.25

#: The carried block is moved along its own last motion (:func:`_predicted_block`) by
#: PREDICT_DAMPING times that motion's correlation with the one before (clipped to [0, 1]: an
#: oscillating block, e.g. at the edge of stability, is not moved), and only while every
#: principal cosine between consecutive blocks is at least PREDICT_OVERLAP (a jump, e.g. a
#: catapult, is not a motion to extrapolate).
PREDICT_DAMPING = 0.5
PREDICT_OVERLAP = 0.9


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrackState:
    """What :func:`track` carries from one call to the next (a pytree).

    Attributes:
      vectors: (b, n) orthonormal rows: the block the next call starts from, the top-b Ritz
        vectors of the last call (descending; rows ``:k`` are the tracked ones, the other
        ``b − k`` are guard vectors), each moved by one free step of shifted subspace
        iteration (:func:`_filtered_block`) and re-orthonormalised.
      values: (b,) their Ritz values (NaN before the first call).
      count: int32, number of calls to :func:`track` so far (0: the next call is cold).
      k: number of tracked eigenpairs (static).
      scales: (k,) the effective gap of each tracked value's residual measured by the last
        call that expanded the subspace (``‖r‖² / (Ritz-value rise + final error)``; 0: not yet),
        shrunk by :data:`SCALE_DECAY` at each call that multiplies the guards without
        re-measuring it.
      lazy: int32, the number of consecutive calls, up to the last one, that stopped after the
        k tracked products without multiplying the guard rows (0: the last call multiplied
        them; otherwise the guard vectors and values are that many calls old).
      floor: scalar, an estimate of the lowest eigenvalue (the smallest Ritz value of the
        first call's Krylov space, lowered by later periodic checks; NaN: unknown). It sets
        the shift of the filter applied to the carried vectors (:func:`_filtered_block`).
      drift: scalar, how much the top guard's Ritz value moved per call between the last two
        calls that multiplied the guards (0: not yet measured); a call that skips its guards
        assumes the guard rose by that much per call since (:func:`_skip_guards`).
      history: (2b, n) the filtered blocks of the last two calls before their prediction
        (:func:`_predicted_block`): rows ``b·(c % 2) : b·(c % 2 + 1)`` hold call c's (zeros:
        no call yet).
      turn: (b, b) the rotation that best aligned the block before the last call's with the
        last call's (zeros: not yet known).
      cosines: (b,) the cosines of the principal angles between those two blocks (zeros: not
        yet known).
    """

    vectors: jax.Array
    values: jax.Array
    count: jax.Array
    k: int = dataclasses.field(metadata=dict(static=True))
    scales: jax.Array | None = None
    lazy: jax.Array | None = None
    floor: jax.Array | None = None
    drift: jax.Array | None = None
    history: jax.Array | None = None
    turn: jax.Array | None = None
    cosines: jax.Array | None = None

    @property
    def block(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]


class TrackResult(NamedTuple):
    """The outcome of one :func:`track` call (all arrays; stackable by ``lax.scan``).

    values: (k,) top-k algebraic Ritz values, descending.
    residuals: (k,) ``‖A v − θ v‖``, a rigorous bound on each value's distance to the nearest
      eigenvalue (not necessarily the i-th largest).
    errors: (k,) the error estimate used by the stopping rule (≤ residuals).
    vectors: (k, n) unit Ritz vectors.
    n_products: int32, operator-vector products spent in this call (k when the guards were
      skipped; otherwise at least the block size; the first call at least ``cold_basis``).
    converged: bool, the stopping rule held (False: ``max_products`` was reached).
    entered: bool, a new eigenvalue entered the tracked top-k set since the previous call
      (the smallest cosine between the new and the previous top-k subspaces fell below
      :data:`ENTRY_OVERLAP`); always False on the first call.
    overlap: the smallest cosine of the principal angles between the new and the previous
      top-k subspaces (1: unchanged; 0: a direction is entirely new; NaN at the first call).
    """

    values: jax.Array
    residuals: jax.Array
    errors: jax.Array
    vectors: jax.Array
    n_products: jax.Array
    converged: jax.Array
    entered: jax.Array
    overlap: jax.Array


def track_init(dim: int, k: int, key: PRNGKeyArray, dtype: DTypeLike = jnp.float64,
               block: int | None = None) -> TrackState:
    """A cold tracker state: ``block`` random orthonormal vectors in R^dim.

    Args:
      dim: dimension n of the operator (P for a Hessian, N outputs for an NTK).
      k: number of top eigenpairs to track.
      key: PRNG key of the random start.
      dtype: dtype of the vectors; use the parameters' dtype (float32 networks: float32).
      block: block size b ≥ k; the ``b − k`` extra (guard) vectors watch the eigenvalues
        just below the tracked ones, which speeds up convergence and lets an eigenvalue that
        rises from below be seen entering. Default ``k + 1``; capped at ``dim``.
    """
    dim = check_positive_int("dim", dim)
    k = check_positive_int("k", k)
    if key is None:
        raise EoslabError("track_init needs an explicit PRNG key (key=jax.random.PRNGKey(seed))")
    if k > dim:
        raise EoslabError(f"cannot track k={k} eigenvalues of an operator of dimension {dim}")
    b = min(k + 1 if block is None else check_positive_int("block", block), dim)
    if b < k:
        raise EoslabError(f"block size {block} must be at least k={k}")
    X = jnp.linalg.qr(jax.random.normal(key, (dim, b), dtype))[0].T
    return TrackState(X, jnp.full((b,), jnp.nan, dtype), jnp.zeros((), jnp.int32), k,
                      jnp.zeros((k,), dtype), jnp.zeros((), jnp.int32), jnp.asarray(jnp.nan, dtype), jnp.zeros((), dtype),
                      jnp.zeros((2 * b, dim), dtype), jnp.zeros((b, b), dtype), jnp.zeros((b,), dtype))


# ---- static sizes and the loop state ------------------------------------------------------

class _Sizes(NamedTuple):
    """Static sizes of one call: k tracked, b block, n dimension, M basis capacity, nr Ritz
    pairs examined, keep (rows kept at a thick restart), cold (depth of the first call's
    Krylov space, b: none), check (basis of the periodic check, b: none), every (its period)."""
    k: int
    b: int
    n: int
    M: int
    nr: int
    keep: int
    cold: int
    check: int
    every: int


class _Basis(NamedTuple):
    """The subspace: rows ``:m`` of V (M, n) are orthonormal, AV their products, T = V AVᵀ
    (M, M) on the valid block (kept up to date one row at a time)."""
    V: jax.Array
    AV: jax.Array
    T: jax.Array
    m: jax.Array


class _Ritz(NamedTuple):
    """Rayleigh-Ritz on a basis: values (descending), coefficients Y (M, ·), the top nr Ritz
    vectors U, their residual rows R and norms."""
    theta: jax.Array
    Y: jax.Array
    U: jax.Array
    R: jax.Array
    rnorm: jax.Array


class _Loop(NamedTuple):
    """State of the expansion loop: the basis, its Ritz pairs, the top-k error estimates, their
    ratio to the requested accuracy, the Ritz vector whose residual the next product adds, and
    the products spent so far in this call."""
    basis: _Basis
    ritz: _Ritz
    err: jax.Array
    ratio: jax.Array
    target: jax.Array
    nprod: jax.Array


def _sizes(state: TrackState, k, max_basis, cold_basis, check_every, check_depth) -> _Sizes:
    b, n = state.vectors.shape
    if not 1 <= k <= b:
        raise EoslabError(f"k={k} must be between 1 and the block size {b}")
    M = min(n, b + max(8, b) if max_basis is None else int(max_basis))
    if M < b:
        raise EoslabError(f"max_basis={max_basis} is smaller than the block size {b}")
    cold = min(n, max(32, 4 * b) if cold_basis is None else int(cold_basis))
    every, depth = int(check_every), int(check_depth)
    if every < 0 or depth < 0:
        raise EoslabError(f"check_every and check_depth must be ≥ 0, got {every}, {depth}")
    check = min(n, b + depth) if every > 0 and depth > 0 else b
    keep = max(b + 1, (M + b) // 2) if M > b + 1 else b
    return _Sizes(k, b, n, M, min(b + 1, M), keep, max(cold, b), check, max(every, 1))


# ---- linear algebra helpers ---------------------------------------------------------------

def _one_at_a_time_on_cpu(f: Callable) -> Callable:
    """``f`` (one array in, a pytree of arrays out: a LAPACK factorisation), whose ``vmap`` on
    a CPU computes the members one at a time (``lax.map``) instead of one batched LAPACK call;
    elsewhere the batched call. Why: jaxlib's CPU LAPACK kernels (0.10) split a large enough
    batch into tasks on XLA's intra-op thread pool and *block* the calling thread until they
    are done; when that caller is itself a pool thread and every pool thread does the same (two
    programs run at once from two Python threads, as ``train_batch``'s parts), no thread is left
    to run the tasks and the process deadlocks. A batch of one is computed inline. Each member's
    factorisation is the same LAPACK call on the same numbers either way. Forward-mode
    differentiable (``custom_vmap``), not reverse-mode, as the tracker's while loops anyway."""
    g = jax.custom_batching.custom_vmap(f)

    @g.def_vmap
    def rule(axis_size, in_batched, x):
        del axis_size, in_batched  # one operand, so it is the batched one
        out = jax.lax.platform_dependent(x, cpu=lambda x: jax.lax.map(g, x), default=jax.vmap(f))
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return g


_qr = _one_at_a_time_on_cpu(lambda a: jnp.linalg.qr(a))
_eigh = _one_at_a_time_on_cpu(lambda a: jnp.linalg.eigh(a))
_singular_values = _one_at_a_time_on_cpu(lambda a: jnp.linalg.svd(a, compute_uv=False))
_svd = _one_at_a_time_on_cpu(lambda a: jnp.linalg.svd(a))


def _pseudo_random(shape, salt, dtype) -> jax.Array:
    """Cheap deterministic pseudo-random entries in [−½, ½) (a sine hash), used only to
    replace degenerate directions; avoids compiling a PRNG into every tracking step."""
    i = jnp.arange(int(np.prod(shape)), dtype=jnp.float32).reshape(shape)
    x = jnp.sin(12.9898 * jnp.mod(i, 7919.0) + 78.233 * jnp.floor(i / 7919.0)
                + 0.618 * jnp.asarray(salt, jnp.float32)) * 43758.5453
    return (x - jnp.floor(x) - 0.5).astype(dtype)


def _orthonormal_block(X: jax.Array, salt) -> jax.Array:
    """Orthonormal rows spanning X; degenerate or non-finite rows are replaced (the
    replacement is computed only when needed)."""
    finite = jnp.all(jnp.isfinite(X))
    Q, R = _qr(jnp.where(finite, X, 0.0).T)
    d = jnp.abs(jnp.diagonal(R))
    bad = d <= 100 * jnp.finfo(X.dtype).eps * jnp.maximum(jnp.max(d), jnp.finfo(X.dtype).tiny)

    def repair(Q):
        fresh = _pseudo_random(X.shape, salt, X.dtype)
        return _qr(jnp.where(bad[None, :] | ~finite, fresh.T, Q))[0]

    return jax.lax.cond(jnp.any(bad) | ~finite, repair, lambda Q: Q, Q).T


def _unit_or_fallback(w, V, scale, salt):
    """``(w/‖w‖, True)`` if w (already orthogonal to the rows of V) is not negligible against
    ``scale``, else a pseudo-random unit vector orthogonal to V (computed only then), and
    False if that vanishes too (V spans everything)."""
    dtype = w.dtype
    tiny = 1e3 * jnp.finfo(dtype).eps
    nw = jnp.linalg.norm(w)

    def fallback(_):
        alt = orthogonalize(_pseudo_random(w.shape, salt, dtype), V)
        na = jnp.linalg.norm(alt)
        return alt / jnp.where(na > 0, na, 1.0), na > tiny

    return jax.lax.cond(nw > tiny * jnp.maximum(scale, jnp.finfo(dtype).tiny),
                        lambda _: (w / nw, jnp.asarray(True)), fallback, None)


def _ritz_from_T(T, valid, count: int, lowest: bool = False):
    """Top ``count`` eigenpairs (descending) of the symmetric T restricted to the rows/columns
    where ``valid`` (a boolean mask, or an int m: the first m) holds; with ``lowest``, also
    the smallest eigenvalue of that block."""
    M = T.shape[0]
    if M == 1 and not lowest:             # one vector: its Rayleigh quotient (no eigh call)
        return T[0, :1], jnp.ones((1, 1), T.dtype)
    valid = valid if getattr(valid, "dtype", None) == jnp.bool_ else jnp.arange(M) < valid
    T = jnp.where(valid[:, None] & valid[None, :], T, 0.0)
    # Padding rows get a diagonal strictly below every valid eigenvalue (Gershgorin), so
    # the valid block's eigenpairs come first and never mix with the padding.
    d = jnp.diagonal(T)
    lo = jnp.min(jnp.where(valid, d - (jnp.sum(jnp.abs(T), 1) - jnp.abs(d)), jnp.inf))
    T = T + jnp.diag(jnp.where(valid, 0.0, lo - jnp.max(jnp.abs(T)) - 1.0))
    w, S = _eigh(T)
    if lowest:
        return w[::-1][:count], S[:, ::-1][:, :count], w[M - jnp.sum(valid)]
    return w[::-1][:count], S[:, ::-1][:, :count]


def _projected(V, AV):
    """``V AVᵀ`` symmetrised."""
    T = V @ AV.T
    return 0.5 * (T + T.T)


def _rayleigh_ritz(basis: _Basis, nr: int, count: int) -> _Ritz:
    """Ritz pairs of the basis: ``count`` values and coefficients, the top nr vectors and residuals."""
    theta, Y = _ritz_from_T(basis.T, basis.m, count)
    Yr = Y[:, :nr]
    U, AU = Yr.T @ basis.V, Yr.T @ basis.AV
    R = AU - theta[:nr, None] * U
    return _Ritz(theta, Y, U, R, jnp.linalg.norm(R, axis=1))


def _errors(theta, rnorm, m, k: int, b: int, numerator=False, carried=None):
    """Quadratic (cluster-aware) error estimates of the top-k Ritz values, capped by the
    rigorous residual bound, and for each of them the Ritz vector whose residual to add next.

    Cut c separates the top c Ritz values from the (c+1)-th; its estimate is
    ``‖R_c‖²_F / (θ_c − θ_{c+1} − ‖r_{c+1}‖)``, and err_i is the minimum over cuts c ≥ i + 1
    (capped by ‖r_i‖). The lower end is raised by its own residual, as far as the eigenvalue it
    stands for may lie above it: a guard whose residual exceeds the gap (the operator jumped and
    the guard's value means nothing yet) gives no cut, where it would otherwise pass a value
    converged to λ₂ with a larger λ₁ missed. Only cuts whose lower value is a carried (tracked or guard) Ritz value count:
    the Ritz values of fresh Krylov directions beyond the block are crude lower bounds of
    the eigenvalues below, and would make the gap, hence the estimate, far too optimistic.
    The index alone does not say it: ``carried`` (nr,), if given, is each Ritz vector's
    squared norm on the span of the rows the call started from, and a cut counts only if its
    lower Ritz vector has at least :data:`CARRIED_WEIGHT` of it. When the operator jumps (a
    catapult) the carried rows no longer approximate eigenvectors, the expansions rebuild the
    top of the spectrum from fresh directions, and the (c+1)-th Ritz value of a few of them
    sits far below the eigenvalue it stands for.
    The vector to expand for value i is the one with the largest residual among those its
    best cut depends on (the top c and the one below, all in the block), so an unconverged
    guard gets refined when it limits the estimate; with ``numerator`` (may be traced), among
    the top c only (the residuals in ``‖R_c‖²_F``).

    Returns ``(err (k,), expand (k,) int)``.
    """
    nr = theta.shape[0]
    i = jnp.arange(k)
    if nr == 1:
        return rnorm[:k], i.astype(jnp.int32)
    c = jnp.arange(1, nr)                       # cut: top c values vs the (c+1)-th
    f2 = jnp.cumsum(rnorm**2)[c - 1]            # ‖R_c‖_F²
    gap = theta[c - 1] - theta[c] - rnorm[c]      # the lower eigenvalue may lie up to ‖r_{c+1}‖ higher
    usable = (c < m) & (c < b) & (gap > 0)
    if carried is not None:
        usable = usable & (carried[c] >= CARRIED_WEIGHT)
    est = jnp.where(usable, f2 / jnp.where(usable, gap, 1.0), jnp.inf)
    per = jnp.where(c[None, :] >= i[:, None] + 1, est[None, :], jnp.inf)   # (k, cuts)
    err = jnp.minimum(rnorm[:k], jnp.min(per, axis=1))
    cut = jnp.argmin(per, axis=1) + 1
    idx = jnp.arange(nr)
    among = jnp.where(numerator, idx[None, :] < cut[:, None], idx[None, :] <= cut[:, None])
    expand = jnp.argmax(jnp.where(among, rnorm[None, :], -1.0), axis=1)
    expand = jnp.where(jnp.isfinite(jnp.min(per, axis=1)), expand, i)
    return err, expand.astype(jnp.int32)


def _effective_gap_estimate(r2, scales):
    """``SCALE_SAFETY · r2 / g`` for each carried effective gap g > 0 (inf where none)."""
    return jnp.where(scales > 0, SCALE_SAFETY * r2 / jnp.where(scales > 0, scales, 1.0), jnp.inf)


# ---- the starting basis: warm block, cold block Krylov space, periodic check ----------------

def _pad_basis(V, AV, m, M: int) -> _Basis:
    """The basis of rows (V, AV) in buffers of capacity M (T computed on the rows only)."""
    rows, n = V.shape
    pad = jnp.zeros((M - rows, n), V.dtype)
    T = jnp.zeros((M, M), V.dtype).at[:rows, :rows].set(_projected(V, AV))
    return _Basis(jnp.concatenate([V, pad]), jnp.concatenate([AV, pad]), T, jnp.asarray(m, jnp.int32))


def _grow_krylov(mv, V, AV, valid, start: int, stop, stride, seed, use_seed, salt):
    """Append Krylov directions to the basis ``V`` (rows ``start:stop``), one product each.

    Row j ≥ start is the product of row ``j − stride`` orthogonalised against every earlier
    row (a block Krylov space of block size ``stride``); where ``use_seed``, the first new row
    is ``seed`` instead (a Lanczos run in the complement of rows ``:start``). A direction that
    vanishes (an invariant subspace was found) is replaced by a pseudo-random one, and left out
    (``valid`` False) if that vanishes too. ``stop``, ``stride`` and ``use_seed`` may be traced.
    Returns ``(V, AV, valid)``.
    """
    def body(j, carry):
        V, AV, valid = carry
        src = jnp.where(use_seed & (j == start), seed, AV[j - stride])
        w, good = _unit_or_fallback(orthogonalize(src, V), V, jnp.linalg.norm(src), j + 31 * salt)
        w = jnp.where(good, w, 0.0)
        return V.at[j].set(w), AV.at[j].set(jnp.where(good, mv(w), 0.0)), valid.at[j].set(good)

    return jax.lax.fori_loop(start, stop, body, (V, AV, valid))


def _deep_start(mv, X, AX, first, count, sz: _Sizes) -> _Basis:
    """The block (X, AX) extended by Krylov directions, reduced by Rayleigh-Ritz to its top
    ``keep`` Ritz vectors (A times them is a combination of the stored products): at the first
    call a block Krylov space of ``cold`` rows, at a check ``check − b`` Lanczos vectors from a
    pseudo-random vector in the complement of the block. One code path for both (one copy of
    the operator to compile)."""
    b, n = X.shape
    size = max(sz.cold, sz.check)
    stop = jnp.where(first, sz.cold, sz.check)
    V = jnp.zeros((size, n), X.dtype).at[:b].set(X)
    AV = jnp.zeros((size, n), X.dtype).at[:b].set(AX)
    seed = _pseudo_random((n,), 17 + count, X.dtype)
    V, AV, valid = _grow_krylov(mv, V, AV, jnp.arange(size) < b, b, stop, jnp.where(first, b, 1), seed,
                                ~first, count)
    nk = min(sz.keep, size)
    _, Y, low = _ritz_from_T(_projected(V, AV), valid, nk, lowest=True)
    m = jnp.minimum(nk, jnp.sum(valid))
    Y = jnp.where((jnp.arange(nk) < m)[None, :], Y, 0.0)
    return _pad_basis(Y.T @ V, Y.T @ AV, m, sz.M), low


def _start(mv, X, AX, first, checking, count, sz: _Sizes, deep: bool = True):
    """``(basis, products, lowest)`` the expansion loop starts from (see the module docstring,
    step 2; ``deep=False``: the caller knows this call does not start deep); ``lowest`` is the
    smallest Ritz value of a deep start's Krylov space (NaN if warm)."""
    nan = jnp.asarray(jnp.nan, X.dtype)
    warm = lambda X, AX: (_pad_basis(X, AX, sz.b, sz.M), jnp.asarray(sz.b, jnp.int32), nan)
    cold = first if sz.cold > sz.b else jnp.asarray(False)
    check = checking if sz.check > sz.b else jnp.asarray(False)
    if not deep or (sz.cold == sz.b and sz.check == sz.b):
        return warm(X, AX)

    def deep(X, AX):
        basis, low = _deep_start(mv, X, AX, first, count, sz)
        return basis, jnp.where(first, sz.cold, sz.check).astype(jnp.int32), low.astype(X.dtype)

    return jax.lax.cond(cold | check, deep, warm, X, AX)


# ---- the expansion loop -------------------------------------------------------------------

def _evaluate(basis: _Basis, nprod, scales, at_start: bool, tol, atol, sz: _Sizes, numerator=False,
              carried=None) -> _Loop:
    """Rayleigh-Ritz on the basis, the top-k error estimates and the next expansion target.

    ``carried`` (b, n): the orthonormal rows the call started from (the block, or the top of a
    deep start); a cut's gap counts only where its lower Ritz vector lies mostly in their span
    (:func:`_errors`).

    At the start (``at_start``), the effective-gap estimate may also stop the call; later it
    only chooses the direction: where it is the smaller one, the error sits in the tracked
    vector's own residual rather than in the gap to a guard."""
    k = sz.k
    ritz = _rayleigh_ritz(basis, sz.nr, max(sz.nr, sz.keep))
    weight = None if carried is None else jnp.sum((ritz.U @ carried.T) ** 2, axis=1)
    err, choice = _errors(ritz.theta[:sz.nr], ritz.rnorm, basis.m, k, sz.b, numerator, weight)
    est = _effective_gap_estimate(ritz.rnorm[:k] ** 2, scales)
    choice = jnp.where(est < err, jnp.arange(k, dtype=jnp.int32), choice)
    if at_start:
        err = jnp.minimum(err, est)
    ratio = err / jnp.maximum(tol * jnp.abs(ritz.theta[:k]), atol)
    return _Loop(basis, ritz, err, ratio, choice[jnp.argmax(ratio)], nprod)


def _restart(basis: _Basis, ritz: _Ritz, keep: int) -> _Basis:
    """Thick restart: the top ``keep`` Ritz vectors (A times them is known)."""
    Yk = ritz.Y[:, :keep]
    M, n = basis.V.shape
    pad = jnp.zeros((M - keep, n), basis.V.dtype)
    T = Yk.T @ basis.T @ Yk
    return _Basis(jnp.concatenate([Yk.T @ basis.V, pad]), jnp.concatenate([Yk.T @ basis.AV, pad]),
                  jnp.zeros_like(basis.T).at[:keep, :keep].set(0.5 * (T + T.T)), jnp.asarray(keep, jnp.int32))


def _expand(mv, loop: _Loop, salt, sz: _Sizes) -> _Basis:
    """Add the residual of Ritz vector ``loop.target`` to the basis (one product)."""
    basis = jax.lax.cond(loop.basis.m >= sz.M, lambda b: _restart(b, loop.ritz, sz.keep), lambda b: b, loop.basis)
    r = loop.ritz.R[loop.target]
    w, _ = _unit_or_fallback(orthogonalize(r, basis.V), basis.V, jnp.linalg.norm(r), basis.m + 7 * salt)
    Aw = mv(w)
    m = basis.m
    t = (basis.V @ Aw).at[m].set(w @ Aw)  # the new column of T (rows > m are zero)
    T = basis.T.at[:, m].set(t).at[m, :].set(t)
    # Written into V only after V has been read for t: without this data dependence XLA cannot
    # order that read before the in-place update and copies V (M, n) at every expansion.
    w = w + 0.0 * t[0]
    return _Basis(basis.V.at[m].set(w), basis.AV.at[m].set(Aw), T, m + 1)


def _keep_going(loop: _Loop, cap, k: int):
    finite = jnp.all(jnp.isfinite(loop.ritz.theta[:k])) & ~jnp.any(jnp.isnan(loop.ratio))
    return (jnp.max(loop.ratio) > 1.0) & (loop.nprod < cap) & finite


def _effective_gaps(start: _Loop, end: _Loop, nprod0, scales, k: int):
    """Each tracked value's effective gap ‖r‖² / (rise of the Ritz value + final error estimate),
    measured between the start and the end of a call that expanded; otherwise the carried one,
    shrunk so that it is re-measured regularly."""
    rise = end.ritz.theta[:k] - start.ritz.theta[:k] + end.err
    measured = (end.nprod > nprod0) & (rise > 0) & jnp.isfinite(rise)
    fresh = start.ritz.rnorm[:k] ** 2 / jnp.where(measured, rise, 1.0)
    gaps = jnp.where(measured, fresh, SCALE_DECAY * scales)
    return jnp.where(jnp.isfinite(gaps), gaps, 0.0)


def _min_cosine(U, W):
    """Smallest cosine of the principal angles between the row spaces of U and W (k, n)."""
    if U.shape[0] == 1:
        return jnp.abs(U[0] @ W[0])
    return jnp.min(_singular_values(U @ W.T))


def _filtered_block(U, AU_minus_thetaU, theta, floor, top):
    """The block carried to the next call: each row u (a Ritz vector with value θ and residual
    r = Au − θu, so Au = r + θu) replaced by ``(A − c)u = r + (θ − c)u``, then the rows
    orthonormalised (QR, rows in order, so the tracked rows stay first).

    A free step of shifted subspace iteration on this call's operator (Chebyshev filtering of
    degree one): components along eigenvalues in [floor, θ_last] shrink relative to those above,
    so the next call's warm residuals are smaller. c is halfway between ``theta[-1]`` and the
    floor lowered by :data:`FILTER_MARGIN`·(top − floor); rows with a zero residual (guards not
    multiplied at this call) are only re-orthonormalised. No filter (only re-orthonormalisation)
    while the floor is unknown or if anything is not finite."""
    c = 0.5 * (theta[-1] + floor - FILTER_MARGIN * (top - floor))
    a = theta - c
    ok = jnp.isfinite(c) & jnp.all(a > 0) & jnp.all(jnp.isfinite(AU_minus_thetaU))
    F = jnp.where(ok, AU_minus_thetaU + jnp.where(ok, a, 1.0)[:, None] * U, U)
    X = _qr(F.T)[0].T      # (a Cholesky QR on the b×b Gram is 30× slower here on CPU)
    return jnp.where(jnp.all(jnp.isfinite(X)), X, U)


def _predicted_block(F, state: TrackState):
    """The block the next call starts from: this call's filtered block F (b, n), orthonormal
    rows, moved along its motion since the last call by a fraction α of it, re-orthonormalised;
    and the carried ``(history, turn, cosines)`` updated.

    The motion is ``d = F − Q₁F₋₁`` with Q₁ the rotation that best aligns the last call's block
    F₋₁ with F (rows may rotate inside a cluster or swap signs, which is no motion). The
    eigenvectors of a Hessian along a smooth stretch of a trajectory move by nearly the same
    step from call to call, so ``F + d`` would start the next call close to its eigenvectors;
    at the edge of stability they oscillate instead. So α is :data:`PREDICT_DAMPING` times the
    correlation ρ = ⟨d, Q₁d₋₁⟩ / ‖d₋₁‖² of the motion with the previous one, clipped to [0, 1],
    and 0 while the blocks moved too far to call it a motion (:data:`PREDICT_OVERLAP`). Every
    inner product needed comes from ``F @ historyᵀ`` and the carried ``turn`` and ``cosines``
    (each block's rows orthonormal), and the new rows are ``G^{-1/2}(F + α d)`` with G their
    Gram matrix, known without touching them from the same singular value decomposition
    (symmetric orthonormalisation: each row as close to its unnormalised self as possible, so
    the tracked rows stay first). Two passes over (b, n) arrays, the overlaps and the
    combination, and one b × b SVD."""
    b, dtype = F.shape[0], F.dtype
    H, Q0, s0 = state.history.astype(dtype), state.turn.astype(dtype), state.cosines.astype(dtype)
    here = (state.count % 2) * b                    # this call's slot; the last call's is the other
    MH = F @ H.T
    odd = here > 0
    M1 = jnp.where(odd, MH[:, :b], MH[:, b:])       # F F₋₁ᵀ
    M2 = jnp.where(odd, MH[:, b:], MH[:, :b])       # F F₋₂ᵀ
    u1, s1, v1 = _svd(M1)
    Q1 = u1 @ v1                                    # aligns F₋₁ with F (Q0: F₋₂ with F₋₁)
    last = 2.0 * (b - jnp.sum(s0))                  # ‖d₋₁‖²
    inner = jnp.sum(s1) - jnp.trace(M2 @ Q0.T @ Q1.T) - b + jnp.sum(s0)
    rho = inner / jnp.where(last > 0, last, 1.0)
    ok = ((state.count >= 2) & (jnp.min(s1) >= PREDICT_OVERLAP) & (jnp.min(s0) >= PREDICT_OVERLAP)
          & (last > 0) & jnp.isfinite(rho))
    alpha = jnp.where(ok, PREDICT_DAMPING * jnp.clip(rho, 0.0, 1.0), 0.0)
    # The Gram of F + α d = (1 + α)F − αQ₁F₋₁ is ((1 + α)² + α²)I − 2α(1 + α)·u₁ diag(s₁) u₁ᵀ
    w = (1 + alpha) ** 2 + alpha ** 2 - 2 * alpha * (1 + alpha) * s1
    root = (u1 / jnp.sqrt(jnp.where(w > 0, w, 1.0))) @ u1.T
    F1 = jax.lax.dynamic_slice_in_dim(H, b - here, b)
    X = ((1 + alpha) * root) @ F - (alpha * root @ Q1) @ F1
    good = (alpha > 0) & jnp.all(w > 0) & jnp.all(jnp.isfinite(X))
    H = jax.lax.dynamic_update_slice_in_dim(H, F, here, 0)
    return jnp.where(good, X, F), H, Q1, s1


def _solve(mv, state: TrackState, X, AXk, scales, first, checking, tol, atol, max_products, sz: _Sizes,
           deep: bool = True):
    """Steps 2–4 of the module docstring: multiply the guards, start, expand, carry."""
    k, b, dtype = sz.k, sz.b, X.dtype
    AX = jnp.concatenate([AXk, rows(mv, X[k:])])
    basis, nprod0, low = _start(mv, X, AX, first, checking, state.count, sz, deep)
    floor = _carried_floor(state, dtype)
    floor = jnp.where(first, low, jnp.fmin(floor, low))
    cap = max_products + nprod0 - b        # the deep start's Krylov products come on top
    # After calls that skipped their guards, the guard rows are stale (neither multiplied nor
    # filtered since), so their residuals are large, yet they enter the estimate only through
    # the gap's lower end: the first expansion refines the numerator (the tracked residuals)
    # instead. The stopping rule is the same; later expansions choose as usual.
    start = _evaluate(basis, nprod0, scales, True, tol, atol, sz, numerator=_lazy_count(state) > 0)
    carried = basis.V[:b]               # the block (or a deep start's top Ritz vectors)

    def step(loop: _Loop) -> _Loop:
        return _evaluate(_expand(mv, loop, state.count, sz), loop.nprod + 1, scales, False, tol, atol, sz,
                         carried=carried)

    end = jax.lax.while_loop(lambda loop: _keep_going(loop, cap, k), step, start)
    gaps = _effective_gaps(start, end, nprod0, scales, k).astype(dtype)
    if k != state.k:                        # a different k: leave the carried gaps alone
        gaps = state.scales
    theta, U = end.ritz.theta, end.ritz.U
    overlap = _min_cosine(U[:k], state.vectors[:k].astype(dtype))
    result = TrackResult(theta[:k], end.ritz.rnorm[:k], end.err, U[:k], end.nprod, jnp.max(end.ratio) <= 1.0,
                         (~first) & (overlap < ENTRY_OVERLAP), jnp.where(first, jnp.nan, overlap))
    carried, *motion = _predicted_block(_filtered_block(U[:b], end.ritz.R[:b], theta[:b], floor, theta[0]), state)
    drift = _carried_drift(state, dtype)
    if b > k:
        moved = jnp.abs(theta[k] - state.values[k].astype(dtype)) / (_lazy_count(state) + 1).astype(dtype)
        drift = jnp.where(first | ~jnp.isfinite(moved), 0.0, moved).astype(dtype)
    return TrackState(carried, theta[:b], state.count + 1, state.k, gaps, jnp.zeros((), jnp.int32), floor,
                      drift, *motion), result


def _carried_drift(state: TrackState, dtype):
    return jnp.zeros((), dtype) if state.drift is None else state.drift.astype(dtype)


def _carried_floor(state: TrackState, dtype):
    return jnp.asarray(jnp.nan if state.floor is None else state.floor, dtype)


def _lazy_count(state: TrackState):
    return jnp.zeros((), jnp.int32) if state.lazy is None else state.lazy.astype(jnp.int32)


def _skip_guards(state: TrackState, X, AXk, scales, tol, atol, guard_every: int):
    """Can this call stop after the k tracked products, without multiplying the guards?

    Rayleigh-Ritz on the tracked rows ``X[:k]`` alone (their products ``AXk`` are known).
    Each residual r_i is split into its part on the (unmultiplied) guard rows G = X[k:] and
    the rest: the rest is judged with the carried effective gap like the block-only check,
    and the part on the guards with the gap from θ_i to the top guard's value at the last
    call raised by ``SCALE_SAFETY·(lazy + 1)·drift``, ``‖Gr_i‖² / (θ_i − θ_{k+1} − 2(lazy+1)·drift)``
    (mixing with a guard direction costs little in value when they are close, but is only
    ignored in proportion to that gap). Or the cut estimate of :func:`_errors` with the carried
    guard value raised by ``(lazy + 1)·drift`` (its measured motion per call) as the lower end
    of the gap, whichever is smaller. Never once the raised guard value reaches a tracked one (a
    crossing: the tracked residuals cannot see it). Allowed only while
    fewer than ``guard_every − 1`` calls in a row have skipped (``state.lazy``), so a guard is
    never more than ``guard_every − 1`` calls old and a value that rises from below is seen
    (and ``entered`` reported) at most that many calls late.

    Returns ``(ok, skipped)``: ``skipped()`` builds ``(new_state, result)``, meaningful only where
    ``ok`` (a function, so that the carried block is filtered and moved only in the branch that
    uses it).
    """
    k, dtype = AXk.shape[0], AXk.dtype
    ritz = _rayleigh_ritz(_Basis(X[:k], AXk, _projected(X[:k], AXk), jnp.asarray(k)), k, k)
    w, U, R, rn = ritz.theta, ritz.U, ritz.R, ritz.rnorm
    on_guards = jnp.sum((R @ X[k:].T) ** 2, axis=1)
    rest = jnp.maximum(rn ** 2 - on_guards, 0.0)
    old = state.values.astype(dtype)
    lazy = _lazy_count(state)
    drift = (lazy + 1).astype(dtype) * _carried_drift(state, dtype)
    # The gap to the guard is taken to its value moved up by SCALE_SAFETY times its measured
    # drift since it was multiplied: an eigenvalue rising from below towards a tracked one is a
    # crossing the tracked residuals cannot see (the tracked vector stays an eigenvector, of the
    # eigenvalue being overtaken), so no skip once it may have come that close.
    gap = w - (old[k] + SCALE_SAFETY * drift)
    near = jnp.where(gap > 0, on_guards / jnp.where(gap > 0, gap, 1.0), jnp.inf)
    # The cut estimate of the block-only check, the gap's lower end being the carried guard
    # value moved up by its measured drift for every call since it was multiplied.
    guard = old[k:k + 1] + drift
    cut, _ = _errors(jnp.concatenate([w, guard]), jnp.concatenate([rn, jnp.zeros((1,), dtype)]), k + 1, k, k + 1)
    err = jnp.minimum(rn, jnp.minimum(cut, _effective_gap_estimate(rest, scales) + SCALE_SAFETY * near))
    ok = ((lazy < guard_every - 1) & (state.count > 0) & jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(err))
          & jnp.all(gap > 0) & jnp.all(err <= jnp.maximum(tol * jnp.abs(w), atol)))

    def skipped():
        overlap = _min_cosine(U, state.vectors[:k].astype(dtype))
        result = TrackResult(w, rn, err, U, jnp.asarray(k, jnp.int32), jnp.asarray(True),
                             overlap < ENTRY_OVERLAP, overlap)
        values = jnp.concatenate([w, old[k:]])
        block = jnp.concatenate([U, X[k:]])
        floor = _carried_floor(state, dtype)
        guards = jnp.zeros_like(X[k:])                  # the guards are not multiplied: not filtered
        carried, *motion = _predicted_block(
            _filtered_block(block, jnp.concatenate([R, guards]), values, floor, w[0]), state)
        new = TrackState(carried, values, state.count + 1, state.k, scales.astype(dtype), lazy + 1, floor,
                         _carried_drift(state, dtype), *motion)
        return new, result

    return ok, skipped


def track(matvec: Matvec, state: TrackState, *, k: int | None = None, tol: float = 1e-3, atol: float = 0.0,
          max_products: int | None = None, max_basis: int | None = None, cold_basis: int | None = None,
          check_every: int = 100, check_depth: int = 8, shared_count: bool = False, guard_every: int = 4,
          products: jax.Array | None = None, batched_solve: str | None = None) -> tuple[TrackState, TrackResult]:
    """Top-k largest algebraic eigenpairs of the symmetric operator ``matvec``, warm-started.

    Args:
      matvec: ``(n,) -> (n,)`` symmetric linear map (e.g. :func:`~eoslab.spectra.hvp`);
        the block's first ``b`` products are one batch (:func:`~eoslab.spectra.operators.rows`).
      state: from :func:`track_init` or the previous call.
      k: number of eigenpairs returned (≤ block size; default ``state.k``).
      tol: relative accuracy: stop when every top-k value's error estimate is
        ≤ ``max(tol·|θ_i|, atol)``. May be traced.
      atol: absolute floor of the accuracy (useful when some top-k values are ≈ 0).
      max_products: cap on the products of a call beyond its deep start (default
        ``max(100, 20·b)``). May be traced.
      max_basis: subspace capacity before a thick restart (static; default ``b + max(8, b)``).
      cold_basis: depth of the first call's block Krylov space (static; default
        ``max(32, 4·b)``, capped at n).
      check_every: every this many calls (0: never) ``check_depth`` Lanczos products from a
        pseudo-random vector in the complement of the block join the subspace (static).
      check_depth: products of that check (static).
      shared_count: ``state.count`` is the same for every tracker of a ``vmap``-ped batch and is
        passed un-batched (static). The deep start (first call, periodic check) is then decided by
        a conditional of its own, outside the guard-skipping one: under ``vmap`` that one's
        predicate is batched, which turns it into a select running both sides, and a deep start
        nested in it would run at every call of every member. Same results; without ``vmap`` it
        only adds a second compiled copy of the expansion loop. The guard-skipping branch is then,
        by ``batched_solve`` (static), ``"one_by_one"``: a :func:`member_cond`, the cheap exit
        vectorised and the solve (guard products, expansion loop) run member by member for the
        members that need it, each for its own number of products; or ``"vectorised"``: a select,
        every member paying for the solve at every call, as many products as the slowest one.
        ``None`` (default): one by one on a CPU backend, vectorised on accelerators.
      guard_every: the guard rows are multiplied at least every this many calls (static; 1:
        at every call): in between, a call whose tracked residuals pass the guard-skipping check
        (:func:`_skip_guards`) stops after the k tracked products.
      products: ``(k, n)``, the products ``matvec(state.vectors[i])`` of the k tracked rows,
        if the caller already has them (e.g. computed in one pass with the step's gradient,
        :func:`eoslab.dynamics.stepper.make_step`'s ``products``); otherwise this call
        computes them. The rows of ``state.vectors`` are then used as they are (they are
        orthonormal: every call leaves them so).

    Returns:
      ``(new_state, TrackResult)``. Costs at least ``k`` products per call, and at least
      ``b`` at every call that follows one that skipped its guards (``state.lazy``).
    """
    k = state.k if k is None else int(k)
    dtype = state.vectors.dtype
    state = dataclasses.replace(state, lazy=_lazy_count(state), floor=_carried_floor(state, dtype),
                                drift=_carried_drift(state, dtype),   # a state saved by an older version
                                history=jnp.zeros((2 * state.block, state.dim), dtype) if state.history is None else state.history,
                                turn=jnp.zeros((state.block,) * 2, dtype) if state.turn is None else state.turn,
                                cosines=jnp.zeros((state.block,), dtype) if state.cosines is None else state.cosines)
    sz = _sizes(state, k, max_basis, cold_basis, check_every, check_depth)
    max_products = max(100, 20 * sz.b) if max_products is None else max_products
    dtype = state.vectors.dtype
    scales = jnp.zeros((state.k,), dtype) if state.scales is None else state.scales.astype(dtype)
    scales = jnp.zeros((k,), dtype) if k != state.k else scales
    mv = lambda v: matvec(v.astype(dtype)).astype(dtype)

    guard_every = check_positive_int("guard_every", guard_every)
    one_by_one = _one_by_one(batched_solve)
    if products is None:
        X = _orthonormal_block(state.vectors, state.count)
        AXk = rows(mv, X[:k])             # the tracked vectors' products: always needed
    else:
        if products.shape != (k, sz.n):
            raise EoslabError(f"products must have shape {(k, sz.n)} (the k tracked rows), got {products.shape}")
        X, AXk = state.vectors, products.astype(dtype)
    first = state.count == 0
    checking = ((~first) & (state.count % sz.every == 0)) if sz.check > sz.b else jnp.asarray(False)
    solve = lambda: _solve(mv, state, X, AXk, scales, first, checking, tol, atol, max_products, sz)
    if k == sz.b or k != state.k:
        return solve()
    if guard_every == 1:
        return solve()
    skip, skipped = _skip_guards(state, X, AXk, scales, tol, atol, guard_every)
    if shared_count and one_by_one:  # the solve member by member, for those that need it
        return member_cond(~(skip & ~checking), solve, skipped)
    if shared_count and (sz.cold > sz.b or sz.check > sz.b):
        warm = lambda: _solve(mv, state, X, AXk, scales, first, checking, tol, atol, max_products, sz, deep=False)
        deep = (first if sz.cold > sz.b else False) | (checking if sz.check > sz.b else False)
        return jax.lax.cond(deep, solve, lambda: jax.lax.cond(skip, skipped, warm))
    return jax.lax.cond(skip & ~checking, skipped, solve)


#: How a ``vmap``-ped tracker (``track(..., shared_count=True)``) solves: ``"one_by_one"`` (the
#: members that need the solve, one after the other: :func:`member_cond`) or ``"vectorised"``
#: (every member at every call, for as many products as the slowest one).
BATCHED_SOLVES = ("one_by_one", "vectorised")


def _one_by_one(batched_solve: str | None) -> bool:
    """``None``: one by one on a CPU, where vectorising members does not make a product cheaper
    (``benchmarks/batched_train.py --ops``); vectorised on accelerators, where it nearly does."""
    if batched_solve is None:
        return jax.default_backend() == "cpu"
    if batched_solve not in BATCHED_SOLVES:
        raise EoslabError(f"batched_solve must be one of {BATCHED_SOLVES} or None, got {batched_solve!r}")
    return batched_solve == "one_by_one"


def member_cond(pred: Bool[ArrayLike, ""], dear_fn: Callable, cheap_fn: Callable) -> PyTree:
    """``dear_fn() if pred else cheap_fn()`` (zero-argument functions returning the same pytree
    of arrays) as ``lax.cond``, but ``vmap``-ped differently.

    Under ``vmap`` a batched predicate turns ``lax.cond`` into a select: both branches are computed
    for every member, and a ``while_loop`` inside them runs until the slowest member is done.
    Here ``cheap_fn`` is vectorised over all the members, and ``dear_fn`` runs one member at a
    time (a ``while_loop`` over the indices where ``pred`` holds, each member's loops for its own
    count), its results written over the cheap ones. For a dear branch that few members take at
    a time (a tracker's solve against its guard-skipping exit). Values the functions close over
    (batched or not) become explicit operands of a ``custom_vmap``."""
    dear, dear_shape = jax.make_jaxpr(dear_fn, return_shape=True)()
    cheap, cheap_shape = jax.make_jaxpr(cheap_fn, return_shape=True)()
    out_tree = jax.tree_util.tree_structure(dear_shape)
    if jax.tree_util.tree_structure(cheap_shape) != out_tree:
        raise EoslabError("member_cond: both functions must return the same structure")
    run = lambda closed, consts: jax.core.eval_jaxpr(closed.jaxpr, consts)

    def call(dear_consts, cheap_consts, p):
        return jax.lax.cond(p, lambda: run(dear, dear_consts), lambda: run(cheap, cheap_consts))

    f = jax.custom_batching.custom_vmap(call)

    @f.def_vmap
    def one_by_one(axis_size, in_batched, dear_consts, cheap_consts, p):
        dear_b, cheap_b, p_b = in_batched
        out = jax.vmap(lambda cs: run(cheap, cs), in_axes=([0 if b else None for b in cheap_b],),
                       axis_size=axis_size)(cheap_consts)
        p = p if p_b else jnp.broadcast_to(p, (axis_size,))
        idx = jnp.nonzero(p, size=axis_size, fill_value=0)[0]

        def member(carry):
            j, out = carry
            i = idx[j]
            mine = [jax.lax.dynamic_index_in_dim(c, i, keepdims=False) if b else c
                    for c, b in zip(dear_consts, dear_b)]
            got = run(dear, mine)
            return j + 1, [jax.lax.dynamic_update_index_in_dim(o, g.astype(o.dtype), i, 0) for o, g in zip(out, got)]

        _, out = jax.lax.while_loop(lambda c: c[0] < jnp.sum(p), member, (jnp.zeros((), jnp.int32), list(out)))
        return out, [True] * len(out)

    return jax.tree_util.tree_unflatten(out_tree, f(list(dear.consts), list(cheap.consts), pred))
