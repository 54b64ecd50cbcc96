"""Shared test setup.

* JAX float64 is on for the whole session: importing eoslab does not turn it on, and the tests
  compare with closed forms and dense references in double precision. The default precision
  behaviour itself is tested in a fresh interpreter (tests/test_precision.py).
* ``tests/`` is on ``sys.path`` (pytest's default import mode), so test modules import the toy
  experiment kind as ``from toy_kind import ...`` and test-only references as
  ``from references import ...``; the toy kind is registered once here.
"""

import jax

jax.config.update("jax_enable_x64", True)

import toy_kind  # noqa: E402

toy_kind.register_toy()
