"""Central flow (dynamics.central_flow): the SDCP solver against an independent reference,
the k = 1 closed form, and the flow against gradient flow and discrete GD."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from jax.flatten_util import ravel_pytree

from eoslab import EoslabError, Problem
from eoslab.dynamics import central_flow as cf
from eoslab.spectra.third_order import smat, svec


def _reference_sdcp(M, q, k):
    """Burer-Monteiro: Σ = RRᵀ, R (k, k), minimise ½⟨Σ, MΣ⟩ + ⟨q, Σ⟩ with scipy's BFGS (float64,
    NumPy): a different method from the library's projected gradient on the cone."""
    M, q = np.asarray(M), np.asarray(q)
    ia, ib = np.triu_indices(k)
    wts = np.where(ia == ib, 1.0, np.sqrt(2.0))

    def vec(X):
        return X[ia, ib] * wts

    def mat(x):
        X = np.zeros((k, k))
        X[ia, ib] = x / wts
        X[ib, ia] = x / wts
        return X

    def obj(r):
        R = r.reshape(k, k)
        S = vec(R @ R.T)
        G = mat(M @ S + q)
        return 0.5 * S @ M @ S + q @ S, (2 * G @ R).ravel()

    best = None
    for seed in range(2):
        r0 = np.random.default_rng(seed).normal(size=k * k)
        res = scipy.optimize.minimize(obj, r0, jac=True, method="BFGS", options=dict(gtol=1e-14, maxiter=10000))
        if best is None or res.fun < best.fun:
            best = res
    R = best.x.reshape(k, k)
    return R @ R.T


