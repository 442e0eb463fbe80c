"""Where the reference material (API specs, real e-invoices) lives.

The specs and samples are shared, read-only files outside the package; tests, simulator seeds
and contract checks all locate them through :func:`reference_dir` so one environment variable
(``BBVISMA_REFERENCE_DIR``) can point a CI run or an installed package at another copy.
"""

from __future__ import annotations

import os
from pathlib import Path


def reference_dir() -> Path:
    """``$BBVISMA_REFERENCE_DIR`` if set, else ``<repo>/../shared/reference``."""
    env = os.environ.get("BBVISMA_REFERENCE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "reference"
