"""Settings shared by every test directory."""

from __future__ import annotations

from hypothesis import settings

# No per-example deadline: the parsers are fast, but CI machines are shared and a slow example is
# not a failure of the rule under test. Examples per test stay at hypothesis's default (100).
settings.register_profile("relay", deadline=None)
settings.load_profile("relay")
