"""Shared fixtures.

Tiers (see docs/architecture.md): tests/unit (no Ray, fast), tests/integration (one local Ray
cluster per session, real small model), tests/e2e (CLI and `ray job submit` against a local head).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data sits beside the checkout on the project's own machines only (third-party data,
# never copied into the repo). RAY_COTD_SHARED_DATA points elsewhere when it lives somewhere else.
SHARED_DATA = Path(os.environ.get("RAY_COTD_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
FIXTURES = REPO_ROOT / "tests" / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with the reason when it is absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"third-party data not present at {SHARED_DATA} (set RAY_COTD_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


_TIER_ORDER = {"unit": 0, "integration": 1, "e2e": 2}


def pytest_collection_modifyitems(config, items):
    """Run unit, then integration, then e2e tests.

    e2e tests start their own head node and stop it with `ray stop`, which ends every Ray
    process on the machine; they must come after every test that uses the session cluster.
    """
    def tier(item) -> int:
        parts = Path(str(item.fspath)).relative_to(REPO_ROOT).parts
        return _TIER_ORDER.get(parts[1] if len(parts) > 1 else "", 1)

    items.sort(key=tier)  # stable: keeps file order inside a tier
