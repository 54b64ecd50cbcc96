"""Shared test setup. ``tests/`` is on ``sys.path`` (pytest's default import mode), so test
modules import the toy experiment kind as ``from toy_kind import ...`` and test-only
references as ``from references import ...``; the toy kind is registered once here."""

import toy_kind

toy_kind.register_toy()
