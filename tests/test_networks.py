"""Networks: models, full-batch training with matrix-free spectral tracking (against dense
jax.hessian / jax.jacobian + eigh), the Taylor comparison, Problem.from_model and the CLI."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from eoslab import EoslabError, Problem
from eoslab.data import synthetic
from eoslab.dynamics.train import compare_taylor, crossings, plain_gd_losses, summary, train
from eoslab.models.mlp import CNN, MLP
from eoslab.models.taylor import taylor_problem


def _problem(net, n=8, seed=0, classes=None, loss="mse", d=4):
    ds = synthetic(n, d, classes=classes, seed=seed, dtype="float64", target_scale=1.0)
    params = net.init(jax.random.PRNGKey(seed), ds.in_dim, jnp.float64)
    return Problem.from_model(net, params, jnp.asarray(ds.x), jnp.asarray(ds.y), loss=loss)


def _dense_reference(problem, lr, steps, momentum=0.0):
    """θ_t of a plain GD loop, and dense top eigenvalues of the loss Hessian (jax.hessian)
    and of the NTK J Jᵀ / n (jax.jacobian), each by eigh."""
    flat, unravel = ravel_pytree(problem.params)
    loss = lambda v: problem.loss_fn(unravel(v))
    out = lambda v: problem.predict(unravel(v)).reshape(-1)
    vel, hs, ks = jnp.zeros_like(flat), [], []
    for _ in range(steps):
        hs.append(np.linalg.eigvalsh(np.asarray(jax.hessian(loss)(flat)))[::-1])
        J = np.asarray(jax.jacobian(out)(flat))
        ks.append(np.linalg.eigvalsh(J @ J.T / problem.n)[::-1])
        vel = momentum * vel - lr * jax.grad(loss)(flat)
        flat = flat + vel
    return np.array(hs), np.array(ks)


NETS = {
    "mlp-tanh": (MLP(2, 6, "tanh", 1), None, "mse"),
    "mlp-relu-ntk": (MLP(1, 7, "relu", 2, "ntk"), 2, "mse"),
    "mlp-elu-ce": (MLP(2, 5, "elu", 3), 3, "cross_entropy"),
    "cnn-elu": (CNN((2, 3), "elu", 1, (1, 4, 4)), None, "mse"),
}


@pytest.mark.parametrize("name", list(NETS))
def test_tracked_spectra_match_dense_eigh(name):
    net, classes, loss = NETS[name]
    p = _problem(net, n=8, classes=classes, loss=loss, d=16 if name.startswith("cnn") else 4)
    lr, steps = 0.3, 6
    traj, _ = train(p, lr, steps, k=2, tol=1e-7, momentum=0.5)
    ref_h, ref_k = _dense_reference(p, lr, steps, momentum=0.5)
    np.testing.assert_allclose(traj["hessian_eigs"], ref_h[:, :2], rtol=1e-5, atol=1e-9)
    # the residual norm is a rigorous bound on the distance to the spectrum
    dist = np.abs(traj["hessian_eigs"][:, :, None] - np.asarray(ref_h)[:, None, :]).min(-1)
    assert np.all(dist <= traj["hessian_residuals"] + 1e-9)
    if loss == "mse":  # the NTK in the loss normalisation is defined for MSE
        np.testing.assert_allclose(traj["ntk_eigs"], ref_k[:, :2], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(traj["loss"], plain_gd_losses(p, lr, steps, momentum=0.5), rtol=1e-12)


def test_recorded_loss_equals_plain_gd_and_accuracy():
    p = _problem(MLP(1, 8, "tanh", 3), n=20, classes=3)
    traj, final = train(p, 0.5, 40, track=(), chunk=16)  # 40 = 16 + 16 + 8: a partial last chunk
    np.testing.assert_allclose(traj["loss"], plain_gd_losses(p, 0.5, 40), rtol=1e-12)
    out = p.predict(final)
    ref_loss = float(jnp.sum((out - p.targets) ** 2) / (2 * p.n))
    np.testing.assert_allclose(plain_gd_losses(p.with_params(final), 0.5, 1)[0], ref_loss, rtol=1e-12)
    traj2, _ = train(p, 0.5, 1, track=())
    acc = np.mean(np.argmax(p.predict(p.params), 1) == np.argmax(p.targets, 1))
    assert traj2["accuracy"][0] == pytest.approx(acc)
    assert traj["loss"].shape == (40,) and not traj["diverged"].any()


def test_track_every_and_subset_and_divergence():
    p = _problem(MLP(1, 6, "tanh", 1), n=10)
    traj, _ = train(p, 0.2, 7, track_every=3, k=1, tol=1e-8, spectra_examples=4)
    np.testing.assert_array_equal(traj["tracked"], [True, False, False, True, False, False, True])
    assert np.all(np.isnan(traj["hessian_eigs"][~traj["tracked"]]))
    sub = Problem.from_model(p.fn, p.params, p.data[:4], p.targets[:4])
    ref, _ = _dense_reference(sub, 0.0 + 1e-300, 1)  # spectrum of the 4-example problem at θ₀
    np.testing.assert_allclose(traj["hessian_eigs"][0, 0], ref[0, 0], rtol=1e-6)
    bad, _ = train(p, 1e4, 30, k=1)
    assert bad["diverged"][-1] and np.isnan(bad["loss"][-1]) and np.isfinite(bad["loss"][0])


def test_nonlinear_contribution_exact_for_the_taylor_model():
    p = _problem(MLP(2, 6, "tanh", 1), n=8)
    cmp = compare_taylor(p, 0.3, 25, k=1, tol=1e-6, track=("hessian", "ntk"))
    tay, net = cmp["taylor"], cmp["network"]
    # a quadratic model's output change is exactly linear + ½Q(δ, δ)
    np.testing.assert_allclose(tay["nonlinear_actual"], tay["nonlinear_norm"], rtol=1e-6, atol=1e-14)
    # the network's is so up to third order; at step 0 both models coincide
    assert net["nonlinear_norm"][0] == pytest.approx(tay["nonlinear_norm"][0], rel=1e-10)
    assert net["loss"][0] == tay["loss"][0]
    assert abs(net["nonlinear_top"][0]) <= net["nonlinear_norm"][0] * (1 + 1e-9)
    assert cmp["loss_divergence_step"] == -1 or cmp["loss_divergence_step"] > 0


def test_crossings_and_summary():
    assert crossings(np.array([1, 3, 1, 3, 3, np.nan, 1, 3]), 2) == 3
    assert crossings(np.array([3, 1]), 2) == 1
    p = _problem(MLP(1, 6, "tanh", 1), n=8)
    traj, _ = train(p, 0.2, 5, k=2)
    s = summary(traj)
    assert s["edge"] == pytest.approx(10.0) and s["max_sharpness"] == pytest.approx(np.nanmax(traj["hessian_eigs"][:, 0]))
    assert s["second_below_edge"] == bool(s["max_second"] < 10.0)


def test_parametrisations_are_the_same_function():
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 3), jnp.float64)
    ntk, std = MLP(2, 4, "elu", 2, "ntk"), MLP(2, 4, "elu", 2, "standard")
    params = ntk.init(jax.random.PRNGKey(1), 3, jnp.float64)
    scaled = [{"w": l["w"] / np.sqrt(l["w"].shape[0]), "b": l["b"]} for l in params]
    np.testing.assert_allclose(ntk(params, x), std(scaled, x), rtol=1e-13)
    with pytest.raises(EoslabError):
        MLP(activation="sigmoid")
    with pytest.raises(EoslabError):
        CNN(image_shape=(3, 6, 6))


def test_from_model_shape_mismatch():
    net = MLP(1, 4, "tanh", 2)
    params = net.init(jax.random.PRNGKey(0), 3)
    with pytest.raises(EoslabError, match=r"outputs have shape \(5, 2\) but targets have shape \(5, 3\)"):
        Problem.from_model(net, params, jnp.ones((5, 3)), jnp.ones((5, 3)))
    # a plain function on any pytree works, and training it accepts float32
    fn = lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"]
    p32 = {"a": jnp.ones((3, 4), jnp.float32) * 0.1, "b": jnp.ones((4,), jnp.float32) * 0.1}
    prob = Problem.from_model(fn, p32, jnp.ones((5, 3), jnp.float32), jnp.zeros(5, jnp.float32))
    traj, final = train(prob, 0.1, 3, k=1)
    assert final["a"].dtype == jnp.float32 and traj["hessian_eigs"].dtype == np.float32


def test_flax_and_equinox_examples():
    """The docs' examples (skipped when the libraries are not installed)."""
    flax_nn = pytest.importorskip("flax.linen")
    x, y = jnp.ones((6, 3), jnp.float32), jnp.zeros((6, 1), jnp.float32)
    model = flax_nn.Sequential([flax_nn.Dense(8), flax_nn.tanh, flax_nn.Dense(1)])
    params = model.init(jax.random.PRNGKey(0), x)
    traj, _ = train(Problem.from_model(model.apply, params, x, y), 0.1, 3, k=1)
    assert np.all(np.isfinite(traj["hessian_eigs"]))


