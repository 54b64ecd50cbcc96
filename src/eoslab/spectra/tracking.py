"""Warm-started tracking of the top-k eigenpairs of a symmetric operator that changes slowly.

Along a GD trajectory the loss Hessian (or the NTK) moves a little at each step, so last
step's eigenvectors are excellent starting vectors for this step. :func:`track` keeps a
block of ``b = k + guard`` orthonormal vectors (the top-k Ritz vectors plus guard vectors
that watch the eigenvalues just below) and, at each call:

1. multiplies the k tracked vectors by the new operator (``k`` products, one batched call)
   and stops there if their values already pass the effective-gap check below and the
   previous call multiplied its guards (so a guard is never more than one call old),
2. otherwise multiplies the ``b − k`` guard vectors too, does Rayleigh-Ritz on the block,
   estimates each Ritz value's error, and stops if the top-k are accurate enough,
3. otherwise grows the subspace one vector at a time (block Davidson without a
   preconditioner, i.e. a block Krylov space grown where it is needed most: the residual
   of the Ritz vector that limits the stopping rule), with thick restarts, until the
   stopping rule holds or ``max_products`` is reached.

The first call instead grows the random block into a block Krylov space of ``cold_basis``
vectors before step 2 (a random block alone can converge to a lower member of a top cluster
larger than the block, and pass the stopping rule), and every ``check_every`` calls a short
Lanczos run from a pseudo-random vector in the complement of the block joins the subspace (an
eigenvalue above the tracked set that the warm start cannot see is found there).

Everything is a pure function of arrays (``lax.while_loop``), so ``track`` runs inside
``jax.jit`` and ``lax.scan``.

Error bars. For a symmetric operator A and unit vector v with Rayleigh quotient θ, the
residual ``‖Av − θv‖`` bounds the distance from θ to the *nearest* eigenvalue of A
(rigorously), which need not be the i-th largest: it is stored with every value. The *stopping rule* uses the sharper quadratic estimate
``‖R_c‖²_F / gap_c`` (R_c: the residuals of the top c Ritz vectors, gap_c: distance from
the c-th to the (c+1)-th Ritz value, the latter a carried tracked or guard value)
minimised over cuts c ≥ i, which is how clusters of nearly equal eigenvalues are handled:
the error of a value inside a cluster is governed by the gap *below* the cluster, not the
tiny gaps inside it. The estimate is not a proof (a Ritz value underestimates the
eigenvalue below a cut) and is capped by the rigorous residual bound. At the block-only
check the estimate may also be ``SCALE_SAFETY·‖r‖²/g``, g the residual's effective gap
(``‖r‖²`` over the Ritz value's rise plus its final error estimate) measured by an earlier
call that expanded (carried in ``TrackState.scales``): a warm residual lies mostly far below a
tight top cluster, so most calls can stop after the block's products, and every other call after
the tracked vectors' own products (step 1: the part of a residual on the unmultiplied guards is
then judged with the small gap to the guard's last value instead).

Eigenvalues are the largest *algebraic* ones (a large negative curvature is never reported
as the sharpness).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab._precision import follows
from eoslab.errors import EoslabError, check_positive_int
from eoslab.spectra.operators import gnvp, hvp, ntk_vp

Matvec = Callable[[jax.Array], jax.Array]

#: Cosine threshold: a new eigenvalue "entered" when some direction of the new top-k
#: subspace has less than this overlap with the previous one (more than 45° away).
ENTRY_OVERLAP = 0.5 ** 0.5

#: Effective-gap error estimate at the block-only check: ``SCALE_SAFETY · ‖r‖² / g`` with g
#: the residual's effective gap measured by an earlier call; g shrinks by SCALE_DECAY at
#: each call that reuses it without re-measuring.
SCALE_SAFETY = 2.0
SCALE_DECAY = 0.5


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrackState:
    """What :func:`track` carries from one call to the next (a pytree).

    Attributes:
      vectors: (b, n) orthonormal rows: the top-b Ritz vectors of the last call, descending
        (rows ``:k`` are the tracked ones, the other ``b − k`` are guard vectors).
      values: (b,) their Ritz values (NaN before the first call).
      count: int32, number of calls to :func:`track` so far.
      k: number of tracked eigenpairs (static).
      scales: (k,) the effective gap of each tracked value's residual measured by the last
        call that expanded the subspace (``‖r‖² / (Ritz-value rise + final error)``; 0: not yet),
        shrunk each time it is reused; see :func:`track`.
      lazy: bool, the last call stopped after the k tracked products without multiplying the
        guard rows (their vectors and values are then one call old); see :func:`track`.
    """

    vectors: jax.Array
    values: jax.Array
    count: jax.Array
    k: int = dataclasses.field(metadata=dict(static=True))
    scales: jax.Array | None = None
    lazy: jax.Array | None = None

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
    n_products: int32, number of operator-vector products spent in this call (k when the
      guards were skipped, see :func:`track`; otherwise at least the block size).
    converged: bool, the stopping rule held (False: ``max_products`` was reached).
    entered: bool, a new eigenvalue entered the tracked top-k set since the previous call
      (the smallest cosine between the new and the previous top-k subspaces fell below
      :data:`ENTRY_OVERLAP`); always False on the first call.
    overlap: the smallest cosine of the principal angles between the new and the previous
      top-k subspaces (1: unchanged; 0: a direction is entirely new).
    """

    values: jax.Array
    residuals: jax.Array
    errors: jax.Array
    vectors: jax.Array
    n_products: jax.Array
    converged: jax.Array
    entered: jax.Array
    overlap: jax.Array


