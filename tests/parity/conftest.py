"""Hypothesis profiles: dev (quick), ci (derandomized, no database, no deadline), thorough.

Select with HYPOTHESIS_PROFILE=...; CI (the CI environment variable) uses ci, else dev.
`make parity-thorough` runs thorough.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=15, deadline=None)
settings.register_profile(
    "ci", max_examples=100, derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
