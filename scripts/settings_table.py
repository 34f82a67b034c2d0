"""Print the README's settings tables from the documented example configs.

Usage: python scripts/settings_table.py  (paste the output into README.md; a test checks
that every setting of both config models has a row there). The examples ship inside the
package (collector/share/, ingest/share/): `init-config` prints the same files.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = (ROOT / "collector" / "share" / "collector.example.toml", ROOT / "ingest" / "share" / "ingest.example.toml")
SETTING = re.compile(r"^#?\s*([a-z][a-z0-9_]*)\s*=\s*(.+)$")
SECTION = re.compile(r"^\[([a-z_.]+)\]\s*$")


def rows(example: Path) -> list[tuple[str, str, str]]:
    """(dotted setting, example value, description) for every setting the example documents."""
    out: list[tuple[str, str, str]] = []
    section = ""
    comments: list[str] = []
    group = ""  # a comment above consecutive settings describes all of them
    seen: set[str] = set()
    for raw in example.read_text().splitlines():
        line = raw.strip()
        if not line:
            comments, group = [], ""
            continue
        if match := SECTION.match(line):
            section, comments = match.group(1), []
            continue
        match = SETTING.match(line)
        if match and not (line.startswith("#") and match.group(2).endswith(":")):
            key = f"{section}.{match.group(1)}" if section else match.group(1)
            if section.startswith("sampling.models."):
                key = "sampling.models.<model>." + match.group(1)
            text = " ".join(comments) or group
            if key not in seen:
                seen.add(key)
                value = match.group(2).strip()
                if key.startswith("sampling.models."):
                    value = "`sampling.default`'s"
                    text = text or "A per-model override of the same setting in [sampling.default]."
                elif line.startswith("#"):
                    value = f"unset (e.g. `{value}`)"
                else:
                    value = f"`{value}`"
                out.append((key, value, text))
            comments, group = [], text
            continue
        if line.startswith("#"):
            comments.append(line.lstrip("#").strip())
    return out


def table(example: Path) -> str:
    lines = ["| setting | default | what it does |", "|---|---|---|"]
    for key, value, text in rows(example):
        lines.append(f"| `{key}` | {value} | {text.replace('|', '/').rstrip(':')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for example in EXAMPLES:
        command = f"edgeloop-{example.parent.parent.name} init-config"
        sys.stdout.write(f"\n`{example.relative_to(ROOT)}` (what `{command}` prints):\n\n{table(example)}\n")
