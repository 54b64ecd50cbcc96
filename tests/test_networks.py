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
from eoslab.dynamics.train import compare_taylor, crossings, train
from references import plain_gd_losses
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
    hess, jac, grad = jax.jit(jax.hessian(loss)), jax.jit(jax.jacobian(out)), jax.jit(jax.grad(loss))
    vel, hs, ks = jnp.zeros_like(flat), [], []
    for _ in range(steps):
        hs.append(np.linalg.eigvalsh(np.asarray(hess(flat)))[::-1])
        J = np.asarray(jac(flat))
        ks.append(np.linalg.eigvalsh(J @ J.T / problem.n)[::-1])
        vel = momentum * vel - lr * grad(flat)
        flat = flat + vel
    return np.array(hs), np.array(ks)


def _tiny(n=8, classes=None, loss="mse"):
    return _problem(MLP(2, 6, "tanh", 1 if classes is None else classes), n=n, classes=classes, loss=loss)


def test_tracked_spectra_match_dense_eigh():
    # Warm-started matrix-free tracking at every step of heavy-ball GD, against dense
    # jax.hessian / jax.jacobian + eigh at the same iterates (float64).
    p = _tiny()
    lr, steps = 0.3, 6
    traj, _ = train(p, lr, steps, k=2, tol=1e-7, momentum=0.5)
    ref_h, ref_k = _dense_reference(p, lr, steps, momentum=0.5)
    np.testing.assert_allclose(traj["hessian_eigs"], ref_h[:, :2], rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(traj["ntk_eigs"], ref_k[:, :2], rtol=1e-5, atol=1e-9)
    # the residual norm is a rigorous bound on the distance to the spectrum
    dist = np.abs(traj["hessian_eigs"][:, :, None] - ref_h[:, None, :]).min(-1)
    assert np.all(dist <= traj["hessian_residuals"] + 1e-9)
    np.testing.assert_allclose(traj["loss"], plain_gd_losses(p, lr, steps, momentum=0.5), rtol=1e-12)
    assert traj["hessian_products"][1:].mean() < traj["hessian_products"][0]  # warm starts are cheaper
    assert traj["hessian_converged"].dtype == bool and traj["hessian_converged"].all()
    assert traj["ntk_converged"].all()


def test_recorded_loss_equals_plain_gd_and_accuracy():
    # (MSE is compared with a plain loop in test_tracked_spectra_match_dense_eigh)
    p = _problem(MLP(1, 8, "tanh", 3), n=20, classes=3, loss="cross_entropy")
    traj, final = train(p, 0.5, 40, track=(), chunk=16)  # 40 = 16 + 16 + 8: a partial last chunk
    ref = plain_gd_losses(p, 0.5, 41)
    np.testing.assert_allclose(traj["loss"], ref[:40], rtol=1e-12)
    np.testing.assert_allclose(float(p.loss_fn(final)), ref[-1], rtol=1e-12)
    acc = np.mean(np.argmax(p.predict(p.params), 1) == np.argmax(p.targets, 1))
    assert traj["accuracy"][0] == pytest.approx(acc) and not traj["diverged"].any()
    # regression: no accuracy; a linear model at a huge step size overflows: a result, not an error
    lin = Problem.from_model(lambda w, x: x @ w, jnp.ones(3), jnp.eye(3) * 2.0, jnp.zeros(3))
    bad, _ = train(lin, 1e6, 80, track=(), chunk=16)
    assert np.all(np.isnan(bad["accuracy"]))
    first = int(np.argmax(bad["diverged"]))
    assert bad["diverged"][-1] and 10 < first < 80 and np.isfinite(bad["loss"][:first]).all()
    assert np.isnan(bad["loss"][first:]).all()


def test_nonlinear_contribution_and_taylor_figure(tmp_path):
    from eoslab.plots.networks import plot_taylor

    p = _tiny()
    cmp = compare_taylor(p, 0.3, 25, track=())
    tay, net = cmp["taylor"], cmp["network"]
    # a quadratic model's output change is exactly linear + ½Q(δ, δ)
    np.testing.assert_allclose(tay["nonlinear_actual"], tay["nonlinear_norm"], rtol=1e-6, atol=1e-14)
    # the network's only up to third order, and at step 0 both models coincide
    assert net["nonlinear_norm"][0] == pytest.approx(tay["nonlinear_norm"][0], rel=1e-10)
    assert net["loss"][0] == tay["loss"][0] and np.all(np.isnan(net["nonlinear_top"]))
    assert cmp["loss_divergence_step"] == -1 or cmp["loss_divergence_step"] > 0
    paths = plot_taylor(cmp, tmp_path / "taylor.png")
    assert all(q.exists() for q in paths)


def test_cnn_matches_a_direct_convolution():
    from scipy.signal import correlate

    net = CNN((2,), "elu", 3, (2, 4, 4))
    params = net.init(jax.random.PRNGKey(0), 32, jnp.float64)
    x = np.asarray(jax.random.normal(jax.random.PRNGKey(1), (3, 32), jnp.float64))
    w, b = np.asarray(params[0]["w"]), np.asarray(params[0]["b"])
    imgs = x.reshape(3, 2, 4, 4)
    ref = []
    for img in imgs:
        pad = np.pad(img, ((0, 0), (1, 1), (1, 1)))
        maps = [sum(correlate(pad[c], w[:, :, c, o], mode="valid") for c in range(2)) + b[o] for o in range(2)]
        h = np.asarray(jax.nn.elu(np.stack(maps, -1)))                   # (4, 4, 2)
        h = h.reshape(2, 2, 2, 2, 2).mean(axis=(1, 3))                    # 2×2 average pooling
        ref.append(h.reshape(-1) @ np.asarray(params[1]["w"]) + np.asarray(params[1]["b"]))
    np.testing.assert_allclose(net(params, jnp.asarray(x)), np.array(ref), rtol=1e-12)


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
    # a plain function on any pytree works, and training keeps float32
    fn = lambda p, x: jnp.tanh(x @ p["a"]) @ p["b"]
    p32 = {"a": jnp.ones((3, 4), jnp.float32) * 0.1, "b": jnp.ones((4,), jnp.float32) * 0.1}
    prob = Problem.from_model(fn, p32, jnp.ones((5, 3), jnp.float32), jnp.zeros(5, jnp.float32))
    traj, final = train(prob, 0.1, 3, track=())
    assert final["a"].dtype == jnp.float32 and traj["loss"].dtype == np.float32


def test_cli_train_track_every_subset_summary(tmp_path):
    """`eoslab train` end to end; its spectra (every 3 steps, on a fixed 4-example subset)
    against dense eigh of the subset's Hessian at θ₀; the summary's numbers."""
    from typer.testing import CliRunner

    from eoslab.cli import _load_commands, app
    from eoslab.models.mlp import network_problem

    _load_commands()
    out = tmp_path / "run.json"
    args = ["train", "--model", "mlp", "--depth", "2", "--width", "6", "--activation", "tanh", "--data",
            "synthetic", "--n", "10", "--lr", "0.2", "--steps", "7", "--track-every", "3", "--json-out", str(out),
            "--plot", str(tmp_path / "fig.png"), "--no-progress", "--track", "hessian", "--k", "2",
            "--spectra-examples", "4", "--tol", "1e-8", "--dtype", "float64"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "the gd edge 2/η" in r.output and "crossed it upward" in r.output and "second eigenvalue" in r.output
    res = json.loads(out.read_text())
    s, curves = res["summary"], res["curves"]
    assert s["steps"] == 7 and curves["tracked"] == [True, False, False, True, False, False, True]
    eigs = np.array([[np.nan if v is None else v for v in row] for row in curves["hessian_eigs"]])
    assert np.all(np.isnan(eigs[1:3])) and np.all(np.isfinite(eigs[::3]))
    assert s["final_loss"] == pytest.approx(curves["loss"][-1]) and s["edge"] == pytest.approx(10.0)
    assert s["max_sharpness"] == pytest.approx(np.nanmax(eigs[:, 0]))
    assert s["second_below_edge"] == bool(s["max_second"] < 10.0)
    p, _, _ = network_problem("mlp", 2, 6, "tanh", "standard", "synthetic", None, 10, None, "mse", 0, "float64")
    sub = Problem.from_model(p.fn, p.params, p.data[:4], p.targets[:4])  # the loss stays a mean
    ref, _ = _dense_reference(sub, 0.0, 1)
    np.testing.assert_allclose(eigs[0], ref[0, :2], rtol=1e-6)
    np.testing.assert_allclose(curves["loss"][0], float(p.loss_fn(p.params)), rtol=1e-12)
    assert (tmp_path / "fig.png").exists() and (tmp_path / "fig.svg").exists()
    assert crossings(np.array([1, 3, 1, 3, 3, np.nan, 1, 3]), 2) == 3
    assert crossings(np.array([3, 1]), 2) == 1
    r = CliRunner().invoke(app, ["train", "--data", "cifar10", "--steps", "1"])
    assert isinstance(r.exception, EoslabError) and "--data-dir" in str(r.exception)
