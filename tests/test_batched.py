"""Batched training: B members in one compiled call equal B separate `train` runs (spectra
per member, divergence masked per member); bad input refused before any work."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eoslab import Problem, progress
from eoslab.data import synthetic
from eoslab.dynamics import optim
from eoslab.dynamics.batched import train_batch
from eoslab.dynamics.train import train
from eoslab.errors import EoslabError
from eoslab.models.mlp import MLP


def _problem(seed, n=24, d=4, width=6, dtype=jnp.float32):
    ds = synthetic(n, d, seed=seed, dtype=np.dtype(dtype).name)
    net = MLP(1, width, "tanh", 1)
    return Problem.from_model(net, net.init(jax.random.PRNGKey(seed), d, dtype), jnp.asarray(ds.x),
                              jnp.asarray(ds.y))


def _close(a, b, rtol):
    a, b = np.asarray(a, float), np.asarray(b, float)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(a[~np.isnan(a)], b[~np.isnan(b)], rtol=rtol, atol=rtol * np.nanmax(np.abs(b)))


def test_members_equal_separate_runs_and_diverge_alone():
    """Step sizes and momenta per member, no spectra: each member is its own `train` run; the
    member that overflows is masked from its own first non-finite step, the others go on."""
    p = _problem(0)
    lrs, moms = [0.05, 0.3, 40.0, 0.1], [0.0, 0.0, 0.0, 0.5]  # η = 40 diverges within a few steps
    trajs, final = train_batch(p, lrs, 30, momentum=moms, track=(), chunk=15)
    assert jax.tree_util.tree_leaves(final)[0].shape[0] == 4
    for i, (traj, lr, mom) in enumerate(zip(trajs, lrs, moms)):
        ref, fin = train(p, lr, 30, momentum=mom, track=(), chunk=15)
        assert traj["diverged"].tolist() == ref["diverged"].tolist()
        ok = ~ref["diverged"]
        _close(traj["loss"][ok], ref["loss"][ok], 1e-5)
        assert np.all(np.isnan(traj["loss"][~ok])) and float(traj["lr"]) == lr
        np.testing.assert_allclose(traj["edge"][ok], 2 * (1 + mom) / lr, rtol=1e-6)  # the member's own edge
        if not ref["diverged"].any():
            for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(fin)):
                np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert trajs[2]["diverged"][-1] and not any(trajs[i]["diverged"].any() for i in (0, 1, 3))


def test_adam_members_equal_separate_runs():
    """Adam members (own η, β₁, β₂, seed) through the one stepper equal `train` runs with the
    same optimizer and seed: loss, gradient norm, the (preconditioned) edge, final parameters."""
    p = _problem(0)
    opts = [optim.adam(0.01), optim.adam(0.05, b1=0.5), optim.adam(0.02, b2=0.9)]
    trajs, final = train_batch(p, steps=25, optimizer=opts, track=(), seed=[0, 1, 2], chunk=10)
    for i, (traj, opt) in enumerate(zip(trajs, opts)):
        ref, fin = train(p, steps=25, optimizer=opt, track=(), seed=i, chunk=10)
        assert traj["diverged"].tolist() == ref["diverged"].tolist() and set(ref) <= set(traj)
        assert traj.meta["optimizer"] == "adam" and traj.meta["quantity"] == "preconditioned"
        for key in ("loss", "grad_norm", "edge"):
            _close(traj[key], ref[key], 1e-5)
        if not ref["diverged"].any():
            for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(fin)):
                np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert not any(t["diverged"].any() for t in trajs)


def test_sgd_members_draw_their_own_batches_and_equal_separate_runs():
    """Mini-batch SGD members (batch_size): member i draws the batches of `train(..., seed=i)`
    (its own key stream), so loss, batch loss, batch sharpness and final parameters equal that
    run's; two members with the same η and different seeds part."""
    p = _problem(0)
    lrs, seeds = [0.1, 0.1, 0.3], [0, 1, 2]
    trajs, final = train_batch(p, lrs, 12, track=(), seed=seeds, batch_size=6, batch_sharpness_samples=4, chunk=6,
                               track_every=2)
    for i, (traj, lr, seed) in enumerate(zip(trajs, lrs, seeds)):
        ref, fin = train(p, lr, 12, track=(), seed=seed, batch_size=6, batch_sharpness_samples=4, chunk=6,
                         track_every=2)
        assert traj.meta["batch_size"] == 6 and set(ref) <= set(traj)
        for key in ("loss", "batch_loss", "grad_norm", "batch_sharpness", "batch_sharpness_se"):
            _close(traj[key], ref[key], 1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(fin)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert np.all(np.isnan(trajs[0]["batch_sharpness"][1::2]))  # measured every track_every steps
    assert not np.allclose(trajs[0]["batch_loss"], trajs[1]["batch_loss"])
    with pytest.raises(EoslabError, match="batch_size 25 is larger than the number of examples 24"):
        train_batch(p, lrs, 5, batch_size=25)


def test_mixed_optimizer_kinds_refused():
    with pytest.raises(EoslabError, match="optimizers of one kind"):
        train_batch(_problem(0), steps=5, optimizer=[optim.adam(0.1), optim.rmsprop(0.1)])
    with pytest.raises(EoslabError, match="not both"):
        train_batch(_problem(0), [0.1], 5, optimizer=optim.adam(0.1))


@pytest.mark.slow
def test_spectra_tracked_per_member():
    p = _problem(0)
    lrs = [0.05, 0.3, 40.0]
    trajs, _ = train_batch(p, lrs, 20, k=1, chunk=20)
    for traj, lr in zip(trajs, lrs):
        ref, _ = train(p, lr, 20, k=1, track=("hessian",), chunk=20)
        ok = ~ref["diverged"]
        assert traj["diverged"].tolist() == ref["diverged"].tolist()
        _close(traj["hessian_eigs"][ok], ref["hessian_eigs"][ok], 1e-3)  # the tracker's tolerance
        assert np.all(traj["hessian_residuals"][ok] >= 0)


@pytest.mark.slow
def test_seed_members_with_their_own_data_and_vectorised_spectra():
    ps = [_problem(s) for s in range(3)]
    trajs, _ = train_batch(ps, 0.1, 20, k=1, seed=[0, 1, 2], chunk=20, spectra="vmap")
    for s in range(3):
        ref, _ = train(ps[s], 0.1, 20, k=1, track=("hessian",), seed=s, chunk=20)
        _close(trajs[s]["loss"], ref["loss"], 1e-5)
        _close(trajs[s]["hessian_eigs"], ref["hessian_eigs"], 1e-3)


@pytest.mark.parametrize("kw, message", [
    (dict(lr=[0.1, -1.0]), "every step size must be a finite positive number"),
    (dict(lr=[0.1], momentum=1.0), "momentum must be"),
    (dict(lr=[0.1], spectra="both"), "spectra must be one of"),
    (dict(lr=[0.1], track=("hessain",)), "unknown operator"),
    (dict(lr=[0.1, 0.2], seed=[0, 1, 2]), "seed must be one integer or 2"),
])
def test_bad_input_refused(kw, message):
    with pytest.raises(EoslabError, match=message):
        train_batch(_problem(0), steps=5, **kw)
    with pytest.raises(EoslabError, match="differs from problem 0"):
        train_batch([_problem(0), _problem(1, width=7)], 0.1, 5)


@pytest.mark.slow
def test_networks_train_chunk_batched_equals_one_by_one():
    """The `networks.train` kind's batched path (accelerators, or EOSLAB_BATCH=1) stores what
    its one-by-one path stores, to rounding: GD, heavy-ball and Adam members of two seeds (one
    batch per optimizer kind, results back in the points' order)."""
    from eoslab.experiments.kinds import train as kind

    base = dict(model="mlp", depth=1, width=6, activation="tanh", parametrisation="standard", dtype="float32",
                data="synthetic", data_dir="", n=24, d=4, classes=0, target_scale=4.0, loss="mse", optimizer="gd",
                lr=0.1, momentum=0.0, b1=0.9, b2=0.999, opt_eps=1e-8, batch_size=0, steps=20, k=1, track_every=1,
                tol=1e-3, seed=0)
    points = [dict(base), dict(base, optimizer="adam", lr=0.01, seed=1),
              dict(base, lr=0.3, optimizer="momentum", momentum=0.5, seed=1), dict(base, optimizer="adam", lr=0.02)]
    for one, batch, p in zip([kind.simulate(q) for q in points], kind.simulate_batch(points), points):
        assert set(one) == set(batch)
        if p["optimizer"] != "adam":
            np.testing.assert_allclose(batch["edge"], 2 * (1 + p["momentum"]) / p["lr"], rtol=1e-6)
        else:
            _close(batch["preconditioned_eigs"], one["preconditioned_eigs"], 1e-3)
        for key in ("loss", "edge", "hessian_eigs", "max_edge_ratio", "final_loss"):
            _close(batch[key], one[key], 1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("solve", ["one_by_one", "vectorised"])
def test_trackers_vmapped_with_a_shared_count_equal_separate_ones(solve):
    """`davidson.track(..., shared_count=True)` vmapped over B trackers whose call count is one
    un-batched number (the batched trainings' case) gives each tracker exactly its own
    sequence of calls: values to rounding, the same products at every call, through the cold
    start, guard-skipping calls and the periodic checks (every 5 calls here), with the solves
    run member by member or vectorised."""
    import dataclasses

    from eoslab.spectra.davidson import track, track_init

    n, B, calls = 30, 3, 12
    opts = dict(tol=1e-6, check_every=5)
    A = []
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(0), B)):
        Q = jnp.linalg.qr(jax.random.normal(key, (n, n), jnp.float64))[0]
        lam = jnp.linspace(1.0, 0.0, n) ** 3 * (2.0 + i)
        A.append(jnp.stack([(Q * (lam * (1 + 0.002 * c))) @ Q.T for c in range(calls)]))  # a drifting spectrum
    A = jnp.stack(A)                                                                        # (B, calls, n, n)
    init = [track_init(n, 2, jax.random.PRNGKey(i), jnp.float64) for i in range(B)]

    @jax.jit
    def one(state, As):
        def body(st, a):
            st, r = track(lambda v: a @ v, st, **opts)
            return st, (r.values, r.n_products)
        return jax.lax.scan(body, state, As)[1]

    @jax.jit
    def batch(states, As):
        def body(st, a):
            count = st.count[0]  # every tracker has made the same number of calls
            call = lambda s, a: track(lambda v: a @ v, dataclasses.replace(s, count=count), shared_count=True,
                                      batched_solve=solve, **opts)
            st, r = jax.vmap(call)(st, a)
            return st, (r.values, r.n_products)
        return jax.lax.scan(body, states, jnp.swapaxes(As, 0, 1))[1]

    values, products = batch(jax.tree_util.tree_map(lambda *x: jnp.stack(x), *init), A)
    for i in range(B):
        ref_values, ref_products = one(init[i], A[i])
        np.testing.assert_array_equal(np.asarray(products[:, i]), np.asarray(ref_products))
        np.testing.assert_allclose(np.asarray(values[:, i]), np.asarray(ref_values), rtol=1e-10)
    p = np.asarray(products)
    assert np.all(p[0] >= 30) and np.all(p[5] > p[4])  # the cold start, a periodic check
    assert np.any(p[1:5] == 2)                          # and calls that skipped the guards


