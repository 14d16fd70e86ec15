"""Shared pytest set-up: Hypothesis explores new inputs on a developer's machine and replays a fixed
set in CI (the CI variable is set), so a red CI always points at a change, never at a new draw."""

import os

try:
    from hypothesis import settings
except ImportError:  # the bpy-only venv that runs tests/addon has no Hypothesis
    settings = None

if settings is not None:
    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")
