"""The :class:`Problem`: a model (a pure function) plus its data, targets, loss and initial parameters.

Everything in :mod:`eoslab.spectra` and :mod:`eoslab.dynamics` works from a ``Problem``,
so a user's own JAX model plugs in exactly like the paper's models.

A ``Problem`` is a pytree: ``data``, ``targets`` and ``params`` are leaves (so a batch of
problems, e.g. random models for many seeds, can be ``vmap``-ed), while the function and
the loss kind are static.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from eoslab.errors import EoslabError, check_positive

Params = Any
LOSSES = ("mse", "cross_entropy")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Problem:
    """A supervised problem ``L(θ) = loss(fn(θ, data), targets)``.

    Attributes:
      fn: ``fn(params, data) -> outputs`` with outputs of shape ``(n,)`` or ``(n, c)``
        (``n`` examples/datapoints, ``c`` outputs each). Static.
      data: inputs passed to ``fn`` (any pytree; may be ``None``).
      targets: array with the same shape as the outputs (one-hot for cross-entropy).
      params: initial parameters θ₀, any pytree.
      loss: ``"mse"``: ``L = Σ (f − y)² / (2·norm)``; ``"cross_entropy"``: mean softmax
        cross-entropy over the ``n`` examples; or a callable ``loss(outputs, targets)`` (e.g.
        ``optax.softmax_cross_entropy``, ``optax.l2_loss``) whose result, per example or per
        element, is summed over the output axes and averaged over the ``n`` examples. Static.
      norm: the MSE normaliser; ``None`` means ``n`` (number of examples), so the 2-D
        model (n = 1) has ``L = ½(f − E)²`` and a second-order model ``1/(2D) Σ z²``.
        Static.
    """

    fn: Callable = dataclasses.field(metadata=dict(static=True))
    data: Any
    targets: jax.Array
    params: Params
    loss: str | Callable = dataclasses.field(default="mse", metadata=dict(static=True))
    norm: float | None = dataclasses.field(default=None, metadata=dict(static=True))

    def __post_init__(self):
        if not callable(self.loss) and self.loss not in LOSSES:
            raise EoslabError(f"unknown loss {self.loss!r}; expected one of {LOSSES} or a callable "
                              "loss(outputs, targets) such as optax.softmax_cross_entropy")
        if self.norm is not None:
            check_positive("norm", self.norm)

    # ---- construction -------------------------------------------------------------
    @classmethod
    def from_model(cls, apply_fn: Callable, params: Params, inputs: Any, targets,
                   loss: str = "mse", norm: float | None = None) -> "Problem":
        """Wrap any JAX ``apply_fn(params, x) -> outputs`` and its data.

        The outputs of ``apply_fn(params, inputs)`` must have the shape of ``targets``, except that
        integer class labels (n,) are accepted for a classification loss with outputs (n, c): they
        become one-hot targets in the outputs' dtype. ``params`` must hold only what is trained:
        a model with mutable state (Flax ``batch_stats``, caches) is refused with a recipe, since
        its state would otherwise be differentiated and updated as parameters.
        """
        _refuse_mutable_state(params)
        if targets is None or isinstance(targets, (str, bytes)):
            raise EoslabError(f"targets must be a numeric array, got {type(targets).__name__}")
        try:
            targets = jnp.asarray(targets)
        except (TypeError, ValueError) as e:
            raise EoslabError(f"targets must be a numeric array ({e})") from None
        if not (jnp.issubdtype(targets.dtype, jnp.number) or targets.dtype == bool) or targets.ndim == 0:
            raise EoslabError(f"targets must be a numeric array of shape (n,) or (n, c), got dtype "
                              f"{targets.dtype} and shape {targets.shape}")
        if not callable(apply_fn):
            raise EoslabError(f"apply_fn must be a function apply_fn(params, x), got {type(apply_fn).__name__}")
        try:
            out = jax.eval_shape(apply_fn, params, inputs)
        except Exception as e:  # noqa: BLE001 - any failure of the user's model on its inputs
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise EoslabError(f"apply_fn(params, inputs) fails on these inputs ({type(e).__name__}: "
                              f"{first[:200]}); check the input width and the parameters") from None
        if not hasattr(out, "shape"):
            raise EoslabError(f"apply_fn must return one array of outputs, got a {type(out).__name__} "
                              "(return the outputs only, e.g. `lambda p, x: model(p, x)[0]`)")
        if (jnp.issubdtype(targets.dtype, jnp.integer) and targets.ndim == 1 and len(out.shape) == 2
                and out.shape[0] == targets.shape[0] and loss != "mse"):
            c = out.shape[1]  # integer class labels: one-hot targets in the outputs' dtype
            if targets.size and (int(targets.min()) < 0 or int(targets.max()) >= c):
                raise EoslabError(f"integer labels must lie in 0..{c - 1} (the model has {c} outputs), "
                                  f"got {int(targets.min())}..{int(targets.max())}")
            targets = jax.nn.one_hot(targets, c, dtype=out.dtype)
        if loss == "cross_entropy" and targets.ndim != 2:
            raise EoslabError(f"cross_entropy needs one-hot targets of shape (n, c), got shape {targets.shape}")
        if out.shape != targets.shape:
            raise EoslabError(
                f"model outputs have shape {out.shape} but targets have shape {targets.shape}")
        return cls(apply_fn, inputs, targets, params, loss, norm)

    def with_params(self, params: Params) -> "Problem":
        return dataclasses.replace(self, params=params)

    def subset(self, indices) -> "Problem":
        """The same problem restricted to the examples ``indices`` (Cohen et al.'s fixed subset).

        Slices the leading axis of the targets and of every leaf of ``data`` (data that is not
        one array per example, e.g. a Taylor model's expansion point, provides its own
        ``subset(indices)`` method). With the default normaliser (``norm=None``) the MSE loss stays
        a *mean* over the kept examples, and an explicit ``norm`` is scaled by the kept fraction,
        so the subset's Hessian estimates the full one."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise EoslabError("indices must be a non-empty 1-D array of integer example indices")
        if idx.min() < -self.n or idx.max() >= self.n:
            raise EoslabError(f"indices out of range for a problem with {self.n} examples")
        take = lambda x: jnp.asarray(x)[idx]
        data = (self.data.subset(idx) if hasattr(self.data, "subset")
                else jax.tree_util.tree_map(take, self.data))
        norm = None if self.norm is None else self.norm * idx.size / self.n
        return dataclasses.replace(self, data=data, targets=take(self.targets), norm=norm)

    # ---- the maps -----------------------------------------------------------------
    @property
    def n(self) -> int:
        """Number of examples (leading axis of the targets)."""
        return self.targets.shape[0]

    @property
    def normaliser(self) -> float:
        return float(self.n if self.norm is None else self.norm)

    def predict(self, params: Params) -> jax.Array:
        """Model outputs, shape of ``targets``."""
        return self.fn(params, self.data)

    def residuals(self, params: Params) -> jax.Array:
        """``z = f(θ) − y``, shape of ``targets``."""
        return self.predict(params) - self.targets

    def loss_from_outputs(self, outputs: jax.Array) -> jax.Array:
        if callable(self.loss):
            return jnp.sum(self.loss(outputs, self.targets)) / self.n
        if self.loss == "mse":
            return jnp.sum((outputs - self.targets) ** 2) / (2.0 * self.normaliser)
        logp = jax.nn.log_softmax(outputs, axis=-1)
        return -jnp.sum(self.targets * logp) / self.n

    def loss_fn(self, params: Params) -> jax.Array:
        """The scalar training loss ``L(θ)``."""
        return self.loss_from_outputs(self.predict(params))

    def flat(self):
        """``(θ₀ as a flat vector (P,), unravel)`` for matrix-level code."""
        return ravel_pytree(self.params)

    @property
    def num_params(self) -> int:
        return self.flat()[0].size

    def output_hessian_weights(self, outputs: jax.Array) -> jax.Array:
        """∂²L/∂f² as a linear map's diagonal-free form: returns ``M`` with the
        Gauss-Newton matrix ``G = Jᵀ M J`` (flattened outputs). For MSE ``M = I/norm``."""
        flat = outputs.reshape(-1)
        if not callable(self.loss) and self.loss == "mse":
            return jnp.eye(flat.size, dtype=flat.dtype) / self.normaliser
        return jax.hessian(lambda o: self.loss_from_outputs(o.reshape(outputs.shape)))(flat)


#: Flax (linen) variable collections that are state, not parameters.
STATE_COLLECTIONS = ("batch_stats", "cache", "intermediates", "state")


def _refuse_mutable_state(params) -> None:
    if isinstance(params, dict):
        found = [k for k in params if k in STATE_COLLECTIONS]
        if found:
            raise EoslabError(
                f"params hold mutable model state {found} (e.g. BatchNorm statistics): eoslab would "
                "differentiate and update it as parameters. Pass only the trainable collection and close "
                "over the state in eval mode, e.g. Problem.from_model(lambda p, x: model.apply({'params': p, "
                "'batch_stats': stats}, x, train=False), variables['params'], x, y); for Flax NNX split with "
                "nnx.split(model, nnx.Param, ...) and merge the rest inside apply_fn")