@pytest.mark.slow
def test_vectorised_spectra_members_equal_separate_runs():
    """spectra="vmap" (the step index and tracker counts shared, un-batched): each member's top-2
    Hessian values and products per step equal its own `train` run's, through the periodic check
    (call 100) and with a member that diverges (its counters freeze, the others go on). The
    step sizes keep the others below the edge, where rounding differences do not grow; float64, so
    that rounding does not move a stopping decision either."""
    p = _problem(0, dtype=jnp.float64)
    lrs = [0.05, 0.1, 40.0]
    trajs, _ = train_batch(p, lrs, 105, k=2, chunk=35, spectra="vmap")
    for traj, lr in zip(trajs, lrs):
        ref, _ = train(p, lr, 105, k=2, track=("hessian",), chunk=35)
        ok = ~ref["diverged"]
        assert traj["diverged"].tolist() == ref["diverged"].tolist()
        _close(traj["hessian_eigs"][ok], ref["hessian_eigs"][ok], 1e-3)
        np.testing.assert_array_equal(traj["hessian_products"][ok], ref["hessian_products"][ok])
        assert not ok[100] or traj["hessian_products"][100] >= 3 + 8  # the periodic check: block + 8 Lanczos
    trajs, _ = train_batch(p, lrs[:2], 12, k=1, track_every=3, chunk=12, spectra="vmap")
    for traj, lr in zip(trajs, lrs):
        ref, _ = train(p, lr, 12, k=1, track=("hessian",), track_every=3, chunk=12)
        assert traj["tracked"].tolist() == ref["tracked"].tolist()
        _close(traj["hessian_eigs"], ref["hessian_eigs"], 1e-3)


