"""The one stepper: optimizer edges in every summary (the momentum case), vmapped states, masking."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eoslab import Problem
from eoslab.dynamics import gd, init_state, make_step, optim, scan, summarize
from eoslab.dynamics.train import summarize as train_summary
from eoslab.dynamics.train import train


def _quadratic():
    # L(θ) = (3θ₁² + θ₂²)/2 (f = √c ⊙ θ, y = 0, norm 1): sharpness 3
    c = jnp.array([3.0, 1.0])
    return Problem.from_model(lambda th, x: jnp.sqrt(c) * th * x, jnp.array([1.0, 1.0]), jnp.ones(2),
                              jnp.zeros(2), norm=1.0)


def test_momentum_run_is_below_its_own_edge():
    """L = (3θ₁² + θ₂²)/2, η = 1, β = 0.9 converges (ηλ = 3 < 2(1 + β) = 3.8): nothing is above the edge."""
    p = _quadratic()
    tr, _ = gd(p, 1.0, 200, momentum=0.9)
    s = summarize(tr)
    assert float(tr["loss"][-1]) < 1e-7 and int(s["steps_above_edge"]) == 0
    np.testing.assert_allclose(tr["edge"], 3.8)
    assert float(s["final_edge_ratio"]) == pytest.approx(3 / 3.8)
    tt, _ = train(p, 1.0, 200, momentum=0.9, track=("hessian",), k=1)
    st = train_summary(tt)
    assert st["steps_above_edge"] == 0 and st["crossings"] == 0 and st["edge"] == pytest.approx(3.8)
    assert tt.meta["optimizer"] == "heavy_ball" and "seconds" not in tt
    np.testing.assert_allclose(tt["loss"], tr["loss"], rtol=1e-12)
    # plain GD at η = 1 is above its edge 2/η = 2 and diverges, flagged, rows NaN from there
    g, _ = gd(p, 1.0, 2000)
    first = int(np.argmax(np.asarray(g["diverged"])))
    assert bool(g["diverged"][-1]) and np.all(np.isnan(g["loss"][first:])) and np.all(np.isfinite(g["loss"][:first]))


def test_vmapped_states_equal_separate_runs():
    x = jnp.linspace(-1, 1, 9)[:, None]
    p = Problem.from_model(lambda q, x: jnp.tanh(x @ q["w"]) @ q["v"], {"w": jnp.ones((1, 3)), "v": jnp.ones(3) / 3},
                           x, jnp.sin(2 * x[:, 0]))
    lrs = jnp.array([0.1, 0.3, 0.5])
    opt = optim.heavy_ball(0.1, 0.8)
    step = make_step(p.loss_fn, opt)
    states = jax.vmap(lambda lr: init_state(p.params, optim.heavy_ball(lr, 0.8)))(lrs)
    _, rec = jax.vmap(lambda s: scan(step, s, 25))(states)
    for i, lr in enumerate(lrs):
        ref, _ = gd(p, float(lr), 25, momentum=0.8, spectra="none")
        np.testing.assert_allclose(rec["loss"][i], ref["loss"], rtol=1e-12)
        np.testing.assert_allclose(rec["edge"][i], 2 * 1.8 / lr, rtol=1e-12)
    # any optax optimizer runs unchanged (its edge is unknown: NaN)
    tr, _ = gd(p, steps=10, optimizer=optax.adam(1e-2), spectra="none")
    assert np.all(np.isnan(tr["edge"])) and np.all(np.isfinite(tr["loss"]))


def test_train_callback_sees_every_step_in_order():
    p = _quadratic()
    seen = []
    tr, _ = train(p, 0.1, 7, track=(), chunk=3, callback=lambda t, r: seen.append((t, float(r["loss"]), float(r["edge"]))))
    assert [t for t, _, _ in seen] == list(range(7))
    np.testing.assert_allclose([v for _, v, _ in seen], tr["loss"], rtol=0)
    assert all(e == pytest.approx(20.0) for _, _, e in seen)


def test_a_stochastic_step_needs_an_explicit_key():
    """init_state(key=None) declares a run that draws nothing: a deterministic step runs with it,
    a step that draws random numbers refuses it instead of sharing a default key."""
    from eoslab.errors import EoslabError

    loss = lambda p: jnp.sum(p ** 2)
    opt = optim.gd(0.1)
    state = init_state(jnp.ones(3), opt)
    assert state.key is None
    det, _ = jax.jit(lambda s: scan(make_step(loss, opt, stochastic=False), s, 3))(state)
    np.testing.assert_allclose(det.params, 0.8 ** 3 * np.ones(3))
    noisy = make_step(loss, opt, observe=lambda c: (c.aux, {}))
    with pytest.raises(EoslabError, match="init_state"):
        scan(noisy, state, 3)
    keyed, _ = scan(noisy, init_state(jnp.ones(3), opt, key=jax.random.PRNGKey(1)), 3)
    np.testing.assert_allclose(keyed.params, det.params)


def test_fused_step_gives_the_gradient_and_hessian_products_of_one_pass():
    # make_step(tangents=...): the loss, gradient and H·v of the observer's vectors from one
    # jvp-of-grad pass, checked against jax.grad and the dense jax.hessian.
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (12, 3))
    params = {"w": jax.random.normal(k2, (3, 4)), "v": jnp.ones(4) / 2}
    p = Problem.from_model(lambda q, x: jnp.tanh(x @ q["w"]) @ q["v"], params, x, jnp.sin(x[:, 0]))
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    V = jax.random.normal(k3, (2, flat.size))

    def observe(ctx):
        return ctx.aux, {"hvps": ctx.hvps, "g": ravel(ctx.grads), "hv": ctx.hvp(ctx.aux["V"][1])}

    step = make_step(p.loss_fn, optim.gd(0.1), observe=observe, tangents=lambda aux: aux["V"])
    new, rec = jax.jit(step)(init_state(params, optim.gd(0.1), aux={"V": V}, key=jax.random.PRNGKey(0)))
    H = jax.hessian(lambda f: p.loss_fn(unravel(f)))(flat)
    np.testing.assert_allclose(rec["hvps"], V @ H, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rec["hv"], H @ V[1], rtol=1e-10, atol=1e-12)   # Context.hvp: same linearisation
    g = jax.grad(p.loss_fn)(params)
    np.testing.assert_allclose(rec["g"], ravel(g), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(rec["loss"], p.loss_fn(params), rtol=1e-12)
    np.testing.assert_allclose(ravel(new.params), flat - 0.1 * ravel(g), rtol=1e-12)


@pytest.mark.slow  # two tracked trainings; the default suite checks fused train against dense eigh (test_networks)
def test_fused_train_equals_unfused_train():
    # train uses the fused pass when the Hessian is tracked at every full-batch step: same trajectory
    # as with the spectra on a subset that is the whole data set (products computed separately)
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    x = jax.random.normal(k1, (12, 3))
    params = {"w": jax.random.normal(k2, (3, 4)), "v": jnp.ones(4) / 2}
    p = Problem.from_model(lambda q, x: jnp.tanh(x @ q["w"]) @ q["v"], params, x, jnp.sin(x[:, 0]))
    tr, _ = train(p, 0.3, 12, k=1, track=("hessian",))
    ts, _ = train(p, 0.3, 12, k=1, track=("hessian",), spectra_examples=p.n)
    np.testing.assert_allclose(tr["loss"], ts["loss"], rtol=1e-12)
    np.testing.assert_allclose(tr["hessian_eigs"], ts["hessian_eigs"], rtol=1e-10)
    np.testing.assert_array_equal(tr["hessian_products"], ts["hessian_products"])


def ravel(tree):
    return jax.flatten_util.ravel_pytree(tree)[0]