def track_init(dim: int, k: int = 1, key=None, dtype=jnp.float64, block: int | None = None) -> TrackState:
    """A cold tracker state: ``block`` random orthonormal vectors in R^dim.

    Args:
      dim: dimension n of the operator (P for a Hessian, N outputs for an NTK).
      k: number of top eigenpairs to track.
      key: PRNG key (default ``PRNGKey(0)``).
      dtype: dtype of the vectors; use the parameters' dtype (float32 networks: float32).
      block: block size b ≥ k; the ``b − k`` extra (guard) vectors watch the eigenvalues
        just below the tracked ones, which speeds up convergence and lets an eigenvalue that
        rises from below be seen entering. Default ``k + 1``; capped at ``dim``.
    """
    dim = check_positive_int("dim", dim)
    k = check_positive_int("k", k)
    if k > dim:
        raise EoslabError(f"cannot track k={k} eigenvalues of an operator of dimension {dim}")
    b = min(k + 1 if block is None else check_positive_int("block", block), dim)
    if b < k:
        raise EoslabError(f"block size {block} must be at least k={k}")
    key = jax.random.PRNGKey(0) if key is None else key
    X = jnp.linalg.qr(jax.random.normal(key, (dim, b), dtype))[0].T
    return TrackState(X, jnp.full((b,), jnp.nan, dtype), jnp.zeros((), jnp.int32), k,
                      jnp.zeros((k,), dtype), jnp.asarray(False))


def _orth(w: jax.Array, V: jax.Array) -> jax.Array:
    """``w`` minus its projection on the rows of V (two passes: 'twice is enough')."""
    w = w - V.T @ (V @ w)
    return w - V.T @ (V @ w)


def _orthonormal_block(X: jax.Array, salt) -> jax.Array:
    """Orthonormal rows spanning X; degenerate or non-finite rows are replaced."""
    fresh = _pseudo_random(X.shape, salt, X.dtype)
    X = jnp.where(jnp.all(jnp.isfinite(X)), X, fresh)
    Q, R = jnp.linalg.qr(X.T)
    d = jnp.abs(jnp.diagonal(R))
    bad = d <= 100 * jnp.finfo(X.dtype).eps * jnp.maximum(jnp.max(d), jnp.finfo(X.dtype).tiny)
    Q = jnp.linalg.qr(jnp.where(bad[None, :], fresh.T, Q))[0]
    return Q.T