@pytest.mark.slow
def test_networks_train_mini_batch_chunk_batched_equals_one_by_one():
    """Mini-batch points of `networks.train` (one batch_size per chunk) batched: each member draws
    its own seed's batches, so it stores what the one-by-one path stores."""
    from eoslab.experiments.kinds import train as kind

    base = dict(model="mlp", depth=1, width=6, activation="tanh", parametrisation="standard", dtype="float32",
                data="synthetic", data_dir="", n=24, d=4, classes=0, target_scale=4.0, loss="mse", optimizer="gd",
                lr=0.1, momentum=0.0, b1=0.9, b2=0.999, opt_eps=1e-8, batch_size=8, steps=12, k=1, track_every=1,
                tol=1e-3, seed=0)
    points = [dict(base), dict(base, seed=1), dict(base, lr=0.2)]
    for one, batch in zip([kind.simulate(q) for q in points], kind.simulate_batch(points)):
        assert set(one) == set(batch)
        for key in ("loss", "batch_loss", "batch_sharpness", "hessian_eigs", "final_loss"):
            _close(batch[key], one[key], 1e-3)


@pytest.mark.slow
def test_vectorised_members_in_groups_equal_separate_runs():
    """More members than `batched.CPU_GROUP` run as groups vectorised one after the other (B = 12:
    2 groups of 6): every member still equals its own `train` run, spectra and a divergent member
    included."""
    from eoslab.dynamics.batched import _group

    p = _problem(0)
    lrs = list(np.linspace(0.05, 0.4, 11)) + [40.0]
    assert _group(len(lrs)) == 6
    trajs, final = train_batch(p, lrs, 16, k=1, chunk=8, spectra="vmap")
    for i, (traj, lr) in enumerate(zip(trajs, lrs)):
        ref, fin = train(p, float(lr), 16, k=1, track=("hessian",), chunk=8)
        ok = ~ref["diverged"]
        assert traj["diverged"].tolist() == ref["diverged"].tolist()
        _close(traj["loss"][ok], ref["loss"][ok], 1e-5)
        _close(traj["hessian_eigs"][ok], ref["hessian_eigs"][ok], 1e-3)
        if ok.all():
            for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(fin)):
                np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert trajs[-1]["diverged"][-1] and not any(t["diverged"].any() for t in trajs[:-1])



