"""Floating-point precision, scoped: importing eoslab changes no global JAX setting.

* :func:`x64` turns JAX's 64-bit mode on for a block or a function (``with x64(): ...`` or
  ``@x64``) and restores the caller's setting afterwards (JAX's own ``jax.enable_x64``
  context, thread-local). The papers' models and theory (``models.quadratic2d``,
  ``second_order``, ``two_layer``, ``linear_net``, ``theory.*``) run under it, so what they
  compare with closed forms is float64 whatever the caller's mode.
* :func:`like` / :func:`follows`: the generic paths (``dynamics``, ``spectra``, ``train``)
  follow the dtype of the problem they are given: x64 on when its parameters are float64
  (e.g. a paper's model), untouched otherwise, so a float32 user model stays float32.
* The ``eoslab`` command enables x64 for its whole process (it is eoslab's own program); the
  test suite does the same (``tests/conftest.py``).

Arrays returned from a float64 scope stay float64 (NumPy conversions keep every digit); JAX
arithmetic on them *outside* a float64 scope is done in float32 by JAX, so keep such work in a
``with x64():`` block or in NumPy.
"""

from __future__ import annotations

import contextlib
import functools

import jax
import numpy as np

__all__ = ["x64", "like", "follows", "is_x64", "float_dtype"]

_WIDE = (np.dtype("float64"), np.dtype("complex128"))


class x64(contextlib.ContextDecorator):
    """JAX float64 on inside the block / decorated function; the caller's mode is restored after.

    ``with eoslab.x64(): ...`` or ``@eoslab.x64`` (also ``@eoslab.x64()``)."""

    def __new__(cls, fn=None):
        self = super().__new__(cls)
        if fn is not None and callable(fn):       # bare ``@x64``
            self.__init__()
            return self(fn)
        return self

    def __init__(self, fn=None):
        self._stack = []

    def __enter__(self):
        cm = jax.enable_x64(True)
        cm.__enter__()
        self._stack.append(cm)
        return self

    def __exit__(self, *exc):
        return self._stack.pop().__exit__(*exc)

    def _recreate_cm(self):                         # a fresh manager per call: re-entrant, thread-safe
        return x64()


def is_x64() -> bool:
    """Whether JAX's 64-bit mode is on here (globally or in a scope)."""
    return bool(jax.config.jax_enable_x64)


def _leaf_dtype(x):
    dt = getattr(x, "dtype", None)
    return None if dt is None else np.dtype(dt)


def float_dtype(tree, default=None):
    """The widest floating dtype among the leaves of ``tree`` (None / ``default`` if none)."""
    best = None
    for leaf in jax.tree_util.tree_leaves(tree):
        dt = _leaf_dtype(leaf)
        if dt is not None and dt.kind in "fc" and (best is None or dt.itemsize > best.itemsize):
            best = dt
    return default if best is None else best


def like(*trees):
    """A context that turns x64 on if any floating leaf of ``trees`` is float64 (or complex128),
    and otherwise changes nothing: generic code then computes in its inputs' precision."""
    wide = any(_leaf_dtype(leaf) in _WIDE for t in trees for leaf in jax.tree_util.tree_leaves(t))
    return x64() if wide else contextlib.nullcontext()


def follows(*names):
    """Decorator: run the function under :func:`like` of its arguments ``names`` (by keyword or
    position), e.g. ``@follows("problem", "params0")``."""

    def deco(fn):
        import inspect

        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = sig.bind_partial(*args, **kwargs)
            with like(*(bound.arguments.get(n) for n in names)):
                return fn(*args, **kwargs)

        return wrapper

    return deco
