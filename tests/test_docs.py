"""The README and the example configs keep up with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pydantic import BaseModel

from edgeloop.collector.config import CollectorConfig
from edgeloop.ingest.config import IngestConfig

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def settings(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted names of every leaf setting of a config model."""
    names = []
    for name, field in model.model_fields.items():
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names += settings(kind, f"{prefix}{name}.")
        elif name == "models" and prefix == "sampling.":
            rule = CollectorConfig.model_fields["sampling"].annotation.model_fields["default"].annotation
            names += settings(rule, "sampling.models.<model>.")
        else:
            names.append(prefix + name)
    return names


def test_readme_has_a_row_for_every_setting():
    """Every setting of both config models has a row in the README's settings tables."""
    missing = [name for name in settings(CollectorConfig) + settings(IngestConfig) if f"| `{name}` |" not in README]
    assert missing == []


def test_readme_settings_tables_are_current():
    """The README's settings tables are what scripts/settings_table.py makes from the example configs now."""
    tables = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "settings_table.py")], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert tables in README, "run: python scripts/settings_table.py and paste its output into README.md"


def test_readme_commands_exist():
    """The scripts the README tells a new user to run are in the repository and executable."""
    for script in ("scripts/demo", "scripts/test", "scripts/bench", "scripts/install-collector", "scripts/install-ingest",
                   "scripts/compare-evidently"):
        assert f"./{script}" in README
        assert (ROOT / script).stat().st_mode & 0o111, script
