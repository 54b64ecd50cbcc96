"""Copies of one network side by side: one network whose Hessian is block-diagonal.

``Blocks(net, count)`` applies ``count`` copies of the network ``net``, each with its own
parameters, to the same inputs and concatenates their outputs: (n, count · out_dim), copy i in
columns i·out_dim … (i+1)·out_dim − 1. Its parameters are ``net``'s pytree with a leading axis
of size ``count`` on every leaf (copy i is ``tree_map(lambda a: a[i], params)``), and the copies
are evaluated by one ``vmap``, so the compiled program is that of one network on a batch, not
``count`` networks.

No parameter of one copy reaches another copy's outputs, so under MSE the loss is a sum of the
copies' losses and ∇²L is block-diagonal at every point. This is again an MLP (one with
block-diagonal weight matrices). With the same initialisation in every copy and the same
targets, its top Hessian eigenvalue has multiplicity ``count`` everywhere: a network on which
several eigenvalues sit at the edge of stability together, by construction.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from eoslab.errors import EoslabError, check_positive_int
from eoslab.typing import Params


@dataclasses.dataclass(frozen=True)
class Blocks:
    """``count`` copies of the network ``net`` (a hashable spec, ``net(params, x) -> (n, out)``)."""

    net: object
    count: int = 2

    def __post_init__(self):
        if not callable(self.net):
            raise EoslabError(f"net must be a network net(params, x), got {type(self.net).__name__}")
        check_positive_int("count", self.count)

    def init(self, keys, in_dim: int, dtype=jnp.float32):
        """Parameters with copy i initialised from ``keys[i]`` (leading axis ``count`` on every leaf)."""
        if len(keys) != self.count:
            raise EoslabError(f"Blocks.init needs one key per copy ({self.count}), got {len(keys)}")
        return stack([self.net.init(k, in_dim, dtype) for k in keys])

    def __call__(self, params, x):
        """Outputs (n, count · out_dim)."""
        out = jax.vmap(self.net, in_axes=(0, None))(params, x)          # (count, n, out)
        return jnp.moveaxis(out, 0, 1).reshape(x.shape[0], -1)


def stack(trees: list[Params]) -> Params:
    """The parameters of :class:`Blocks` from one pytree per copy (same structure and shapes)."""
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *trees)
