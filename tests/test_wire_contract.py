"""docs/wire-contract.md lists every error status both APIs can answer, and nothing they cannot."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = (ROOT / "docs" / "wire-contract.md").read_text()
ROW = re.compile(r"^\| (\d{3}) \| `([a-z_]+)` \|", re.MULTILINE)

# Answered by aiohttp's router itself; both middlewares put them in the one error shape.
FRAMEWORK = {(404, "not_found"), (405, "method_not_allowed")}
RUNNER = ROOT / "edgeloop" / "runner.py"  # both servers' parser rejections and body timeouts


def documented(heading: str) -> set[tuple[int, str]]:
    """The (status, code) rows of the table under one heading of the contract."""
    start = CONTRACT.index(f"### {heading}\n")
    end = CONTRACT.find("\n#", start + 1)
    section = CONTRACT[start : end if end != -1 else None]
    return {(int(status), code) for status, code in ROW.findall(section)}


def answered(paths: list[Path], calls: set[str], tables: set[str] = frozenset()) -> set[tuple[int, str]]:
    """(status, code) pairs the code can answer: literal first two arguments of the error calls,
    and the items of status → code tables."""
    found: set[tuple[int, str]] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
                args = node.args[:2]
                if name in calls and len(args) == 2 and all(isinstance(arg, ast.Constant) for arg in args):
                    status, code = (arg.value for arg in args)
                    if isinstance(status, int) and isinstance(code, str):
                        found.add((status, code))
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
                if any(isinstance(target, ast.Name) and target.id in tables for target in node.targets):
                    for key, value in zip(node.value.keys, node.value.values):
                        found.add((key.value, value.value))  # type: ignore[union-attr]
    return found


def test_every_agent_status_is_documented_and_only_those():
    """The agent socket's table is exactly what collector/intake.py can answer."""
    code = answered([ROOT / "collector" / "intake.py", RUNNER], {"error_response"}, {"ERROR_CODES", "PARSER_CODES"})
    assert code, "found no error responses: did intake.py's helpers change name?"
    docs = documented("Agent socket: every status")
    assert sorted(code - docs) == [], "answered by the agent but not in docs/wire-contract.md"
    assert sorted(docs - code) == [], "in docs/wire-contract.md but never answered by the agent"


def test_every_ingest_status_is_documented_and_only_those():
    """The ingest table is exactly what the ingest package can answer (its handlers, batch checks and store)."""
    code = answered([*sorted((ROOT / "ingest").glob("*.py")), RUNNER], {"_error", "BatchRejected"}, {"PARSER_CODES"}) | FRAMEWORK
    assert len(code) > len(FRAMEWORK), "found no error responses: did the ingest helpers change name?"
    docs = documented("Ingest: every status")
    assert sorted(code - docs) == [], "answered by ingest but not in docs/wire-contract.md"
    assert sorted(docs - code) == [], "in docs/wire-contract.md but never answered by ingest"


def test_readme_points_at_docs_not_outside_the_repository():
    """The README links the design and the wire contract in docs/, and nothing outside the repository."""
    readme = (ROOT / "README.md").read_text()
    assert "../shared" not in readme
    assert "docs/design.md" in readme and "docs/wire-contract.md" in readme
    for page in ("design.md", "wire-contract.md"):
        assert (ROOT / "docs" / page).exists()