def _assert_same(one, other, keys=None):
    for a, b in zip(one, other):
        assert a.keys() == b.keys()
        for key in keys or a:
            if key not in ("seconds", "batch_seconds"):
                assert a[key].dtype == b[key].dtype, key
                np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=key)


class _Updates:
    def __init__(self):
        self.done = []

    def start(self, description, total, unit):
        return None

    def update(self, handle, completed, info=""):
        self.done.append(completed)

    def stop(self, handle, ok=True):
        pass


def test_parts_on_threads_equal_one_thread_bit_for_bit(monkeypatch):
    """On a CPU the members are split into parts (here 7 members in 3 parts of 3: the last one
    member and 2 copies of it), advanced by `threads` threads at once: every record and the final
    parameters equal those of one thread exactly, the part whose members have all diverged (and
    stop running) included, and (to rounding) those of one part of all 7, so the padding changes
    nothing. The problem is float64 and x64 mode is off globally, so in new threads too: the
    workers must take the caller's precision (`train_batch` follows the problem's dtype; JAX's
    switch is per thread)."""
    from eoslab.dynamics import batched

    p = _problem(0, dtype=jnp.float64)
    lrs, moms = [0.05, 0.3, 0.1, 1e8, 1e12, 1e9, 0.2], [0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]
    monkeypatch.setattr(batched, "CPU_PARTS", 3)
    assert batched._parts(7) == [(0, 3), (3, 6), (6, 7)]
    jax.config.update("jax_enable_x64", False)  # off globally, so in new threads too
    try:
        one, fin1 = train_batch(p, lrs, 30, momentum=moms, track=(), chunk=15, threads=1)
        with progress.reporting(rec := _Updates()):
            three, fin3 = train_batch(p, lrs, 30, momentum=moms, track=(), chunk=15, threads=3)
        monkeypatch.setattr(batched, "CPU_PARTS", 1)
        whole, fin_whole = train_batch(p, lrs, 30, momentum=moms, track=(), chunk=15, threads=3)
    finally:
        jax.config.update("jax_enable_x64", True)
    assert one[0]["loss"].dtype == np.float64
    _assert_same(one, three)
    for a, b, c in zip(*(jax.tree_util.tree_leaves(f) for f in (fin1, fin3, fin_whole))):
        assert a.dtype == b.dtype == jnp.float64 and a.shape == c.shape
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_allclose(np.asarray(a)[[0, 1, 2, 6]], np.asarray(c)[[0, 1, 2, 6]], rtol=1e-12)
    for a, b in zip(one, whole):
        _close(a["loss"], b["loss"], 1e-12)
    assert [t["diverged"][-1] for t in one] == [False, False, False, True, True, True, False]
    assert rec.done == [15, 30]  # the bar moves after every chunk


