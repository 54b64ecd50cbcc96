"""The linearised update of any optax optimizer: eigenvalues of one step's Jacobian.

One step of an optimizer on a loss L is a map of the whole state z = (θ, s) (parameters and the
optimizer's floating-point state: momenta, moments, …):

    F(θ, s) = (θ + u, s'),    (u, s') = tx.update(∇L(θ), s, θ).

Its Jacobian J = ∂F/∂z at the current z says how a small perturbation of the state grows in one
step. For every optimizer whose edge eoslab knows, the edge of stability is where an eigenvalue μ
of J leaves the unit disc through −1 (a period-doubling "flip"):

* GD: J = I − ηH, μ = 1 − ηλ; μ = −1 at ηλ = 2.
* heavy-ball (optax's form m ← βm + g, θ ← θ − ηm): per eigenvalue λ of H the pair of roots of
  μ² − (1 + β − ηλ)μ + β = 0; a root is −1 exactly at ηλ = 2(1 + β).
* Nesterov, RMSProp and Adam with the preconditioner frozen: the same, with their own edges
  (:mod:`eoslab.dynamics.optim`).

So for *any* optax transformation eoslab reports the **effective sharpness ratio**

    r = (1 − min Re μ) / 2,

which is ηλ_max/2 for GD exactly (the usual edge ratio) and equals 1 at a flip instability for
every optimizer, together with the eigenvalues of J nearest that edge and J's spectral radius. It
is a local, one-step statement: for adaptive methods J includes the dependence of the moments on
the gradient (the preconditioner is *not* frozen), and an instability that is not a flip (an
eigenvalue leaving through +1 or a complex pair leaving the disc, e.g. from negative curvature) is
visible in the spectral radius, not in r. Integer state (step counts) is held fixed; floating
hyperparameters stored in the state (eoslab's built-ins keep η and β there) are constants of F, so
they add eigenvalues exactly 1 and do not change r.

The eigenvalues come from Arnoldi on Jacobian-vector products of F (one forward-mode product of
one optimizer step each, i.e. one Hessian-vector product for the optimizers above), or from the
dense Jacobian for small problems (``dense=True``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from eoslab.errors import EoslabError, check_positive_int
from eoslab.spectra.lanczos import fixed_start
from eoslab.typing import Array, Float, Params, PyTree


class StepEigs(NamedTuple):
    """Result of :func:`step_eigs` (NumPy).

    Attributes:
      eigenvalues: (k,) complex, the eigenvalues μ of J with the smallest real parts, ascending.
      residuals: (k,) Arnoldi residual norms ‖Jx − μx‖ of their unit Ritz vectors (0 when dense).
      ratio: (1 − min Re μ)/2, the effective sharpness ratio (1 at a flip instability).
      spectral_radius: max |μ| over the computed eigenvalues (over all of them when dense).
      dim: size of the linearised state (parameters + floating optimizer state).
      products: Jacobian-vector products used.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    ratio: float
    spectral_radius: float
    dim: int
    products: int


