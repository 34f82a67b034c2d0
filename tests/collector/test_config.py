"""The collector's settings: the documented example config and the settings model never drift apart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from edgeloop.collector.config import CollectorConfig, SamplingRule, SyncSettings

EXAMPLE = Path(__file__).resolve().parents[2] / "collector" / "share" / "collector.example.toml"
COMMENTED_KEY = re.compile(r"^#\s*([a-z_]+)\s*=")
TABLE = re.compile(r"^\[([a-z_.]+)\]")


def _model_keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys |= _model_keys(annotation, f"{prefix}{name}.")
        elif name == "models" and model.__name__ == "SamplingSettings":
            keys |= _model_keys(SamplingRule, f"{prefix}models.<model>.")
        else:
            keys.add(f"{prefix}{name}")
    return keys


def _documented_keys(text: str) -> set[str]:
    """Keys set or shown commented out in the example, as dotted paths; per-model tables as <model>."""
    keys: set[str] = set()
    table = ""
    for line in text.splitlines():
        if match := TABLE.match(line):
            table = re.sub(r"^sampling\.models\.[a-z_]+", "sampling.models.<model>", match.group(1))
            continue
        if match := COMMENTED_KEY.match(line):
            keys.add(f"{table}.{match.group(1)}")
        elif (key := line.split("=", 1)[0].strip()) and "=" in line and not line.startswith("#"):
            keys.add(f"{table}.{key}")
    return keys


def test_every_setting_is_documented_and_nothing_else():
    """collector/share/collector.example.toml names exactly the settings CollectorConfig has."""
    documented = _documented_keys(EXAMPLE.read_text())
    assert documented == _model_keys(CollectorConfig)


def test_example_config_is_valid():
    """The example config loads as written, and with its commented-out settings switched on."""
    CollectorConfig.load(EXAMPLE)
    text = "\n".join(re.sub(r"^#\s*([a-z_]+\s*=)", r"\1", line) for line in EXAMPLE.read_text().splitlines())
    config = CollectorConfig.model_validate(tomllib.loads(text))
    assert config.sync.url and config.agent.metrics_listen and config.sampling.seed == 42


@pytest.mark.parametrize(
    ("url", "loaded"),
    [("https://ingest.example.com:8443/", "https://ingest.example.com:8443"),
     ("https://gateway.example.com/edgeloop/", "https://gateway.example.com/edgeloop")],
)
def test_a_base_url_with_a_trailing_slash_or_behind_a_proxy_prefix_loads(url, loaded):
    """sync.url takes a trailing slash and a reverse proxy's path prefix (only an API path such as /v1 is refused)."""
    assert SyncSettings(url=url).url == loaded