def _ritz_basis(V, AV, m, count: int):
    """Rayleigh-Ritz on the first m rows of V (capacity M = V.shape[0]), or on the rows where
    the boolean (M,) mask ``m`` holds: the top ``count`` Ritz values (descending) and their
    coefficients Y (M, count) in the basis V."""
    M = V.shape[0]
    T = V @ AV.T
    T = 0.5 * (T + T.T)
    valid = m if getattr(m, "dtype", None) == jnp.bool_ else jnp.arange(M) < m
    T = jnp.where(valid[:, None] & valid[None, :], T, 0.0)
    # Padding rows get a diagonal strictly below every valid eigenvalue (Gershgorin), so
    # the valid block's eigenpairs come first and never mix with the padding.
    d = jnp.diagonal(T)
    lo = jnp.min(jnp.where(valid, d - (jnp.sum(jnp.abs(T), 1) - jnp.abs(d)), jnp.inf))
    T = T + jnp.diag(jnp.where(valid, 0.0, lo - jnp.max(jnp.abs(T)) - 1.0))
    w, S = jnp.linalg.eigh(T)
    return w[::-1][:count], S[:, ::-1][:, :count]


def _ritz(V, AV, m, nr: int):
    """Top ``nr`` Ritz values, Ritz vectors U (nr, n), residual rows R (nr, n) and their norms."""
    theta, Y = _ritz_basis(V, AV, m, nr)
    U, AU = Y.T @ V, Y.T @ AV
    R = AU - theta[:, None] * U
    return theta, U, R, jnp.linalg.norm(R, axis=1)


def _errors(theta, rnorm, m, k: int, b: int):
    """Quadratic (cluster-aware) error estimates of the top-k Ritz values, capped by the
    rigorous residual bound (see the module docstring), and for each of them the Ritz
    vector whose residual to add next.

    Cut c separates the top c Ritz values from the (c+1)-th; its estimate is
    ``‖R_c‖²_F / (θ_{c-1} − θ_c)``, and err_i is the minimum over cuts c ≥ i + 1 (capped by
    ‖r_i‖). Only cuts whose lower value is a carried (tracked or guard) Ritz value count:
    the Ritz values of fresh Krylov directions beyond the block are crude lower bounds of
    the eigenvalues below, and would make the gap, hence the estimate, far too optimistic.
    The vector to expand for value i is the one with the largest residual among those its
    best cut depends on (the top c and the one below, all in the block), so an unconverged
    guard gets refined when it limits the estimate.

    Returns ``(err (k,), expand (k,) int)``.
    """
    nr = theta.shape[0]
    i = jnp.arange(k)
    if nr == 1:
        return rnorm[:k], i.astype(jnp.int32)
    c = jnp.arange(1, nr)                       # cut: top c values vs the (c+1)-th
    f2 = jnp.cumsum(rnorm**2)[c - 1]            # ‖R_c‖_F²
    gap = theta[c - 1] - theta[c]
    usable = (c < m) & (c < b) & (gap > 0)
    est = jnp.where(usable, f2 / jnp.where(usable, gap, 1.0), jnp.inf)
    per = jnp.where(c[None, :] >= i[:, None] + 1, est[None, :], jnp.inf)   # (k, cuts)
    err = jnp.minimum(rnorm[:k], jnp.min(per, axis=1))
    cut = jnp.argmin(per, axis=1) + 1
    idx = jnp.arange(nr)
    expand = jnp.argmax(jnp.where(idx[None, :] <= cut[:, None], rnorm[None, :], -1.0), axis=1)
    expand = jnp.where(jnp.isfinite(jnp.min(per, axis=1)), expand, i)
    return err, expand.astype(jnp.int32)


