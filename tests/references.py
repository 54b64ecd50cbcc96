"""Test-only references (independent of the code under test)."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


def plain_gd_losses(problem, lr: float, steps: int, momentum: float = 0.0) -> np.ndarray:
    """The losses (steps,) of a plain Python loop of (heavy-ball) GD steps on ``problem``."""
    flat, unravel = ravel_pytree(problem.params)
    grad = jax.jit(jax.value_and_grad(lambda v: problem.loss_fn(unravel(v))))
    lr = jnp.asarray(lr, flat.dtype)
    mom = jnp.asarray(momentum, flat.dtype)
    vel = jnp.zeros_like(flat)
    out = []
    for _ in range(steps):
        loss, g = grad(flat)
        out.append(float(loss))
        vel = mom * vel - lr * g
        flat = flat + vel
    return np.asarray(out)
