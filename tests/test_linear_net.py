"""Deep linear networks: losses, sharpness on the minimisers, the step-size threshold, det of the GD map."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import eoslab  # noqa: F401  (float64)
from eoslab.cli import main
from eoslab.dynamics.convergence import convergence_sweep
from eoslab.errors import EoslabError
from eoslab.cli.companions import parse_grid
from eoslab.models import linear_net as ln
from eoslab.spectra import hessian_matrix
from eoslab.theory import linear_net as th


def test_losses_and_scalar_closed_forms():
    key = jax.random.PRNGKey(0)
    x, y = jax.random.normal(key, (7, 3)), jax.random.normal(jax.random.PRNGKey(1), (7, 2))
    params = ln.init(jax.random.PRNGKey(2), (3, 4, 2))
    W = params[1] @ params[0]
    sq = float(jnp.sum((y - x @ W.T) ** 2))
    losses = jax.jit(lambda q: (ln.problem(x, y, q, "sum").loss_fn(q), ln.problem(x, y, q, "half_mean").loss_fn(q)))
    total, half_mean = losses(params)
    assert float(total) == pytest.approx(sq, rel=1e-13) and float(half_mean) == pytest.approx(sq / 14, rel=1e-13)
    # ½(uv − 1)²: gradient (v(uv − 1), u(uv − 1)), Hessian [[v², 2uv − 1], [2uv − 1, u²]].
    u, v = 0.7, -1.3
    p = ln.scalar_problem(2, (jnp.array([[u]]), jnp.array([[v]])))
    g, H = jax.jit(lambda q: (jax.grad(p.loss_fn)(q), hessian_matrix(p, q)))(p.params)
    r = u * v - 1
    np.testing.assert_allclose([g[0][0, 0], g[1][0, 0]], [v * r, u * r], rtol=1e-13)
    np.testing.assert_allclose(H, [[v * v, 2 * u * v - 1], [2 * u * v - 1, u * u]], rtol=1e-13)


def test_scalar_chain_infimum_by_brute_force():
    # Depth 3, target p* = 2: λ_max on the minimisers is p*² Σ 1/w_i² (rank-one Hessian); its minimum
    # over a fine grid of the manifold (w₃ = p*/(w₁w₂)) matches s·L·|p*|^{2−2/L}.
    p = ln.scalar_problem(3, target=2.0)
    closed = th.inf_sharpness_closed_form(p)
    w = np.linspace(0.3, 3.0, 1500)
    W1, W2 = np.meshgrid(w, w)
    W3 = 2.0 / (W1 * W2)
    lam = 4.0 * (1 / W1**2 + 1 / W2**2 + 1 / W3**2)
    assert closed == pytest.approx(3 * 2.0 ** (4 / 3), rel=1e-12)
    assert lam.min() == pytest.approx(closed, rel=1e-5) and lam.min() >= closed * (1 - 1e-12)
    # And the Hessian at a point of the manifold is that rank-one matrix (dense autodiff).
    pt = tuple(jnp.array([[c]]) for c in (0.8, 1.9, 2.0 / (0.8 * 1.9)))
    np.testing.assert_allclose(th.sharpness(p, pt), 4.0 * sum(1 / float(c[0, 0]) ** 2 for c in pt), rtol=1e-12)


def test_matrix_infimum_closed_form_vs_numerical_minimisation():
    x, _ = ln.identity_data(2)
    y = jnp.array([[1.5, -0.2], [0.3, 0.8]])                 # W* = Yᵀ, not symmetric
    p = ln.problem(x, y, ln.init(jax.random.PRNGKey(0), (2, 2, 2)))
    closed = th.inf_sharpness_closed_form(p)
    bal = th.balanced_minimiser(p)
    assert float(p.loss_fn(bal)) < 1e-28
    assert float(th.sharpness(p, bal)) == pytest.approx(closed, rel=1e-10)
    num, at = th.inf_sharpness_numerical(p, jax.random.PRNGKey(5), restarts=1, temperatures=(1e-3,))
    assert float(p.loss_fn(at)) < 1e-20                       # the minimisation stays on the manifold
    assert num == pytest.approx(closed, rel=1e-5) and num >= closed * (1 - 1e-9)


LRS = [0.5, 0.7, 1.1, 1.3]      # shared with the CLI test below: one compiled sweep for both


def test_scalar_threshold_at_eta_one_and_min_det():
    p = ln.scalar_problem(2)
    assert th.threshold(th.inf_sharpness_closed_form(p)) == pytest.approx(1.0, rel=1e-14)
    inits = jax.vmap(lambda k: ln.init(k, (1, 1, 1), 0.5))(jax.random.split(jax.random.PRNGKey(0), 300))
    lrs = jnp.array(LRS)
    out = convergence_sweep(p, lrs, inits, 2000, grad_tol=1e-6, loss_min=0.0)
    frac = np.asarray(out["converged"]).mean(axis=1)
    assert frac[0] >= 0.99 and frac[1] >= 0.99
    assert frac[2] == 0.0 and frac[3] == 0.0
    conv = np.asarray(out["converged"])
    ratio = np.asarray(lrs)[:, None] * np.asarray(out["final_sharpness"]) / 2
    assert np.all(ratio[conv] <= 1 + 1e-3)
    assert np.all(np.asarray(out["at_minimum"]) == conv)
    # min_t |det(I − η∇²L(θ_t))| of one run against its trajectory recomputed step by step.
    lr, q0 = LRS[1], jax.tree_util.tree_map(lambda a: a[3], inits)

    @jax.jit
    def dets_along():
        def body(q, _):
            return jax.tree_util.tree_map(lambda a, g: a - lr * g, q, jax.grad(p.loss_fn)(q)), th.gd_map_det(p, q, lr)
        return jax.lax.scan(body, q0, None, length=2000)[1]

    np.testing.assert_allclose(out["min_abs_det"][1, 3], jnp.min(jnp.abs(dets_along())), rtol=1e-6)


def test_grid_parsing_and_cli(capsys):
    np.testing.assert_allclose(parse_grid("0.5:1.5:3"), [0.5, 1.0, 1.5])
    np.testing.assert_allclose(parse_grid("0.2,0.4"), [0.2, 0.4])
    for bad in ("0.5:1.5", "1.5:0.5:3", "0:1:3", "0.5:1:x", "a,b", "0.5:1:0", "-1,2"):
        with pytest.raises(EoslabError):
            parse_grid(bad)
    with pytest.raises(SystemExit) as e:
        main(["linear-net", "--depth", "2", "--width", "1", "--lr-grid", ",".join(map(str, LRS)), "--inits", "300",
              "--json"])
    assert e.value.code == 0
    r = json.loads(capsys.readouterr().out)
    assert r["threshold"] == pytest.approx(1.0) and r["lr"] == pytest.approx(LRS)
    assert r["converged_fraction"][0] > 0.95 and r["converged_fraction"][2:] == [0.0, 0.0]
    assert r["max_fraction_beyond_threshold"] == 0.0 and r["sharpness_bound_holds"]
    with pytest.raises(SystemExit) as e:
        main(["linear-net", "--lr-grid", "1:0:3"])
    assert e.value.code == 2
