"""Shared test fixtures: paths to ../shared reference data (tests skip without it)."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
YCB = SHARED / "data" / "ycb"
WEBXR_RIGHT = SHARED / "data" / "hands" / "webxr_generic_hand" / "right.glb"


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared reference data not available")
    return SHARED
