"""The distribution installs one import name, edgeloop, and claims no generic ones."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_sdk_imports_beside_an_apps_own_schemas_and_collector(tmp_path: Path) -> None:
    """An app with its own schemas.py and collector/ package imports the SDK as edgeloop.Client."""
    (tmp_path / "schemas.py").write_text("class Prediction:  # the app's own pydantic models\n    pass\n")
    (tmp_path / "collector").mkdir()
    (tmp_path / "collector" / "__init__.py").write_text("NAME = 'the app'\n")
    (tmp_path / "ingest.py").write_text("NAME = 'the app'\n")
    app = (
        "import schemas, collector, ingest\n"
        "from edgeloop import Client\n"
        "from edgeloop.errors import AgentUnavailableError\n"
        "c = Client('/nonexistent/agent.sock')\n"
        "rid = c.log_prediction('vibration', '1', inputs={}, outputs={})\n"
        "c.close(timeout_s=0.1)\n"
        "assert collector.NAME == ingest.NAME == 'the app' and schemas.Prediction\n"
        "print('ok', rid)\n"
    )
    done = subprocess.run([sys.executable, "-c", app], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ")


def test_wheel_has_only_the_edgeloop_import_name(tmp_path: Path) -> None:
    """The built wheel puts every module under edgeloop/ and ships the example schemas, and builds where no C compiler
    works (CC=false), as on a device without one: the redactor is then the pure-Python one, no C source shipped."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
        env={**os.environ, "CC": "false"},  # also spares the suite the extension's compile (./scripts/test's install has it)
    )
    (wheel,) = tmp_path.glob("edgeloop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert tops == {"edgeloop"}
    assert "edgeloop/schemas/models/vibration.toml" in names
    assert "edgeloop/collector/client.py" in names and "edgeloop/ingest/store.py" in names
    assert "edgeloop/collector/redact.py" in names
    assert not [name for name in names if name.endswith((".so", ".c", ".pyx"))], names
    # What init-config prints and the installers copy: shipped, so pip users have them too.
    for shipped in ("collector/share/collector.example.toml", "collector/share/edgeloop-collector.service",
                    "ingest/share/ingest.example.toml", "ingest/share/edgeloop-ingest.service"):
        assert f"edgeloop/{shipped}" in names, shipped
    wheel_zip = zipfile.ZipFile(wheel)
    metadata = next(name for name in names if name.endswith(".dist-info/METADATA"))
    requires = [line for line in wheel_zip.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")]
    duckdb = [line for line in requires if line.startswith(("Requires-Dist: duckdb=", "Requires-Dist: duckdb ", "Requires-Dist: duckdb;"))]
    assert duckdb and all("extra == \"server\"" in line for line in duckdb), duckdb  # a device install has no DuckDB


def test_build_outputs_of_the_compiled_redactor_stay_out_of_git() -> None:
    """The extension, its generated C and setup.py's build folder are ignored by git, so no build output is committed."""
    outputs = ["collector/_redact_fast.cpython-311-x86_64-linux-gnu.so", "collector/_redact_fast.c",
               "build/cython/_redact_fast.py", "build/cython/_redact_fast.c", "collector/_redact_fast.abi3.so"]  # fmt: skip
    done = subprocess.run(["git", "check-ignore", "--no-index", *outputs], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert sorted(done.stdout.split()) == sorted(outputs), done.stderr
    tracked = subprocess.run(["git", "ls-files", "*.so", "*.c"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert tracked.stdout == ""
