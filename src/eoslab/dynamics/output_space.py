"""GD of a second-order model in output space: the exact (z, J) recurrences.

With ``g = Jᵀz / norm`` the parameter update is ``δθ = −η g`` and, because f is exactly
quadratic in θ,

    z' = z − η J g + ½ η² Q(g, g),        J' = J − η Q(g, ·).

The state never mentions θ. The η² term ``½η²Q(g, g)`` (with the J update) is what the
linearised (constant-NTK) model misses: :func:`output_step` returns it so that the
non-linear dynamical contribution can be measured.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from eoslab.dynamics.gd import check_run_args, record
from eoslab.dynamics.stepper import masked_scan
from eoslab.models.second_order import SecondOrder, jacobian, predict
from eoslab.spectra.dense import top_eigvals
from eoslab.spectra.lanczos import fixed_start, lanczos
from eoslab._precision import x64
from eoslab.typing import Array, Float, Scalar


@x64
def output_step(z: Float[Array, " D"], J: Float[Array, "D P"], Q: Float[Array, "D P P"], lr: Scalar, norm: float
                ) -> tuple[Float[Array, " D"], Float[Array, "D P"], Float[Array, " D"], Float[Array, " D"]]:
    """One GD step in output space.

    Args: z (D,), J (D, P), Q (D, P, P), lr η, norm the loss normaliser.
    Returns ``(z', J', linear, nonlinear)`` with ``linear = ηJg`` and
    ``nonlinear = ½η²Q(g, g)`` (both (D,)), so ``z' = z − linear + nonlinear``.
    """
    g = J.T @ z / norm
    Qg = jnp.einsum("apq,q->ap", Q, g)  # the one O(D·P²) contraction per step
    linear = lr * (J @ g)
    nonlinear = 0.5 * lr**2 * (Qg @ g)
    return z - linear + nonlinear, J - lr * Qg, linear, nonlinear


@x64
def output_hessian(z: Float[Array, " D"], J: Float[Array, "D P"], Q: Float[Array, "D P P"], norm: float) -> Float[Array, "P P"]:
    """Loss Hessian ``(JᵀJ + Σ_α z_α Q_α) / norm`` (P, P)."""
    return (J.T @ J + jnp.einsum("a,apq->pq", z, Q)) / norm


@x64
def output_ntk(J: Float[Array, "D P"], norm: float) -> Float[Array, "D D"]:
    """NTK ``J Jᵀ / norm`` (D, D) (see :func:`eoslab.spectra.dense.ntk_matrix`)."""
    return J @ J.T / norm


@x64
def gd_output(model: SecondOrder, lr: Scalar, steps: int, *, k: int = 2, spectra: str = "dense",
              lanczos_iters: int = 20, theta0: Float[Array, " P"] | None = None, record_nonlinear: bool = False
              ) -> tuple[dict[str, Float[Array, "T ..."]], tuple[Float[Array, " D"], Float[Array, "D P"]]]:
    """GD on a second-order model, iterated in output space.

    Starts from ``z₀ = f(θ₀)``, ``J₀ = J(θ₀)`` (θ₀ = ``model.theta0`` unless given).
    ``spectra`` as in :func:`eoslab.dynamics.gd` (``"lanczos"`` uses matrix-free Hessian
    products ``v ↦ (Jᵀ(Jv) + Q(z, v))/norm``, warm-started, step 0 from the deterministic
    :func:`~eoslab.spectra.lanczos.fixed_start`; the NTK, D×D, is always dense).
    ``record_nonlinear`` adds ``"linear_norm"`` = ‖ηJg‖ and ``"nonlinear_norm"`` = ‖½η²Q(g,g)‖.

    Returns ``(trajectory, (z_final, J_final))`` with the keys of
    :data:`eoslab.dynamics.TRAJECTORY_KEYS`.
    """
    check_run_args(lr, steps, k, spectra)
    theta0 = model.theta0 if theta0 is None else theta0
    return _gd_output(model, jnp.asarray(lr), theta0, steps=steps, k=k, spectra=spectra,
                      lanczos_iters=lanczos_iters, record_nonlinear=record_nonlinear)


@functools.partial(jax.jit, static_argnames=("steps", "k", "spectra", "lanczos_iters", "record_nonlinear"))
def _gd_output(model, lr, theta0, *, steps, k, spectra, lanczos_iters, record_nonlinear):
    norm = model.normaliser
    Q = model.Q
    dtype = Q.dtype

    def advance(state):
        z, J, warm = state
        loss = jnp.sum(z**2) / (2 * norm)
        if spectra == "dense":
            he = top_eigvals(output_hessian(z, J, Q, norm), k)
        elif spectra == "lanczos":
            mv = lambda v: (J.T @ (J @ v) + jnp.einsum("a,apq,q->p", z, Q, v)) / norm
            res = lanczos(mv, warm, lanczos_iters, k)
            he, warm = res.values, res.vectors[0]
            he = jnp.concatenate([he, jnp.full((k - he.shape[0],), jnp.nan, dtype)])
        else:
            he = jnp.full((k,), jnp.nan, dtype)
        ne = top_eigvals(output_ntk(J, norm), k) if spectra != "none" else jnp.full((k,), jnp.nan, dtype)
        z2, J2, lin, nonlin = output_step(z, J, Q, lr, norm)
        rec = record(loss, z, jnp.linalg.norm(J.T @ z) / norm, he, ne, lr)
        if record_nonlinear:
            rec["linear_norm"] = jnp.linalg.norm(lin)
            rec["nonlinear_norm"] = jnp.linalg.norm(nonlin)
        return (z2, J2, warm), rec, (loss, z2, J2)

    z0, J0 = predict(theta0, model), jacobian(theta0, model)
    warm0 = fixed_start(theta0.shape[-1], dtype)
    (z, J, _), traj = masked_scan(advance, (z0, J0, warm0), steps)
    return traj, (z, J)