def _state_split(params, opt_state):
    """The float leaves of (params, opt_state) as one vector, and the map back (ints held fixed)."""
    leaves, treedef = jax.tree_util.tree_flatten((params, opt_state))
    free = [i for i, x in enumerate(leaves) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    if not free:
        raise EoslabError("step_eigs: the parameters and optimizer state have no floating-point entries")
    dtype = jnp.result_type(*[leaves[i] for i in free])
    shapes = [jnp.shape(leaves[i]) for i in free]
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.cumsum([0] + sizes)

    def pack(tree):
        lv = jax.tree_util.tree_leaves(tree)
        return jnp.concatenate([jnp.ravel(jnp.asarray(lv[i])).astype(dtype) for i in free])

    def unpack(x):
        lv = list(leaves)
        for j, i in enumerate(free):
            lv[i] = x[offsets[j]:offsets[j + 1]].reshape(shapes[j]).astype(jnp.asarray(leaves[i]).dtype)
        return jax.tree_util.tree_unflatten(treedef, lv)

    return pack((params, opt_state)), pack, unpack


def step_map(loss_fn: Callable, tx: optax.GradientTransformation, params: Params, opt_state: PyTree
             ) -> tuple[Callable[[Float[Array, " n"]], Float[Array, " n"]], Float[Array, " n"]]:
    """One optimizer step as a map of the flat state: ``(F, z0)`` with ``F: (dim,) -> (dim,)``
    pure and ``z0`` the flat current state (float leaves of (params, opt_state))."""
    z0, pack, unpack = _state_split(params, opt_state)

    def F(z):
        p, s = unpack(z)
        u, s2 = tx.update(jax.grad(loss_fn)(p), s, p)
        return pack((optax.apply_updates(p, u), s2))

    return F, z0


def _arnoldi(jvp, z0, krylov):
    n = z0.shape[0]
    m = min(krylov, n)
    V = np.zeros((m + 1, n))
    Hm = np.zeros((m + 1, m))
    V[0] = np.asarray(fixed_start(n, jnp.float32), np.float64)  # no key: the same run every time
    V[0] /= np.linalg.norm(V[0])
    used = 0
    for j in range(m):
        w = np.asarray(jvp(jnp.asarray(V[j], z0.dtype)), np.float64)
        used += 1
        for _ in range(2):  # classical Gram–Schmidt twice: orthogonal to working precision
            c = V[:j + 1] @ w
            w = w - c @ V[:j + 1]
            Hm[:j + 1, j] += c
        Hm[j + 1, j] = np.linalg.norm(w)
        if Hm[j + 1, j] <= 1e-12 * max(1.0, np.abs(Hm[:j + 2, :j + 1]).max()):
            m = j + 1  # invariant subspace: the Ritz values are exact
            break
        V[j + 1] = w / Hm[j + 1, j]
    mu, Y = np.linalg.eig(Hm[:m, :m])
    Y = Y / np.linalg.norm(Y, axis=0)
    return mu, np.abs(Hm[m, m - 1] * Y[m - 1, :]), used


def step_eigs(loss_fn: Callable, tx: optax.GradientTransformation, params: Params, opt_state: PyTree | None = None,
              *, k: int = 4,
              krylov: int = 40, dense: bool = False) -> StepEigs:
    """Eigenvalues of the Jacobian of one step of ``tx`` on ``loss_fn`` at (``params``, ``opt_state``).

    Args:
      loss_fn: ``params -> scalar`` (e.g. ``problem.loss_fn``).
      tx: any optax ``GradientTransformation`` (eoslab's optimizers included).
      params: the parameters θ (any pytree).
      opt_state: the optimizer state s at θ (default ``tx.init(params)``).
      k: how many eigenvalues to return (those with the smallest real parts).
      krylov: Arnoldi steps (Jacobian-vector products); more resolve the extreme eigenvalues better.
        Arnoldi converges first to the eigenvalues on the edge of the spectrum, which the flip
        eigenvalue is; check ``residuals``.
      dense: build the dense Jacobian (dim forward products) and use ``numpy.linalg.eig``.
        Arnoldi starts from the deterministic :func:`eoslab.spectra.lanczos.fixed_start`.

    Returns:
      :class:`StepEigs`.
    """
    k = check_positive_int("k", k)
    krylov = check_positive_int("krylov", krylov)
    if opt_state is None:
        opt_state = tx.init(params)
    F, z0 = step_map(loss_fn, tx, params, opt_state)
    n = int(z0.shape[0])
    if dense:
        J = np.asarray(jax.jit(jax.jacfwd(F))(z0), np.float64)
        mu, res, used = np.linalg.eigvals(J), np.zeros(n), n
    else:
        jvp = jax.jit(lambda v: jax.jvp(F, (z0,), (v,))[1])
        mu, res, used = _arnoldi(jvp, z0, krylov)
    order = np.argsort(mu.real)
    mu, res = mu[order], res[order]
    return StepEigs(eigenvalues=mu[:k], residuals=res[:k], ratio=float((1 - mu.real[0]) / 2),
                    spectral_radius=float(np.abs(mu).max()), dim=n, products=int(used))
