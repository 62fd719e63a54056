"""Paths several commands agree on (the profiler writes the profile DB, ``faas-infer up`` hands it on)."""

from __future__ import annotations

import os

# The COP profile DB, relative to the working directory (``faas-infer profile --db`` changes it).
PROFILE_DB = os.path.join(".faas-infer", "profiles.sqlite")
