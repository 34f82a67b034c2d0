"""The suite's own schedule: the slow files named in tests/conftest.py exist and ./scripts/test keeps their order."""

from __future__ import annotations

from tests.conftest import ROOT, SLOWEST_FIRST


def test_every_file_named_slowest_first_exists():
    """Each file in SLOWEST_FIRST is a test file of the repository, so a rename cannot quietly send it to the end."""
    missing = [path for path in SLOWEST_FIRST if not (ROOT / path).is_file()]
    assert missing == []
    assert len(set(SLOWEST_FIRST)) == len(SLOWEST_FIRST)


def test_scripts_test_keeps_the_slowest_first_order():
    """./scripts/test runs files per worker and tells xdist not to reorder them by their number of tests."""
    script = (ROOT / "scripts" / "test").read_text()
    assert "--dist loadfile --no-loadscope-reorder" in script
