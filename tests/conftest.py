"""Shared test setup.

* JAX float64 is on for the whole session: importing eoslab does not turn it on, and the tests
  compare with closed forms and dense references in double precision. The default precision
  behaviour itself is tested in a fresh interpreter (tests/test_precision.py).
* ``tests/`` is on ``sys.path`` (pytest's default import mode), so test modules import the toy
  experiment kind as ``from toy_kind import ...`` and test-only references as
  ``from references import ...``; the toy kind is registered once here.
"""

import os
import pathlib

# One on-disk XLA compilation cache for the whole run, shared by the pytest-xdist workers and by
# every `eoslab` subprocess the CLI and doc tests start (they inherit the environment): the suite is
# bound by compilation, and most programs are compiled again in another process. Setting a size
# limit turns on JAX's file lock, which makes concurrent reads and writes safe. It lives in the
# checkout (ignored by git), so it is empty on a clean clone and reused by later local runs.
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax-test-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(4 * 2**30))

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import toy_kind  # noqa: E402

toy_kind.register_toy()