def _grow_krylov(mv, V, AV, valid, start: int, stride: int, seed0, salt):
    """Append Krylov directions to the basis ``V`` (rows ``start:``) one product at a time.

    Row j ≥ start is the product of row ``j − stride`` orthogonalised against every earlier
    row (a block Krylov space of block size ``stride``); with ``seed0`` given, the first new
    row is that vector instead (a Lanczos run in the complement of rows ``:start``). A
    direction that vanishes (an invariant subspace was found) is replaced by a pseudo-random
    one, and left out (``valid`` False) if that vanishes too. Returns ``(V, AV, valid)``.
    """
    M, n = V.shape
    dtype = V.dtype
    tiny = 1e3 * jnp.finfo(dtype).eps

    def body(j, c):
        V, AV, valid = c
        src = AV[j - stride]
        scale = jnp.linalg.norm(src)
        if seed0 is not None:
            src = jnp.where(j == start, seed0, src)
            scale = jnp.where(j == start, jnp.linalg.norm(seed0), scale)
        w = _orth(src, V)
        nw = jnp.linalg.norm(w)
        ok = nw > tiny * jnp.maximum(scale, jnp.finfo(dtype).tiny)
        alt = _orth(_pseudo_random((n,), j + 31 * salt, dtype), V)
        na = jnp.linalg.norm(alt)
        w = jnp.where(ok, w / jnp.where(ok, nw, 1.0), alt / jnp.where(na > 0, na, 1.0))
        good = ok | (na > tiny)
        w = jnp.where(good, w, 0.0)
        return V.at[j].set(w), AV.at[j].set(jnp.where(good, mv(w), 0.0)), valid.at[j].set(good)

    return jax.lax.fori_loop(start, M, body, (V, AV, valid))


def _krylov_start(mv, X, AX, size: int, stride: int, seed0, salt, keep: int, M: int):
    """The starting basis of a deep call: the block (X, AX) extended by Krylov directions to
    ``size`` rows (``size − b`` products), reduced by Rayleigh-Ritz to its top ``keep`` Ritz
    vectors. Returns ``(V, AV, m)`` in buffers of capacity M (rows ``m:`` are zero)."""
    b, n = X.shape
    dtype = X.dtype
    V = jnp.zeros((size, n), dtype).at[:b].set(X)
    AV = jnp.zeros((size, n), dtype).at[:b].set(AX)
    valid = jnp.arange(size) < b
    V, AV, valid = _grow_krylov(mv, V, AV, valid, b, stride, seed0, salt)
    nk = min(keep, size)
    theta, Y = _ritz_basis(V, AV, valid, nk)
    m = jnp.minimum(nk, jnp.sum(valid))
    use = (jnp.arange(nk) < m)[None, :]
    Y = jnp.where(use, Y, 0.0)
    pad = jnp.zeros((M - nk, n), dtype)
    return jnp.concatenate([Y.T @ V, pad]), jnp.concatenate([Y.T @ AV, pad]), m