def test_equinox_example():
    eqx = pytest.importorskip("equinox")
    x, y = jnp.ones((6, 3), jnp.float32), jnp.zeros((6, 1), jnp.float32)
    model = eqx.nn.MLP(3, 1, 8, 2, activation=jnp.tanh, key=jax.random.PRNGKey(0))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    apply_fn = lambda p, x: jax.vmap(eqx.combine(p, static))(x)
    traj, _ = train(Problem.from_model(apply_fn, params, x, y), 0.1, 3, k=1)
    assert np.all(np.isfinite(traj["hessian_eigs"]))


def test_cli_train(tmp_path):
    from typer.testing import CliRunner

    from eoslab.cli import _load_commands, app

    _load_commands()
    out = tmp_path / "run.json"
    args = ["train", "--model", "mlp", "--depth", "1", "--width", "8", "--activation", "tanh", "--data",
            "synthetic", "--n", "30", "--lr", "0.05", "--steps", "12", "--track-every", "1", "--json", str(out),
            "--plot", str(tmp_path / "fig.png"), "--no-progress", "--taylor"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "crossed 2/η upward" in r.output and "second eigenvalue" in r.output
    res = json.loads(out.read_text())
    assert res["summary"]["steps"] == 12 and len(res["curves"]["loss"]) == 12
    assert (tmp_path / "fig.png").exists() and (tmp_path / "fig_taylor.png").exists()
    r = CliRunner().invoke(app, ["train", "--data", "cifar10", "--steps", "1"])
    assert isinstance(r.exception, EoslabError) and "--data-dir" in str(r.exception)
