"""The README and the example configs keep up with the code."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
import tomllib
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


def _blocks(language: str) -> list[str]:
    """The README's fenced code blocks in one language."""
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _command_lines() -> list[tuple[str, list[str]]]:
    """Each ``edgeloop-collector``/``edgeloop-ingest`` invocation in the README's shell blocks, as (command, argv):
    ``sudo`` and comments dropped, ``[optional]`` brackets opened, one entry per command of a ``|`` alternation."""
    found = []
    for block in _blocks("sh"):
        for line in block.splitlines():
            match = re.match(r"\s*\(?(?:umask \d+; )?(?:sudo\s+)?(edgeloop-(?:collector|ingest))\s+(.*)", line)
            if not match:
                continue
            command, rest = match.groups()
            tokens = shlex.split(rest.replace("[", "").replace("]", "").replace(")", " "), comments=True)
            parts: list[list[str]] = [[]]
            for token in tokens:
                if token in ("|", ">", "<", "2>&1"):
                    parts.append([])
                else:
                    parts[-1].append(token)
            found.append((command, parts[0]))
            # "devices list | devices revoke NAME | ...": the same command's other forms, not a pipe into a file.
            found += [(command, part) for part in parts[1:] if part and not part[0].endswith((".gz", ".sql", ".token"))
                      and part[0] not in ("gzip",)]
    return found


def test_readme_command_lines_parse(tmp_path, monkeypatch):
    """Every edgeloop-collector and edgeloop-ingest command line the README prints names a command and options the
    CLI has, and writes its --out into a folder the README has made, so a reader who pastes it gets the command,
    not a usage error."""
    from edgeloop.collector import cli as collector_cli
    from edgeloop.ingest import cli as ingest_cli

    monkeypatch.chdir(tmp_path)  # an empty folder, holding only what the README's own `mkdir -p` lines make
    for block in _blocks("sh"):
        for folder in re.findall(r"^mkdir -p (\S+)$", block, re.M):
            (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    lines = _command_lines()
    assert len(lines) > 30
    refused = []
    for command, argv in lines:
        parser = (collector_cli if command == "edgeloop-collector" else ingest_cli)._parser()
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
                parser.parse_args(argv)
        except SystemExit as exc:
            if exc.code:
                refused.append((command, argv, err.getvalue().strip().splitlines()[-1]))
    assert refused == []


def test_readme_toml_examples_load():
    """The README's TOML examples load: the [privacy] section as collector settings, the policy against the
    vibration schema, the [store] section as ingest settings."""
    from edgeloop.schemas.policy import load_policy_text
    from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry

    privacy, policy, store = _blocks("toml")
    CollectorConfig.model_validate(tomllib.loads(privacy))
    load_policy_text(policy, SchemaRegistry.from_dir(EXAMPLES_DIR).get("vibration"), source="README")
    IngestConfig.model_validate(tomllib.loads(store))


def test_readme_sdk_snippet_runs_as_printed(tmp_path):
    """The README's SDK snippet, pasted into a file with only the socket path changed, runs and delivers its
    prediction and its feedback to a real agent."""
    from tests.collector.conftest import AgentProcess, default_config

    (snippet,) = [block for block in _blocks("python") if "from edgeloop import Client" in block]
    root = tmp_path / "device"
    root.mkdir()
    agent = AgentProcess(root, default_config(root)).start()
    try:
        assert "/run/edgeloop/agent.sock" in snippet
        app = tmp_path / "app.py"
        app.write_text(snippet.replace("/run/edgeloop/agent.sock", str(agent.socket)) + "print(client.stats())\n")
        result = subprocess.run([sys.executable, str(app)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert "'sent': 2, 'invalid': 0, 'dropped': {}" in result.stdout, result.stdout
        assert agent.status()["journal"]["records"] == 2
    finally:
        agent.kill()


def test_settings_the_docs_name_exist():
    """Every `section.setting` the README and docs name in backticks is a setting of one of the config models (a
    renamed setting leaves no reader setting a name the config refuses), status fields aside."""
    names = set(settings(CollectorConfig)) | set(settings(IngestConfig))
    sections = "|".join(sorted({name.split(".")[0] for name in names}))
    not_settings = {"sync.last_success_at"}  # a status document's field
    unknown = []
    for doc in ("README.md", "docs/design.md", "docs/wire-contract.md"):
        text = (ROOT / doc).read_text()
        for name in set(re.findall(rf"`((?:{sections})\.[a-z_]+(?:\.[a-z_<>]+)*)`", text)):
            if name.endswith((".py", ".json", ".lock", ".toml", ".token", ".key")):
                continue  # a file: sync.json, store.py, agent.lock
            if name not in names | not_settings and not any(known.startswith(f"{name}.") for known in names):
                unknown.append((doc, name))
    assert unknown == []
