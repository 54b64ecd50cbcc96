"""Built-in optimizers against optax's own, step for step (float64), and their thresholds."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eoslab.dynamics import optim
from eoslab.errors import EoslabError


def _loss(p):
    x = jnp.linspace(-1.0, 1.0, 7)[:, None]
    h = jnp.tanh(x @ p["w"] + p["b"])
    return 0.5 * jnp.mean((h @ p["v"] - jnp.sin(3 * x)) ** 2)


def _params():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
    return {"w": jax.random.normal(k1, (1, 5)), "b": jax.random.normal(k2, (5,)), "v": jax.random.normal(k3, (5, 1))}


_grad = jax.jit(jax.grad(_loss))


def _run(tx, steps=20):
    # Eager updates (one compiled gradient): cheaper than compiling a scan per optimizer.
    p, s, out = _params(), tx.init(_params()), []
    for _ in range(steps):
        u, s = tx.update(_grad(p), s, p)
        p = optax.apply_updates(p, u)
        out.append(np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(p)]))
    return np.stack(out), s


SCHED = optim.cosine(0.3, 40, warmup_steps=5)
PAIRS = [
    (optim.gd(0.3), optax.sgd(0.3)),
    (optim.gd(SCHED), optax.sgd(SCHED)),
    (optim.heavy_ball(0.1, 0.9), optax.sgd(0.1, momentum=0.9)),
    (optim.heavy_ball(optim.warmup(0.1, 10), 0.8), optax.sgd(optim.warmup(0.1, 10), momentum=0.8)),
    (optim.nesterov(0.1, 0.9), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    (optim.rmsprop(0.01, 0.9, 1e-6), optax.rmsprop(0.01, decay=0.9, eps=1e-6)),
    (optim.adam(0.01, 0.9, 0.99, 1e-8), optax.adam(0.01, 0.9, 0.99, 1e-8)),
    (optim.adam(SCHED, 0.8, 0.95, 1e-3), optax.adam(SCHED, 0.8, 0.95, 1e-3)),
]


@pytest.mark.parametrize("ours,ref", PAIRS, ids=[f"{o.name}{i}" for i, (o, _) in enumerate(PAIRS)])
def test_builtin_equals_optax(ours, ref):
    a, _ = _run(ours)
    b, _ = _run(ref)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_adam_without_bias_correction_and_preconditioner():
    b1, b2, eps, lr = 0.9, 0.99, 1e-8, 0.01
    p = jax.flatten_util.ravel_pytree(_params())[0]
    unravel = jax.flatten_util.ravel_pytree(_params())[1]
    m = v = np.zeros(p.shape)
    tx = optim.adam(lr, b1, b2, eps, bias_correction=False)
    s, q = tx.init(_params()), _params()
    for _ in range(20):
        g = np.asarray(jax.flatten_util.ravel_pytree(_grad(unravel(p)))[0])
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g**2
        p = p - lr * m / (np.sqrt(v) + eps)
        u, s = tx.update(_grad(q), s, q)
        q = optax.apply_updates(q, u)
        P = jax.flatten_util.ravel_pytree(tx.preconditioner(s))[0]
        np.testing.assert_allclose(P, np.sqrt(v) + eps, rtol=1e-13)
    np.testing.assert_allclose(jax.flatten_util.ravel_pytree(q)[0], p, rtol=1e-12, atol=1e-13)


def test_edges_and_state_hyperparameters():
    p = _params()
    g0 = _grad(p)
    run1 = lambda tx: tx.update(g0, tx.init(p), p)[1]
    assert float(optim.gd(0.5).edge(run1(optim.gd(0.5)))) == pytest.approx(4.0)
    hb = optim.heavy_ball(0.5, 0.9)
    assert float(hb.edge(run1(hb))) == pytest.approx(2 * 1.9 / 0.5)
    ne = optim.nesterov(0.5, 0.9)
    assert float(ne.edge(run1(ne))) == pytest.approx(2 * 1.9 / (2.8 * 0.5))
    ad = optim.adam(0.5, 0.9)
    assert float(ad.edge(run1(ad))) == pytest.approx(38 / 0.5)
    # a schedule's current η sets the edge
    w = optim.gd(optim.warmup(1.0, 4))
    s = w.init(p)
    for t in range(3):
        _, s = w.update(g0, s, p)
    assert float(w.edge(s)) == pytest.approx(2 / 0.5)   # the update at t = 2 used η = 0.5
    # hyperparameters in the state: one vmapped update advances several step sizes
    lrs = jnp.array([0.1, 0.2])
    states = jax.vmap(lambda lr: optim.heavy_ball(lr, 0.9).init(p))(lrs)
    _, new = jax.vmap(lambda s: hb.update(g0, s, p))(states)
    np.testing.assert_allclose(jax.vmap(hb.edge)(new), 3.8 / lrs)


def test_as_optimizer_and_errors():
    o = optim.as_optimizer(optax.lion(1e-3))
    assert o.quantity == "unknown" and np.isnan(float(o.edge(o.init(_params()))))
    assert optim.as_optimizer(optim.gd(0.1)).name == "gd"
    assert optim.gd(0.1) == optim.gd(0.2) and hash(optim.adam(0.1)) == hash(optim.adam(0.3))  # one compilation
    for bad in (lambda: optim.gd(-1.0), lambda: optim.heavy_ball(0.1, 1.0), lambda: optim.adam(0.1, b2=1.5),
                lambda: optim.rmsprop(0.1, eps=-1.0), lambda: optim.as_optimizer(3), lambda: optim.cosine(1.0, 5, 5)):
        with pytest.raises(EoslabError):
            bad()