def _random_sdcp(seed, k, P=12):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(P, k * (k + 1) // 2))
    g = rng.normal(size=P)
    M = 0.5 * A.T @ A
    q = A.T @ g
    return jnp.asarray(M), jnp.asarray(q)


_SOLVE = {k: jax.jit(lambda M, q, mask, k=k: cf.solve_sdcp(M, q, k, mask, tol=1e-13)) for k in (1, 2, 3)}


@pytest.mark.parametrize("seed,k", [(0, 2), (1, 2), pytest.param(2, 3, marks=pytest.mark.slow),
                                    pytest.param(3, 3, marks=pytest.mark.slow)])
def test_sdcp_solver_matches_an_independent_reference_and_satisfies_kkt(seed, k):
    M, q = _random_sdcp(seed, k)
    x, res, it = _SOLVE[k](M, q, jnp.ones((k,), bool))
    X = smat(x, k)
    ref = _reference_sdcp(M, q, k)
    np.testing.assert_allclose(X, ref, atol=1e-6 * max(1.0, np.abs(ref).max()))
    # The complementarity conditions themselves.
    Y = smat(M @ x + q, k)
    assert np.linalg.eigvalsh(np.asarray(X)).min() >= -1e-12
    assert np.linalg.eigvalsh(np.asarray(Y)).min() >= -1e-8 * np.abs(np.asarray(Y)).max()
    assert abs(float(jnp.sum(X * Y))) <= 1e-8 * float(jnp.linalg.norm(q)) ** 2 / float(jnp.linalg.eigvalsh(M)[-1])
    assert float(res) <= 1e-13
    assert int(it) < 5000


def test_sdcp_k1_reduces_to_the_closed_form_and_masks_inactive_eigenvalues():
    rng = np.random.default_rng(7)
    for _ in range(3):
        g, gS = jnp.asarray(rng.normal(size=9)), jnp.asarray(rng.normal(size=9))
        M, q = cf.sdcp_data(gS[:, None], g, jnp.array([2.0]), 1.0, 0.0)
        x, _, _ = _SOLVE[1](M, q, jnp.ones((1,), bool))
        np.testing.assert_allclose(x[0], cf.sigma_closed_form(g, gS), rtol=1e-10, atol=1e-14)
    # Two eigenvalues, only the first at the edge: Σ is the k = 1 answer on that coordinate.
    M, q = _random_sdcp(11, 2)
    x, _, _ = _SOLVE[2](M, q, jnp.array([True, False]))
    X = smat(x, 2)
    np.testing.assert_allclose(X[0, 0], max(0.0, -float(q[0]) / float(M[0, 0])), rtol=1e-10, atol=1e-14)
    assert float(X[1, 1]) == 0.0 and float(X[0, 1]) == 0.0


def _small_problem():
    from eoslab.models import quadratic2d

    return quadratic2d.problem(0.05, [0.1, 2.0 / 0.05 ** 0.5])


@pytest.fixture(scope="module")
def flow_2d():
    return cf.run(_small_problem(), 1.0, 300, k=1, k_max=1)


def test_central_flow_is_gradient_flow_below_the_edge_and_holds_the_edge_above(flow_2d):
    out = flow_2d
    onset = int(np.flatnonzero(out["n_active"] > 0)[0])
    assert 0 < onset < 10
    # Before the edge the two flows are the same Euler steps.
    np.testing.assert_allclose(out["loss"][:onset], out["gf_loss"][:onset], rtol=1e-12)
    np.testing.assert_allclose(out["dist_gf_cf"][:onset], 0.0, atol=1e-12)
    # At the edge: the sharpness is held at 2/η, the loss never rises, σ² > 0 while the loss
    # is above rounding, and the flow stays with GD while gradient flow leaves.
    on = slice(onset + 5, None)
    np.testing.assert_allclose(out["sharpness"][on], 2.0, rtol=1e-5)
    assert np.all(np.diff(out["loss"]) <= 1e-15)
    assert np.all(out["trace_sigma"][onset + 1:200] > 0)
    s = cf.summarize(out, 1.0)
    assert s["ratio_final"] < 0.05 and s["dist_gd_gf_final"] > 1.0
    # GD itself ends below the edge (the 2-D model's limit 2/η − δ, docs/theory-eos2d.md).
    assert 1.95 < out["gd_sharpness"][-1] < 1.99


def test_sigma_is_the_closed_form_along_the_flow(flow_2d):
    """At a point of the flow, σ² equals max(0, −2⟨∇L, ∇S⟩/‖∇S‖²) computed from the dense Hessian."""
    p = _small_problem()
    w = jnp.asarray(cf.run(p, 1.0, 50, k=1, k_max=1)["w_cf"])      # same compiled chunk as flow_2d
    loss = p.loss_fn

    @jax.jit
    def both(w):
        g = jax.grad(loss)(w)
        H = jax.hessian(loss)
        lam, V = jnp.linalg.eigh(H(w))
        u = V[:, -1]
        gS = jax.grad(lambda v: u @ H(v) @ u)(w)
        d, x, _ = cf.cf_velocity(p, lambda v: v, w, u[None], lam[-1:], 1.0, None, cf.FlowConfig())
        return g, lam, gS, d, x

    g, lam, gS, d, x = both(w)
    excess = (lam[-1] - 2.0) * 0.5 * 4 / 1.0
    expected = max(0.0, float(-2 * (g @ gS - excess) / (gS @ gS)))
    np.testing.assert_allclose(x[0], expected, rtol=1e-9)
    np.testing.assert_allclose(d, g + 0.5 * x[0] * gS, rtol=1e-9, atol=1e-15)


def _call(args, capsys):
    from eoslab.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code or 0, out.out, out.err


def test_flow_cli_json_and_plot(tmp_path, capsys):
    import json

    code, out, err = _call(["flow", "--model", "quadratic2d", "--eps", "0.05", "--lr", "1", "--steps", "50",
                            "--k-max", "1", "--json", "--plot", str(tmp_path / "f.png")], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["summary"]["onset"] > 0 and len(data["curves"]["avg_loss"]) == 50
    assert (tmp_path / "f.png").exists()
    code, _, err = _call(["flow", "--model", "nope"], capsys)
    assert code == 2 and "--model" in err and len(err.strip().splitlines()) == 1


def test_run_refuses_bad_input_before_any_work():
    problem = _small_problem()
    with pytest.raises(EoslabError, match="substeps"):
        cf.run(problem, 0.1, 10, substeps=0)
    with pytest.raises(EoslabError, match="lr"):
        cf.run(problem, -1.0, 10)
    with pytest.raises(EoslabError, match="stiffness"):
        cf.run(problem, 0.1, 10, stiffness=2.0)
    with pytest.raises(EoslabError, match=r"k \(3\) must be ≤ k_max \(2\)"):
        cf.run(problem, 0.1, 10, k=3, k_max=2)
    with pytest.raises(EoslabError, match="substeps .*memory"):  # the stacked substeps, not an XLA abort
        cf.run(problem, 0.1, 10, substeps=2_000_000_000)
    with pytest.raises(EoslabError, match="steps .*memory"):
        cf.run(problem, 0.1, 2_000_000_000)


def test_a_diverged_flow_is_reported_with_the_row_it_diverged_at():
    """Divergence is a result: the summary says where each dynamics' loss stopped being finite
    (a hand-made trajectory: GD's loss overflows at row 2, the flows stay finite)."""
    out = {"n_active": np.array([0, 1, 1, 1]), "loss": np.array([1.0, 0.5, 0.4, 0.3]),
           "avg_loss": np.ones(4), "trace_sigma": np.zeros(4), "sharpness": np.full(4, 2.0),
           "products": np.ones(4), "gd_loss": np.array([1.0, 1e200, np.inf, np.nan]),
           "gd_sharpness": np.ones(4), "gf_loss": np.array([1.0, 0.9, 0.8, 0.7])}
    s = cf.summarize(out, 1.0, window=1)
    assert (s["gd_diverged_at"], s["cf_diverged_at"], s["gf_diverged_at"]) == (2, -1, -1) and s["diverged"]


def test_flow_cli_says_when_the_dynamics_diverged(capsys):
    code, out, err = _call(["flow", "--model", "quadratic2d", "--theta0", "1e200,1e200", "--steps", "2",
                            "--k-max", "1"], capsys)
    assert code == 0, err
    assert "DIVERGED (loss no longer finite): GD at step 0, the central flow at step 0" in out
    assert "never reached" not in out  # not gradient flow below the edge: no numbers at all


def _two_blocks(e1=0.05, e2=0.08):
    """Two independent 2-D models (block-diagonal Hessian): both top eigenvalues reach 2/η."""
    def fn(th, Q):
        return jnp.stack([0.5 * th[:2] @ Q[0] @ th[:2], 0.5 * th[2:] @ Q[1] @ th[2:]])

    Q = jnp.array([np.diag([1.0, -e1]), np.diag([1.0, -e2])])
    th0 = jnp.array([0.1, 2 / np.sqrt(e1), 0.1, 1.9 / np.sqrt(e2)])
    return Problem(fn, Q, jnp.zeros(2), th0, "mse", 1.0)


@pytest.mark.slow
def test_two_eigenvalues_at_the_edge_are_both_held_by_the_sdcp():
    out = cf.run(_two_blocks(), 1.0, 150, k=2, k_max=2)
    assert out["n_active"].max() == 2 and out["entered_at"][0][1] == 2
    on = slice(int(np.flatnonzero(out["n_active"] == 2)[0]) + 5, None)
    np.testing.assert_allclose(out["eigs"][on], 2.0, rtol=1e-5)
    assert np.all(out["sdcp_residual"][on] < 1e-8)
    assert np.all(np.diff(out["loss"]) <= 1e-15)
    s = cf.summarize(out, 1.0)
    assert s["ratio_final"] < 0.1


def test_self_stabilization_map_fixed_point_is_the_central_flow_sigma():
    """Damian et al.'s (x, y) map with constant α, β: x² = 2α/β, y = 0 (the k = 1 σ²) is a fixed
    point up to the sign flip of x, and a start off it cycles around it."""
    T, lr, alpha, beta = 200, 0.5, 0.3, 2.0
    sigma2 = 2 * alpha / beta
    out = {"n_active": np.ones(T, int), "alpha": np.full(T, alpha), "beta": np.full(T, beta),
           "gd_x": np.full(T, np.sqrt(sigma2)), "gd_sharpness": np.full(T, 2 / lr)}
    ss = cf.self_stabilization(out, lr)
    np.testing.assert_allclose(ss["x"] ** 2, sigma2, rtol=1e-8)      # a centre: rounding drifts slowly
    np.testing.assert_allclose(ss["y"], 0.0, atol=1e-9)
    # Off the fixed point x and y cycle around it (y changes sign; over the first cycle x²
    # stays within a factor 3 of σ²).
    out["gd_x"] = np.full(T, 0.9 * np.sqrt(sigma2))
    ss = cf.self_stabilization(out, lr)
    first = slice(0, 20)
    assert ss["y"][first].max() > 0 > ss["y"][first].min()
    assert np.all((ss["x"][first] ** 2 > sigma2 / 3) & (ss["x"][first] ** 2 < 3 * sigma2))


@pytest.mark.slow
def test_two_copies_of_a_network_have_the_central_flow_of_one_copy_twice():
    """Blocks(net, 2) with the same initialisation and targets has a double top Hessian
    eigenvalue everywhere. The tracker returns an arbitrary basis of that eigenspace, so Σ has
    off-diagonal entries and the k = 2 SDCP (iterative solver) runs at every substep; by the
    symmetry its unique velocity is the one-copy k = 1 closed form's, duplicated."""
    from eoslab.models.blocks import Blocks, stack
    from eoslab.models.mlp import MLP

    x = jax.random.normal(jax.random.PRNGKey(1), (12, 3))
    y = jnp.sin(2 * x[:, :1]) * 2
    net = MLP(1, 4, "tanh", 1)
    p1 = net.init(jax.random.PRNGKey(0), 3, jnp.float64)
    one = Problem.from_model(net, p1, x, y)
    two = Problem.from_model(Blocks(net, 2), stack([p1, p1]), x, jnp.tile(y, (1, 2)))
    flat, unravel = ravel_pytree(p1)
    lam = float(jnp.linalg.eigvalsh(jax.hessian(lambda v: one.loss_fn(unravel(v)))(flat))[-1])
    lr = 2.4 / lam                                 # above the edge at θ₀: the flow falls onto it at once
    a = cf.run(one, lr, 12, k=1, k_max=1, gd=False, gf=False, chunk=12)
    b = cf.run(two, lr, 12, k=2, k_max=2, gd=False, gf=False, chunk=12)
    np.testing.assert_array_equal(b["n_active"], 2 * a["n_active"])
    on = b["n_active"] == 2
    assert np.all(on[-6:]) and np.all(b["sdcp_residual"][on] < 1e-6)
    # the SDCP stops at a relative KKT residual, and the pair's basis is only known to the
    # tracker's tolerance: 12 steps of both flows agree to ~1e-5 of ‖w‖
    w_two = ravel_pytree(stack([unravel(jnp.asarray(a["w_cf"]))] * 2))[0]
    np.testing.assert_allclose(b["w_cf"], w_two, rtol=0, atol=2e-4 * np.abs(a["w_cf"]).max())
    np.testing.assert_allclose(b["trace_sigma"][on], 2 * a["trace_sigma"][on], rtol=1e-3)
    # each flow follows its tracked eigenvectors, known to about √track_tol: at the default 1e-6
    # the one-copy flow's eigenvalue at step 1 differs by 5.5e-6 from the same flow's at 1e-9
    # (measured; the two-copy flow's by about as much the other way), so the two agree to ~1e-5
    np.testing.assert_allclose(b["eigs"], np.stack([a["eigs"][:, 0]] * 2, axis=1), rtol=2e-5)


def test_blocks_are_independent_copies_of_the_network():
    """Copy i's columns are net(params_i, x): they depend on copy i's parameters only, so under
    MSE the Hessian is block-diagonal."""
    from eoslab.models.blocks import Blocks, stack
    from eoslab.models.mlp import MLP

    net = MLP(1, 3, "tanh", 2)
    ps = [net.init(jax.random.PRNGKey(s), 2, jnp.float64) for s in (0, 1)]
    model = Blocks(net, 2)
    x = jax.random.normal(jax.random.PRNGKey(2), (5, 2))
    np.testing.assert_allclose(model(stack(ps), x), np.concatenate([net(p, x) for p in ps], axis=1), rtol=1e-14)
    with pytest.raises(EoslabError, match="one key per copy"):
        model.init([jax.random.PRNGKey(0)], 2)


def test_rmsprop_nu_sensitivity_matches_finite_differences_of_the_preconditioned_eigenvalue():
    from eoslab.dynamics.central_flow_rmsprop import nu_sensitivity

    rng = np.random.default_rng(0)
    B = rng.normal(size=(6, 6))
    H = B @ B.T
    nu, eps = rng.uniform(0.5, 2.0, 6), 1e-3

    def top(nu):
        s = (nu + eps) ** -0.25
        lam, V = np.linalg.eigh(s[:, None] * H * s[None, :])
        return lam[-1], V[:, -1]

    S, u = top(nu)
    h = 1e-6
    fd = np.array([(top(nu + h * e)[0] - top(nu - h * e)[0]) / (2 * h) for e in np.eye(6)])
    np.testing.assert_allclose(nu_sensitivity(S, jnp.asarray(u), jnp.asarray(nu), eps), fd, rtol=1e-6)


def test_rmsprop_flow_with_a_frozen_identity_preconditioner_is_the_gd_central_flow(flow_2d):
    """β₂ = 1 and ν + ε = 1: P = I for ever, so the RMSProp central flow, discrete RMSProp and
    its stable flow are the GD central flow, GD and gradient flow."""
    from eoslab.dynamics import central_flow_rmsprop as rf

    eps = 1e-8
    out = rf.run(_small_problem(), 1.0, 300, beta2=1.0, eps=eps, nu0=jnp.full(2, 1 - eps))
    ref = flow_2d
    np.testing.assert_allclose(out["w_cf"], ref["w_cf"], rtol=1e-10)
    np.testing.assert_allclose(out["nu_cf"], 1 - eps, rtol=0, atol=1e-15)
    np.testing.assert_allclose(out["sharpness"], ref["sharpness"], rtol=1e-10)
    np.testing.assert_allclose(out["sigma2"], ref["trace_sigma"], rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(out["opt_loss"], ref["gd_loss"], rtol=1e-10)
    np.testing.assert_allclose(out["sf_loss"], ref["gf_loss"], rtol=1e-10)
    np.testing.assert_array_equal(out["n_active"], ref["n_active"])


def test_rmsprop_sdcp_data_is_the_rate_of_the_preconditioned_block_and_k1_is_the_closed_form():
    """On a tiny tanh MLP (P = 17) with a random ν: d/dt ⟨X, ŨᵀH̃Ũ⟩ along the flow's (ẇ, ν̇) for a
    given X ⪰ 0 (k = 2), by central finite differences of the dense H̃ = P^{-1/2}HP^{-1/2} (Ũ, its
    dense top-2 eigenvectors, fixed), equals −(⟨X, q⟩ + ⟨X, MX⟩) of ``sdcp_data`` (no Baumgarte
    term); E X = diag(HVXVᵀH); and the (0, 0) coordinate, which is the k = 1 problem, is (−b, −a)
    of the one-eigenvalue closed form written from ∂S̃/∂ν (``nu_sensitivity``) and ∇_w(vᵀHv)."""
    from eoslab.dynamics import central_flow_rmsprop as rf
    from eoslab.models.mlp import MLP
    from eoslab.spectra.third_order import block_jacobian

    net = MLP(1, 3, "tanh", 2)
    params = net.init(jax.random.PRNGKey(0), 2, jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(1), (6, 2))
    problem = Problem.from_model(net, params, x, jnp.stack([jnp.sin(2 * x[:, 0]), jnp.cos(x[:, 1])], axis=1))
    w, unravel = ravel_pytree(params)
    loss = lambda v: problem.loss_fn(unravel(v))
    nu = jnp.asarray(np.random.default_rng(0).uniform(0.2, 2.0, w.size))
    R = np.random.default_rng(1).normal(size=(2, 2))
    X = jnp.asarray(R @ R.T)
    lr, beta2, eps, h = 0.3, 0.9, 1e-3, 1e-5

    # Hessian products only (one traced product; the dense H̃ is H applied to the identity)
    hv = lambda w, V: jax.vmap(lambda v: jax.jvp(jax.grad(loss), (w,), (v,))[1])(V)

    @jax.jit
    def check(w, nu, X):
        s = (nu + eps) ** -0.25
        H = hv(w, jnp.eye(w.size))
        lam, Vd = jnp.linalg.eigh(s[:, None] * H * s[None, :])
        Ut, values = Vd[:, ::-1][:, :2].T, lam[::-1][:2]
        P = jnp.sqrt(nu + eps)
        V = Ut / jnp.sqrt(P)[None, :]
        A = block_jacobian(loss, w, V)
        g = jax.grad(loss)(w)
        M, q, E = rf.sdcp_data(A, V @ H, Ut, values, g, nu, lr, beta2, eps, 0.0)
        x = svec(X)
        dw = -lr * (g + 0.5 * A @ x) / P
        dnu = (1 - beta2) * (g ** 2 + E @ x - nu)

        def block(w, nu):                     # Ũ P(ν)^{-1/2} H(w) P(ν)^{-1/2} Ũᵀ, Ũ fixed
            Vn = Ut * ((nu + eps) ** -0.25)[None, :]
            return Vn @ hv(w, Vn).T

        fd = (block(w + h * dw, nu + h * dnu) - block(w - h * dw, nu - h * dnu)) / (2 * h)
        v, gS = V[0], A[:, 0]                 # ∇_w(vᵀHv): tested in test_third_order
        dS = rf.nu_sensitivity(values[0], Ut[0], nu, eps)
        a = -lr * gS @ (g / P) + (1 - beta2) * dS @ (g ** 2 - nu)
        b = -0.5 * lr * gS @ (gS / P) + (1 - beta2) * dS @ ((H @ v) ** 2)
        return {"rate": jnp.vdot(X, fd), "model": -(x @ q + x @ M @ x), "Ex": E @ x,
                "Ex_dense": jnp.diag(H @ V.T @ X @ V @ H), "Mq": jnp.stack([M[0, 0], q[0]]),
                "ab": -jnp.stack([b, a])}

    r = check(w, nu, X)
    np.testing.assert_allclose(r["Ex"], r["Ex_dense"], rtol=1e-12)
    np.testing.assert_allclose(r["rate"], r["model"], rtol=1e-7)
    np.testing.assert_allclose(r["Mq"], r["ab"], rtol=1e-10)


@pytest.mark.slow
def test_rmsprop_flow_with_two_eigenvalues_and_a_frozen_identity_preconditioner_is_the_gd_central_flow():
    """k = 2 on the two 2-D blocks (both eigenvalues reach the edge): β₂ = 1, ν + ε = 1 gives the GD
    central flow with its 2 × 2 SDCP, discrete GD and gradient flow."""
    from eoslab.dynamics import central_flow_rmsprop as rf

    eps = 1e-8
    a = cf.run(_two_blocks(), 1.0, 60, k=2, k_max=2)
    b = rf.run(_two_blocks(), 1.0, 60, beta2=1.0, eps=eps, nu0=jnp.full(4, 1 - eps), k=2)
    assert b["n_active"].max() == 2
    np.testing.assert_array_equal(b["n_active"], a["n_active"])
    np.testing.assert_allclose(b["w_cf"], a["w_cf"], rtol=1e-10)
    np.testing.assert_allclose(b["sigma2"], a["trace_sigma"], rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(b["eigs"], a["eigs"], rtol=1e-10)
    np.testing.assert_allclose(b["opt_loss"], a["gd_loss"], rtol=1e-10)
    np.testing.assert_allclose(b["sf_loss"], a["gf_loss"], rtol=1e-10)


def test_rmsprop_flow_start_is_discrete_rmsprop_then_the_flows_from_its_state():
    """``start`` = N: N plain RMSProp steps, then all three dynamics from that (θ, ν); with the
    frozen identity preconditioner this is the GD central flow's own ``start`` (plain GD first)."""
    from eoslab.dynamics import central_flow_rmsprop as rf

    eps = 1e-8
    out = rf.run(_small_problem(), 1.0, 300, beta2=1.0, eps=eps, nu0=jnp.full(2, 1 - eps), start=5)
    ref = cf.run(_small_problem(), 1.0, 300, k=1, k_max=1, start=5)
    np.testing.assert_allclose(out["w_cf"], ref["w_cf"], rtol=1e-10)
    np.testing.assert_allclose(out["opt_loss"], ref["gd_loss"], rtol=1e-10)
    with pytest.raises(EoslabError, match="start"):
        rf.run(_small_problem(), 1.0, 10, start=-1)


def test_network_measures_count_each_rows_own_edge_eigenvalues():
    """``edge_error`` looks at the first ``n_active`` eigenvalues of each late row (an eigenvalue
    that enters late is not held before it enters); ``multi_fraction`` is the share of the EoS
    phase with two or more at the edge."""
    from types import SimpleNamespace

    from eoslab.experiments.kinds.central_flow import edge_error, multi_fraction

    lr, T = 0.5, 10
    na = np.array([0, 1, 1, 2, 2, 2, 2, 3, 3, 3])
    eigs = np.full((T, 3), 0.9 * 2 / lr)
    for t in range(T):
        eigs[t, :na[t]] = 2 / lr * (1 + 1e-6 * (t + 1))
    run = SimpleNamespace(arrays={"n_active": na, "eigs": eigs, "lr": np.float64(lr)})
    np.testing.assert_allclose(edge_error([run]).value, 1e-5, rtol=1e-6)      # row 9, not λ₃'s 0.9 before row 7
    np.testing.assert_allclose(multi_fraction([run]).value, 7 / 9)
