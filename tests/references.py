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


def quadratic2d_summaries(eps: float, lr: float, theta0, steps: int, E: float = 0.0, tail: int = 100) -> dict:
    """The per-run summaries of ``dynamics.quadratic2d.simulate`` by the plain definition, in
    NumPy: iterate the exact (z, λ) map in x = ηz, ℓ = ηλ and freeze a run at its last finite
    iterate (so it is flagged, and its summaries stop, at the first non-finite one)."""
    th = np.asarray(theta0, np.float64)
    x = lr * (0.5 * (th[:, 0] ** 2 - eps * th[:, 1] ** 2) - E)
    l = lr * (th[:, 0] ** 2 + eps**2 * th[:, 1] ** 2)
    e = lr * E
    div = np.zeros(x.shape, bool)
    div_at = np.full(x.shape, -1)
    tail_sum = np.zeros_like(x)
    max_l = l.copy()
    first = np.where(l > 2, 0, -1)
    with np.errstate(all="ignore"):
        for t in range(1, steps + 1):
            f = x + e
            c1 = (1 - eps) * l + 2 * eps * f
            c2 = (1 - eps + eps**2) * l + 2 * eps * (1 - eps) * f
            x2 = x - l * x + 0.5 * x * x * c1
            l2 = l - 2 * x * c1 + x * x * c2
            bad = ~(np.isfinite(x2) & np.isfinite(l2)) & ~div
            div_at[bad] = t
            div |= bad
            x, l = np.where(div, x, x2), np.where(div, l, l2)
            if t > steps - tail:
                tail_sum += l
            max_l = np.maximum(max_l, l)
            first = np.where((first < 0) & (l > 2), t, first)
    return {"ratio": np.where(div, np.nan, tail_sum / (2 * tail)), "final_ratio": np.where(div, np.nan, l / 2),
            "max_ratio": max_l / 2, "first_cross": first, "final_z": np.where(div, np.nan, x / lr),
            "diverged": div, "diverged_at": div_at}


def quadratic2d_summaries_jax(eps: float, lr: float, theta0, steps: int, E: float = 0.0, tail: int = 100) -> dict:
    """The same definition as :func:`quadratic2d_summaries` in JAX (one ``vmap`` of a
    ``lax.scan`` that freezes each run at its last finite iterate): XLA rounds like the
    library, so the library's blocked sweep must match it bit for bit."""
    import jax
    import jax.numpy as jnp

    from eoslab.dynamics.quadratic2d import from_theta, scaled_step

    th = jnp.asarray(theta0, jnp.float64)
    z0, lam0 = from_theta(th, eps, E)
    e = lr * E

    def one(x, l):
        def body(s, t):
            x, l, div, div_at, tsum, mx, first = s
            x2, l2 = scaled_step(x, l, eps, e)
            bad = ~(jnp.isfinite(x2) & jnp.isfinite(l2)) & ~div
            div = div | bad
            x2, l2 = jnp.where(div, x, x2), jnp.where(div, l, l2)
            return (x2, l2, div, jnp.where(bad, t, div_at), tsum + jnp.where(t > steps - tail, l2, 0.0),
                    jnp.maximum(mx, l2), jnp.where((first < 0) & (l2 > 2), t, first)), None

        s0 = (x, l, jnp.array(False), jnp.array(-1), jnp.array(0.0), l, jnp.where(l > 2, 0, -1))
        return jax.lax.scan(body, s0, jnp.arange(1, steps + 1))[0]

    x, l, div, div_at, tsum, mx, first = jax.jit(jax.vmap(one))(lr * z0, lr * lam0)
    nan = jnp.nan
    out = {"ratio": jnp.where(div, nan, tsum / (2 * tail)), "final_ratio": jnp.where(div, nan, l / 2),
           "max_ratio": mx / 2, "first_cross": first, "final_z": jnp.where(div, nan, x / lr), "diverged": div,
           "diverged_at": div_at}
    return {k: np.asarray(v) for k, v in out.items()}