def track(matvec: Matvec, state: TrackState, *, k: int | None = None, tol=1e-3, atol=0.0,
          max_products: int | None = None, max_basis: int | None = None, cold_basis: int | None = None,
          check_every: int = 100, check_depth: int = 8):
    """Top-k largest algebraic eigenpairs of the symmetric operator ``matvec``, warm-started.

    Args:
      matvec: ``(n,) -> (n,)`` symmetric linear map (e.g. :func:`~eoslab.spectra.hvp`);
        it is ``vmap``-ped over the block for the first ``b`` products.
      state: from :func:`track_init` or the previous call.
      k: number of eigenpairs returned (≤ block size; default ``state.k``).
      tol: relative accuracy: stop when every top-k value's error estimate is
        ≤ ``max(tol·|θ_i|, atol)``. May be traced.
      atol: absolute floor of the accuracy (useful when some top-k values are ≈ 0).
      max_products: cap on products per call (default ``max(100, 20·b)`` plus the cold or
        check products). May be traced.
      max_basis: subspace capacity before a thick restart (static; default ``b + max(8, b)``).
      cold_basis: depth of the first call's block Krylov space (static; default
        ``max(32, 4·b)``, capped at n): a random block alone can converge to a lower member of
        a top cluster larger than the block; a Krylov space this deep resolves the top of the
        spectrum before the stopping rule is trusted.
      check_every: every this many calls (0: never) the warm start is checked for an
        eigenvalue above the tracked set: ``check_depth`` Lanczos products from a
        pseudo-random vector in the complement of the block join the subspace (static).
      check_depth: products of that check (static).

    Returns:
      ``(new_state, TrackResult)``. Costs at least ``k`` products per call, and at least
      ``b`` at every call that follows one that skipped its guards (``state.lazy``).
    """
    k = state.k if k is None else int(k)
    b, n = state.vectors.shape
    if not 1 <= k <= b:
        raise EoslabError(f"k={k} must be between 1 and the block size {b}")
    M = min(n, b + max(8, b) if max_basis is None else int(max_basis))
    if M < b:
        raise EoslabError(f"max_basis={max_basis} is smaller than the block size {b}")
    cold = min(n, max(32, 4 * b) if cold_basis is None else int(cold_basis))
    check_every, check_depth = int(check_every), int(check_depth)
    check = min(n, b + check_depth) if check_every > 0 and check_depth > 0 else b
    max_products = max(100, 20 * b) if max_products is None else max_products
    nr = min(b + 1, M)                                   # Ritz pairs examined
    keep = max(b + 1, (M + b) // 2) if M > b + 1 else b  # kept at a thick restart
    dtype = state.vectors.dtype
    scales = (jnp.zeros((state.k,), dtype) if state.scales is None else state.scales.astype(dtype))
    scales = jnp.zeros((k,), dtype) if k != state.k else scales
    mv = lambda v: matvec(v.astype(dtype)).astype(dtype)

    X = _orthonormal_block(state.vectors, state.count)
    AXk = jax.vmap(mv)(X[:k])             # the tracked vectors' products: always needed
    first = state.count == 0
    checking = (~first) & (state.count % max(check_every, 1) == 0) if check > b else jnp.asarray(False)

    def solve():
        AX = jnp.concatenate([AXk, jax.vmap(mv)(X[k:])])

        def warm(X, AX):
            pad = jnp.zeros((M - b, n), dtype)
            return jnp.concatenate([X, pad]), jnp.concatenate([AX, pad]), jnp.asarray(b), jnp.asarray(b, jnp.int32)

        def deep(size, stride, seed0, salt):
            def start(X, AX):
                V, AV, m = _krylov_start(mv, X, AX, size, stride, seed0, salt, keep, M)
                return V, AV, m, jnp.asarray(size, jnp.int32)
            return start

        branches = [warm]
        if cold > b:      # the first call: a block Krylov space of depth `cold` from the block
            branches.append(deep(cold, b, None, state.count))
        if check > b:     # the periodic check: Lanczos in the complement of the block
            seed = _pseudo_random((n,), 17 + state.count, dtype)
            branches.append(deep(check, 1, seed, state.count + 1))
        mode = jnp.where(first, 1 if cold > b else 0, jnp.where(checking, len(branches) - 1, 0))
        V, AV, m0, nprod0 = jax.lax.switch(mode, branches, X, AX) if len(branches) > 1 else warm(X, AX)
        cap = max_products + nprod0 - b    # the deep start's Krylov products come on top

        def expand(V, AV, m, Y, R, i):
            # Thick restart when full: keep the top Ritz vectors (A times them is known).
            def restart(V, AV):
                Yk = Y[:, :keep]
                pad = jnp.zeros((M - keep, n), dtype)
                return jnp.concatenate([Yk.T @ V, pad]), jnp.concatenate([Yk.T @ AV, pad]), jnp.asarray(keep)

            V, AV, m = jax.lax.cond(m >= M, restart, lambda V, AV: (V, AV, m), V, AV)
            # Grow the space where the stopping rule is furthest from holding: add the
            # residual of Ritz vector i (a block-Krylov direction), chosen by _errors.
            w = _orth(R[i], V)
            nw = jnp.linalg.norm(w)
            ok = nw > 1e3 * jnp.finfo(dtype).eps * jnp.linalg.norm(R[i])
            alt = _orth(_pseudo_random((n,), m + 7 * state.count, dtype), V)
            w = jnp.where(ok, w / jnp.where(ok, nw, 1.0), alt / jnp.linalg.norm(alt))
            return V.at[m].set(w), AV.at[m].set(mv(w)), m + 1

        def body(c):
            V, AV, m, nprod, started, (theta, Y, U, R, rn, err, ratio, choice) = c
            V, AV, m = jax.lax.cond(started, expand, lambda V, AV, m, *_: (V, AV, m), V, AV, m, Y, R,
                                    choice[jnp.argmax(ratio)])
            nprod = nprod + started.astype(jnp.int32)
            theta, Y = _ritz_basis(V, AV, m, max(nr, keep))
            Yr = Y[:, :nr]
            U, AU = Yr.T @ V, Yr.T @ AV
            R = AU - theta[:nr, None] * U
            rn = jnp.linalg.norm(R, axis=1)
            err, choice = _errors(theta[:nr], rn, m, k, b)
            # At the block-only check, also trust the residual's effective gap measured by an
            # earlier call (SCALE_SAFETY × ‖r‖² / g): the spectrum seen by the residual moves
            # slowly, and most of a residual lies far below a tight top cluster.
            est = _effective_gap_estimate(rn[:k] ** 2, scales)
            # Where that estimate is the smaller one, the error sits in the tracked vector's
            # own residual rather than in the gap to a guard: grow the space along it.
            choice = jnp.where(est < err, jnp.arange(k, dtype=jnp.int32), choice)
            err = jnp.where(started, err, jnp.minimum(err, est))
            ratio = err / jnp.maximum(tol * jnp.abs(theta[:k]), atol)
            return V, AV, m, nprod, jnp.asarray(True), (theta, Y, U, R, rn, err, ratio, choice)

        def cond(c):
            _, _, _, nprod, started, (theta, *_, ratio, _) = c
            finite = jnp.all(jnp.isfinite(theta[:k])) & ~jnp.any(jnp.isnan(ratio))
            return ~started | ((jnp.max(ratio) > 1.0) & (nprod < cap) & finite)

        nk = max(nr, keep)
        z = lambda *shape: jnp.zeros(shape, dtype)
        ritz0 = (z(nk), z(M, nk), z(nr, n), z(nr, n), z(nr), z(k), z(k), jnp.zeros((k,), jnp.int32))
        c0 = (V, AV, m0, nprod0, jnp.asarray(False), ritz0)
        # The starting Rayleigh-Ritz (its residuals and values feed the effective gaps).
        c1 = body(c0)
        theta0, rn0 = c1[5][0][:k], c1[5][4][:k]
        _, _, _, nprod, _, (theta, _, U, _, rn, err, ratio, _) = jax.lax.while_loop(cond, body, c1)
        # Effective gap of each tracked value's residual: ‖r‖² at the start over the increase of
        # the Ritz value the expansions bought (the Ritz value only rises with the subspace). If
        # this call did not expand, reuse the old one, shrunk so that it is re-measured regularly.
        # The starting value's error is about the rise plus the final value's (estimated) error.
        rise = theta[:k] - theta0 + err
        measured = (nprod > nprod0) & (rise > 0) & jnp.isfinite(rise)
        fresh = rn0 ** 2 / jnp.where(measured, rise, 1.0)
        gaps = jnp.where(measured, fresh, SCALE_DECAY * scales)
        gaps = jnp.where(jnp.isfinite(gaps), gaps, 0.0).astype(dtype)
        if k != state.k:                    # a different k: leave the carried gaps alone
            gaps = state.scales

        # Did a new direction enter the top-k subspace? Smallest principal cosine.
        O = U[:k] @ state.vectors[:k].T.astype(dtype)
        overlap = jnp.min(jnp.linalg.svd(O, compute_uv=False))
        result = TrackResult(theta[:k], rn[:k], err, U[:k], nprod, jnp.max(ratio) <= 1.0,
                             (~first) & (overlap < ENTRY_OVERLAP), jnp.where(first, jnp.nan, overlap))
        return TrackState(U[:b], theta[:b], state.count + 1, state.k, gaps, jnp.asarray(False)), result

    if k == b or k != state.k:
        return solve()
    skip, skipped = _skip_guards(state, X, AXk, scales, tol, atol)
    return jax.lax.cond(skip & ~checking, lambda: skipped, solve)


def _effective_gap_estimate(r2, scales):
    """``SCALE_SAFETY · r2 / g`` for each carried effective gap g > 0 (inf where none)."""
    return jnp.where(scales > 0, SCALE_SAFETY * r2 / jnp.where(scales > 0, scales, 1.0), jnp.inf)


def _skip_guards(state: TrackState, X, AXk, scales, tol, atol):
    """Can this call stop after the k tracked products, without multiplying the guards?

    Rayleigh-Ritz on the tracked rows ``X[:k]`` alone (their products ``AXk`` are known).
    Each residual r_i is split into its part on the (unmultiplied) guard rows G = X[k:] and
    the rest: the rest is judged with the carried effective gap like the block-only check,
    and the part on the guards with the gap from θ_i to the top guard's value at the last
    call, ``‖Gr_i‖² / (θ_i − θ_{k+1})`` (mixing with a guard direction costs little in value
    when they are close, but is only ignored in proportion to that gap). Allowed only if the
    previous call multiplied its guards, so a guard is never more than one call old and a
    value that rises from below is seen (and ``entered`` reported) at most one call late.

    Returns ``(ok, (new_state, result))``; the result is only meaningful where ``ok``.
    """
    k, dtype = AXk.shape[0], AXk.dtype
    w, U, R, rn = _ritz(X[:k], AXk, k, k)
    on_guards = jnp.sum((R @ X[k:].T) ** 2, axis=1)
    rest = jnp.maximum(rn ** 2 - on_guards, 0.0)
    old = state.values.astype(dtype)
    gap = old[:k] - old[k]
    near = jnp.where(gap > 0, on_guards / jnp.where(gap > 0, gap, 1.0), jnp.inf)
    err = jnp.minimum(rn, _effective_gap_estimate(rest, scales) + SCALE_SAFETY * near)
    fresh = ~(state.lazy if state.lazy is not None else jnp.asarray(False))
    ok = (fresh & (state.count > 0) & jnp.all(jnp.isfinite(w)) & jnp.all(jnp.isfinite(err))
          & jnp.all(err <= jnp.maximum(tol * jnp.abs(w), atol)))
    overlap = jnp.min(jnp.linalg.svd(U @ state.vectors[:k].T.astype(dtype), compute_uv=False))
    result = TrackResult(w, rn, err, U, jnp.asarray(k, jnp.int32), jnp.asarray(True),
                         overlap < ENTRY_OVERLAP, overlap)
    new = TrackState(jnp.concatenate([U, X[k:]]), jnp.concatenate([w, old[k:]]), state.count + 1,
                     state.k, (SCALE_DECAY * scales).astype(dtype), jnp.asarray(True))
    return ok, (new, result)


def _pseudo_random(shape, salt, dtype) -> jax.Array:
    """Cheap deterministic pseudo-random entries in [−½, ½) (a sine hash), used only to
    replace degenerate directions; avoids compiling a PRNG into every tracking step."""
    i = jnp.arange(int(np.prod(shape)), dtype=jnp.float32).reshape(shape)
    x = jnp.sin(12.9898 * jnp.mod(i, 7919.0) + 78.233 * jnp.floor(i / 7919.0)
                + 0.618 * jnp.asarray(salt, jnp.float32)) * 43758.5453
    return (x - jnp.floor(x) - 0.5).astype(dtype)


# ---- the operators of a Problem, side by side ---------------------------------------------

#: Operators :func:`track_spectra` can follow. For MSE the Hessian is the Gauss-Newton term
#: ``JᵀJ/norm`` plus the residual term ``Σ_α z_α ∇²f_α / norm``; the NTK ``J Jᵀ/norm`` has
#: the same non-zero eigenvalues as the Gauss-Newton matrix (it acts on outputs, not params).
OPERATORS = ("hessian", "ntk", "gauss_newton")


def operator(problem, params, which: str):
    """``(matvec, dim)`` of the named operator of ``problem`` at ``params`` (see :data:`OPERATORS`)."""
    builders = {"hessian": hvp, "ntk": ntk_vp, "gauss_newton": gnvp}
    if which not in builders:
        raise EoslabError(f"unknown operator {which!r}; expected one of {OPERATORS}")
    return builders[which](problem, params)


@follows("problem")
def spectra_init(problem, k: int = 1, key=None, which=OPERATORS, block: int | None = None,
                 params=None) -> dict:
    """Cold :class:`TrackState` s for the operators ``which`` of ``problem`` (dict by name).

    The vectors take the parameters' dtype (float32 networks stay float32)."""
    flat = ravel_pytree(problem.params if params is None else params)[0]
    key = jax.random.PRNGKey(0) if key is None else key
    states = {}
    for i, name in enumerate(which):
        if name not in OPERATORS:
            raise EoslabError(f"unknown operator {name!r}; expected one of {OPERATORS}")
        dim = problem.targets.size if name == "ntk" else flat.size
        states[name] = track_init(dim, min(k, dim), jax.random.fold_in(key, i), flat.dtype, block)
    return states


@follows("problem", "params")
def track_spectra(problem, params, states: dict, *, tol=1e-3, atol=0.0, max_products=None):
    """Advance every tracker in ``states`` (from :func:`spectra_init`) to ``params``.

    Jittable; the operators are the keys of ``states``. Returns ``(new_states, results)``,
    two dicts keyed like ``states`` (results: :class:`TrackResult`)."""
    new, results = {}, {}
    for name, st in states.items():
        mv, _ = operator(problem, params, name)
        new[name], results[name] = track(mv, st, tol=tol, atol=atol, max_products=max_products)
    return new, results


def data_subset(problem, indices):
    """The same problem restricted to the examples ``indices`` (Cohen et al.'s fixed subset).

    Slices the leading axis of every leaf of ``problem.data`` and of the targets. With the
    default normaliser (``norm=None``) the loss stays a *mean* over the kept examples, and an
    explicit ``norm`` is scaled by the kept fraction, so the subset's Hessian estimates the
    full one; build the matvec on it once and track with
    it at every step (see docs/tracking.md)."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0:
        raise EoslabError("indices must be a non-empty 1-D array of example indices")
    if idx.min() < -problem.n or idx.max() >= problem.n:
        raise EoslabError(f"indices out of range for a problem with {problem.n} examples")
    take = lambda x: jnp.asarray(x)[idx]
    norm = None if problem.norm is None else problem.norm * idx.size / problem.n
    return dataclasses.replace(problem, data=jax.tree_util.tree_map(take, problem.data),
                               targets=take(problem.targets), norm=norm)
