"""Types shared by the library: jaxtyping array shapes and the callables eoslab takes.

Shape names used across the package: ``P`` parameters, ``D`` (or ``N``) datapoints / outputs,
``B`` runs of a batch, ``T`` steps, ``k`` eigenpairs, ``n`` the dimension a matvec acts on. The
annotations document shapes; they are not checked at run time (no jaxtyping decorator on the
hot paths).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray, PyTree

__all__ = ["Array", "ArrayLike", "Bool", "DTypeLike", "Float", "Int", "PRNGKeyArray", "PyTree", "Params", "Scalar", "Schedule", "Matvec", "LossFn",
           "ApplyFn", "PredictFn"]

#: Parameters: any pytree of arrays (a flat vector (P,) for the second-order models).
Params = PyTree

#: A hyper-parameter such as a step size: a Python number or a 0-d array (traced, so it can be
#: ``vmap``-ped over).
Scalar = float | Float[ArrayLike, ""]

#: A step-size schedule in optax's convention: the int step count ↦ η_t.
Schedule = Callable[[Int[Array, ""]], Float[Array, ""]]


class Matvec(Protocol):
    """A symmetric linear operator on Rⁿ given by its product: ``v (n,) ↦ A v (n,)``
    (Hessian-, NTK- and Gauss-Newton-vector products, :mod:`eoslab.spectra.operators`)."""

    def __call__(self, v: Float[Array, " n"], /) -> Float[Array, " n"]: ...


class LossFn(Protocol):
    """A loss of flat parameters: ``w (P,) ↦ L(w)`` (a scalar array), differentiable by JAX."""

    def __call__(self, w: Float[Array, " P"], /) -> Float[Array, ""]: ...


class ApplyFn(Protocol):
    """A network or model in the ``apply(params, inputs) -> outputs`` convention of Flax and
    Equinox (what :meth:`eoslab.Problem.from_model` takes): outputs (N, out) or (N,)."""

    def __call__(self, params: Any, inputs: Any, /) -> Float[Array, "N ..."]: ...


class PredictFn(Protocol):
    """The model function of a :class:`~eoslab.Problem`: ``fn(params, data) -> f`` (N, ...)."""

    def __call__(self, params: Any, data: Any, /) -> Float[Array, "N ..."]: ...
