"""Top-k eigenvalues of the Hessian and NTK of a Problem at given parameters."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from eoslab._precision import follows
from eoslab.errors import EoslabError
from eoslab.problem import Params, Problem
from eoslab.spectra.dense import hessian_matrix, ntk_matrix, top_eigvals
from eoslab.spectra.lanczos import lanczos
from eoslab.spectra.operators import hvp, ntk_vp
from eoslab.typing import Array, Float, PRNGKeyArray

METHODS = ("dense", "lanczos")


def _pad(values: jax.Array, k: int) -> jax.Array:
    if values.shape[-1] >= k:
        return values
    return jnp.concatenate([values, jnp.full((k - values.shape[-1],), jnp.nan, values.dtype)])


def _need_key(key) -> None:
    if key is None:
        raise EoslabError("method='lanczos' draws a random start vector: pass key=jax.random.PRNGKey(seed)")


def _start(key, n, dtype):
    return jax.random.normal(key, (n,), dtype)


@follows("problem", "params")
def hessian_top(problem: Problem, params: Params | None = None, k: int = 2, method: str = "dense",
                num_iters: int = 40, key: PRNGKeyArray | None = None) -> Float[Array, " k"]:
    """The k largest algebraic eigenvalues of ∇²L(θ), (k,), descending. ``method="lanczos"``
    needs ``key``: its random start vector (the values depend on it at the Lanczos accuracy)."""
    params = problem.params if params is None else params
    if method == "dense":
        return top_eigvals(hessian_matrix(problem, params), k)
    mv, n = hvp(problem, params)
    _need_key(key)
    dtype = jax.flatten_util.ravel_pytree(params)[0].dtype
    return _pad(lanczos(mv, _start(key, n, dtype), num_iters, k).values, k)


@follows("problem", "params")
def ntk_top(problem: Problem, params: Params | None = None, k: int = 2, method: str = "dense",
            num_iters: int = 40, key: PRNGKeyArray | None = None) -> Float[Array, " k"]:
    """The k largest eigenvalues of the NTK ``J Jᵀ / norm`` (see :func:`ntk_matrix`), (k,);
    ``method="lanczos"`` needs ``key`` (as :func:`hessian_top`)."""
    params = problem.params if params is None else params
    if method == "dense":
        return top_eigvals(ntk_matrix(problem, params), k)
    mv, n = ntk_vp(problem, params)
    _need_key(key)
    return _pad(lanczos(mv, _start(key, n, jnp.result_type(problem.targets)), num_iters, k).values, k)
