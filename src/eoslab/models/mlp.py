"""Fully connected networks and a small CNN, as hashable specs plus parameter pytrees.

A network here is a frozen dataclass (the *spec*: depth, width, activation,
parametrisation, all static) that is also the apply function::

    net = MLP(depth=2, width=256, activation="tanh", out_dim=10)
    params = net.init(key, in_dim=32, dtype=jnp.float32)
    outputs = net(params, x)            # x (n, in_dim) -> (n, out_dim)
    problem = Problem.from_model(net, params, x, targets)

Because the spec is hashable it can be the static ``fn`` of a :class:`~eoslab.Problem`.

Parametrisations (``fan_in`` = input width of a layer, σ_w = 1, biases start at 0):

* ``"standard"``: ``W ~ N(0, σ_w²/fan_in)``, layer ``h' = φ(h W + b)`` (LeCun init, as
  in the usual PyTorch/Flax networks, and as in Cohen et al.).
* ``"ntk"``: ``W ~ N(0, 1)``, layer ``h' = φ(h W / √fan_in + b)`` (Jacot et al.). The
  function at init has the same law; gradients (hence the NTK and the sharpness) scale
  differently with width.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from eoslab.errors import EoslabError, check_memory, check_positive_int
from eoslab.data.base import Dataset
from eoslab.problem import Problem
from eoslab.typing import DTypeLike

ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu, "elu": jax.nn.elu}
PARAMETRISATIONS = ("standard", "ntk")


def _check(activation: str, parametrisation: str) -> None:
    if activation not in ACTIVATIONS:
        raise EoslabError(f"unknown activation {activation!r}; expected one of {tuple(ACTIVATIONS)}")
    if parametrisation not in PARAMETRISATIONS:
        raise EoslabError(f"unknown parametrisation {parametrisation!r}; expected one of {PARAMETRISATIONS}")


def _dense_init(key, fan_in: int, fan_out: int, parametrisation: str, dtype):
    w = jax.random.normal(key, (fan_in, fan_out), dtype)
    if parametrisation == "standard":
        w = w / math.sqrt(fan_in)
    return {"w": w, "b": jnp.zeros((fan_out,), dtype)}


def _dense(layer, h, parametrisation: str):
    w = layer["w"]
    if parametrisation == "ntk":
        w = w / math.sqrt(w.shape[0])
    return h @ w + layer["b"]


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network with ``depth`` hidden layers of ``width`` units.

    ``depth=2`` is the paper's "2-hidden-layer" network: in → width → width → out.
    Parameters are a list of ``{"w": (fan_in, fan_out), "b": (fan_out,)}`` dicts.
    """

    depth: int = 2
    width: int = 256
    activation: str = "tanh"
    out_dim: int = 10
    parametrisation: str = "standard"

    def __post_init__(self):
        _check(self.activation, self.parametrisation)
        if int(self.depth) != self.depth or self.depth < 0:
            raise EoslabError(f"depth must be a non-negative integer, got {self.depth!r}")
        check_positive_int("width", self.width)
        check_positive_int("out_dim", self.out_dim)

    def init(self, key, in_dim: int, dtype=jnp.float32):
        """Parameters for inputs of dimension ``in_dim`` (list of layer dicts)."""
        check_positive_int("in_dim", in_dim)
        sizes = [int(in_dim)] + [self.width] * self.depth + [self.out_dim]
        keys = jax.random.split(key, len(sizes) - 1)
        return [_dense_init(k, a, b, self.parametrisation, dtype) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def __call__(self, params, x):
        """Outputs (n, out_dim) for inputs ``x`` (n, in_dim); any further input axes are flattened."""
        act = ACTIVATIONS[self.activation]
        h = x.reshape(x.shape[0], -1)
        for layer in params[:-1]:
            h = act(_dense(layer, h, self.parametrisation))
        return _dense(params[-1], h, self.parametrisation)


@dataclasses.dataclass(frozen=True)
class CNN:
    """A small convolutional network: ``len(channels)`` blocks of
    [3×3 'SAME' convolution → activation → 2×2 average pooling], then a dense read-out.

    Inputs are flat rows in CIFAR-10's channel-first order (n, C·H·W) or images
    (n, C, H, W); ``image_shape`` = (C, H, W). Parameters: a list of conv layers
    ``{"w": (3, 3, C_in, C_out), "b": (C_out,)}`` then one dense layer dict.
    """

    channels: tuple[int, ...] = (16, 32)
    activation: str = "relu"
    out_dim: int = 10
    image_shape: tuple[int, int, int] = (3, 32, 32)
    parametrisation: str = "standard"

    def __post_init__(self):
        _check(self.activation, self.parametrisation)
        for c in self.channels:
            check_positive_int("channels", c)
        C, H, W = self.image_shape
        if H % 2 ** len(self.channels) or W % 2 ** len(self.channels):
            raise EoslabError(f"image size {H}x{W} must be divisible by 2^{len(self.channels)} (one pooling per block)")

    def _flat_features(self) -> int:
        _, H, W = self.image_shape
        s = 2 ** len(self.channels)
        return (H // s) * (W // s) * self.channels[-1]

    def init(self, key, in_dim: int | None = None, dtype=jnp.float32):
        """Parameters; ``in_dim`` (if given) must equal C·H·W."""
        C, H, W = self.image_shape
        if in_dim is not None and in_dim != C * H * W:
            raise EoslabError(f"CNN expects inputs of size C*H*W = {C * H * W} for image_shape "
                              f"{self.image_shape}, got {in_dim}")
        keys = jax.random.split(key, len(self.channels) + 1)
        params, cin = [], C
        for k, cout in zip(keys, self.channels):
            w = jax.random.normal(k, (3, 3, cin, cout), dtype)
            if self.parametrisation == "standard":
                w = w / math.sqrt(9 * cin)
            params.append({"w": w, "b": jnp.zeros((cout,), dtype)})
            cin = cout
        params.append(_dense_init(keys[-1], self._flat_features(), self.out_dim, self.parametrisation, dtype))
        return params

    def __call__(self, params, x):
        """Outputs (n, out_dim)."""
        act = ACTIVATIONS[self.activation]
        C, H, W = self.image_shape
        h = x.reshape(x.shape[0], C, H, W).transpose(0, 2, 3, 1)  # NHWC
        for layer in params[:-1]:
            w = layer["w"]
            if self.parametrisation == "ntk":
                w = w / math.sqrt(w.shape[0] * w.shape[1] * w.shape[2])
            h = jax.lax.conv_general_dilated(h, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
            h = act(h + layer["b"])
            n, hh, ww, c = h.shape
            h = h.reshape(n, hh // 2, 2, ww // 2, 2, c).mean(axis=(2, 4))
        return _dense(params[-1], h.reshape(h.shape[0], -1), self.parametrisation)


def build(name: str, *, depth: int = 2, width: int = 256, activation: str = "tanh", out_dim: int = 10,
          parametrisation: str = "standard", image_shape: tuple[int, ...] = (3, 32, 32)) -> MLP | CNN:
    """The network spec called ``name`` (``"mlp"`` or ``"cnn"``; the CNN uses ``depth``
    blocks of ``width`` channels)."""
    if name == "mlp":
        return MLP(depth, width, activation, out_dim, parametrisation)
    if name == "cnn":
        return CNN(tuple([width] * max(depth, 1)), activation, out_dim, tuple(image_shape), parametrisation)
    raise EoslabError(f"unknown network {name!r}; expected 'mlp' or 'cnn'")


#: Copies of θ a training keeps at once (θ, its gradient, the optimizer's state, the tracked
#: eigenvectors and the tracker's basis, XLA's temporaries): what :func:`check_size` prices.
TRAINING_COPIES = 8


def check_size(net: "MLP | CNN", in_dim: int | None, dtype: DTypeLike, copies: int = TRAINING_COPIES) -> int:
    """The number of parameters of ``net`` on inputs of dimension ``in_dim`` (from the shapes
    alone: nothing is allocated); refuses (:class:`~eoslab.errors.ResourceError`) a network of
    which ``copies`` copies of θ in ``dtype`` do not fit in the available memory."""
    shapes = jax.eval_shape(lambda key: net.init(key, in_dim, dtype=dtype), jax.ShapeDtypeStruct((2,), jnp.uint32))
    P = sum(math.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes))
    check_memory(f"the network ({P:,} parameters)", float(copies) * jnp.dtype(dtype).itemsize * P,
                 "use a smaller width or depth")
    return P


def network_problem(model: str, depth: int, width: int, activation: str, parametrisation: str, data: str,
                    data_dir: str | None, n: int, classes: list | None, loss: str, seed: int,
                    dtype: str) -> tuple[Problem, Dataset, MLP | CNN]:
    """(problem, dataset, network) of ``eoslab train``: the dataset ``data`` (:func:`eoslab.data.load`;
    for synthetic data ``classes`` = [C] asks for C classes), the network :func:`build` with
    ``out_dim`` and ``image_shape`` of the data, θ₀ from ``PRNGKey(seed)`` in ``dtype``, and the
    :class:`~eoslab.Problem` with ``loss``."""
    from eoslab.data import load

    if dtype not in ("float32", "float64"):
        raise EoslabError(f"dtype must be float32 or float64, got {dtype!r}")
    if data == "synthetic" and classes is not None:
        if len(classes) != 1 or not isinstance(classes[0], int) or classes[0] < 2:
            raise EoslabError(f"for synthetic data --classes is the number of classes, ≥ 2 (e.g. --classes 10), "
                              f"got {','.join(map(str, classes))!r}")
        ds = load("synthetic", n=n, seed=seed, dtype=dtype, classes=classes[0])
    else:
        ds = load(data, n=n, data_dir=data_dir, classes=classes, seed=seed, dtype=dtype)
    if loss == "cross_entropy" and not ds.is_classification:
        raise EoslabError("cross-entropy needs classification data (synthetic: pass --classes C)")
    if model == "cnn" and ds.image_shape is None:
        raise EoslabError(f"the CNN needs image inputs; {ds.name} has none")
    net = build(model, depth=depth, width=width, activation=activation, out_dim=ds.out_dim,
                parametrisation=parametrisation, image_shape=ds.image_shape or (3, 32, 32))
    check_size(net, ds.in_dim, jnp.dtype(dtype))
    params = net.init(jax.random.PRNGKey(seed), ds.in_dim, dtype=jnp.dtype(dtype))
    problem = Problem.from_model(net, params, jnp.asarray(ds.x), jnp.asarray(ds.y), loss=loss)
    return problem, ds, net
