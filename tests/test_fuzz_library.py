"""Bad arguments to the library's entry points: an EoslabError with one line naming the
argument, before any computation (no raw JAX/NumPy exception)."""

import jax
import jax.numpy as jnp
import pytest

from eoslab import EoslabError, Problem
from eoslab.data import synthetic
from eoslab.dynamics.train import train
from eoslab.models import second_order
from eoslab.models.mlp import network_problem
from eoslab.theory import theorem2

P = {"w": jnp.ones((3, 1))}
X, Y = jnp.ones((5, 3)), jnp.ones((5, 1))


def f(p, x):
    return x @ p["w"]


CASES = [
    (lambda: Problem.from_model(lambda p, x: (f(p, x), 0), P, X, Y), "one array"),
    (lambda: Problem.from_model(lambda p, x: {"o": f(p, x)}, P, X, Y), "one array"),
    (lambda: Problem.from_model(f, P, jnp.ones((5, 4)), Y), "input width"),
    (lambda: Problem.from_model(f, P, X, "abc"), "targets"),
    (lambda: Problem.from_model(f, P, X, None), "targets"),
    (lambda: Problem.from_model(f, P, X, Y, norm=-1), "norm"),
    (lambda: Problem.from_model(f, P, X, Y, loss="hinge"), "loss"),
    (lambda: Problem.from_model(lambda p, x: f(p, x)[:, 0], P, X, jnp.ones(5), loss="cross_entropy"), "one-hot"),
    (lambda: train(Problem.from_model(f, P, X, Y), lr=jnp.array([0.1, 0.2]), steps=2), "lr"),
    (lambda: train(Problem.from_model(f, P, X, Y), lr=float("nan"), steps=2), "lr"),
    (lambda: train(Problem.from_model(f, P, X, Y), lr=0.1, steps=2, k=3), "parameters"),
    (lambda: train(Problem.from_model(f, P, X, Y), lr=0.1, steps=2, tol=float("nan")), "tol"),
    (lambda: train(Problem.from_model(f, P, X, Y), lr=0.1, steps=10**20), "steps"),
    (lambda: train(Problem.from_model(f, {"w": jnp.ones((3, 1), jnp.float32)}, X.astype(jnp.float32),
                                      Y.astype(jnp.float32)), lr=1e300, steps=2), "overflows float32"),  # η = inf
    (lambda: synthetic(1, 4), "n must be ≥ 2"),
    (lambda: theorem2.check(jax.random.PRNGKey(0), 3, 2, sigma_z=1e300, samples=3), "sigma_z"),
    (lambda: theorem2.check(jax.random.PRNGKey(0), 3, 2, samples=2**31 - 1), "samples"),
    (lambda: synthetic(10**8, 64), "memory"),  # was NumPy's MemoryError traceback
    (lambda: network_problem("mlp", 1000, 10**6, "tanh", "standard", "synthetic", None, 10, None, "mse", 0,
                             "float32"), "memory"),  # from the shapes alone, before θ₀ is drawn
    (lambda: network_problem("mlp", 1, 4, "tanh", "standard", "synthetic", None, 10, [1], "mse", 0, "float32"),
     "--classes is the number of classes, ≥ 2"),  # one regression target has no std (0/0: NaN targets)
    (lambda: second_order.random(jax.random.PRNGKey(0), 100_000, 100_000), "memory"),
]


@pytest.mark.parametrize("call,words", CASES, ids=[w + str(i) for i, (_, w) in enumerate(CASES)])
def test_bad_library_argument_is_an_eoslab_error(call, words):
    with pytest.raises(EoslabError) as exc:
        call()
    msg = str(exc.value)
    assert words in msg and "\n" not in msg, msg