@pytest.mark.slow
@pytest.mark.parametrize("spectra", ["map", "vmap"])
def test_parts_with_spectra_on_threads_equal_one_thread_bit_for_bit(monkeypatch, spectra):
    """The same with each member's top Hessian eigenvalue tracked, both spectra modes."""
    from eoslab.dynamics import batched

    monkeypatch.setattr(batched, "CPU_PARTS", 2)
    p = _problem(0)
    lrs = [0.05, 0.2, 40.0, 0.4]
    kw = dict(k=1, chunk=6, spectra=spectra)
    one, fin1 = train_batch(p, lrs, 12, threads=1, **kw)
    two, fin2 = train_batch(p, lrs, 12, threads=2, **kw)
    _assert_same(one, two)
    for a, b in zip(jax.tree_util.tree_leaves(fin1), jax.tree_util.tree_leaves(fin2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert one[2]["diverged"][-1] and not one[3]["diverged"].any()


_GROUPED_PARTS_ON_THREADS = """
import jax, jax.numpy as jnp, numpy as np
from eoslab import Problem
from eoslab.data import synthetic
from eoslab.dynamics import batched
from eoslab.models.mlp import MLP

ds, net = synthetic(32, 16, seed=0), MLP(1, 128, "tanh", 1)
p = Problem.from_model(net, net.init(jax.random.PRNGKey(0), 16, jnp.float32), jnp.asarray(ds.x), jnp.asarray(ds.y))
lrs = np.linspace(0.02, 0.1, 16 * batched._cores())
many, _ = batched.train_batch(p, lrs, 2, chunk=2, spectra="vmap", threads=None)
one, _ = batched.train_batch(p, lrs, 2, chunk=2, spectra="vmap", threads=1)
same = all(np.array_equal(a[k], b[k], equal_nan=True) for a, b in zip(many, one) for k in ("loss", "hessian_eigs"))
print("finished", same, p.num_params)
"""


def test_vectorised_parts_in_groups_on_every_core_finish():
    """A configuration that deadlocked: every core runs a vectorised part of 16 members (2 groups
    of 8, one after the other) of a 2,305-parameter MLP at once. Each group's tracker QR
    (2,305 × 3, batch 8) was large enough for jaxlib's CPU LAPACK kernel to split it over XLA's
    intra-op pool and wait for the pieces; with one such wait on every pool thread nothing ran
    them. In a subprocess, so that a regression fails here (timeout) instead of hanging the suite;
    the threaded result equals the one-thread one bit for bit."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    try:
        out = subprocess.run([sys.executable, "-c", _GROUPED_PARTS_ON_THREADS], capture_output=True, text=True,
                             env=env, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("train_batch with vectorised parts of 2 groups on every core did not finish in 120 s")
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["finished", "True", "2305"], out.stdout
