"""Every number a config file sets on either side is finite and bounded: inf, nan or 1e300 is one line, not a crash."""

from __future__ import annotations

import tomllib
import types
import typing

import pytest
from pydantic import BaseModel

from edgeloop.collector.config import EXAMPLE_CONFIG as COLLECTOR_EXAMPLE
from edgeloop.collector.config import CollectorConfig
from edgeloop.errors import ConfigError
from edgeloop.ingest.config import EXAMPLE_CONFIG as INGEST_EXAMPLE
from edgeloop.ingest.config import IngestConfig


def _is_float(annotation: object) -> bool:
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_float(arg) for arg in typing.get_args(annotation))
    return annotation is float


def _float_settings(config: type[BaseModel]) -> list[tuple[str, str]]:
    """(section, name) of every float setting one level down (the sections both config files have)."""
    found = []
    for section, info in config.model_fields.items():
        model = info.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            found += [(section, name) for name, field in model.model_fields.items() if _is_float(field.annotation)]
    return found


CASES = [
    (config, example, section, name)
    for config, example in ((IngestConfig, INGEST_EXAMPLE), (CollectorConfig, COLLECTOR_EXAMPLE))
    for section, name in _float_settings(config)
]


def test_both_sides_have_float_settings_to_check():
    """The walk finds the duration settings of both sides (a walk that finds nothing would pass every case)."""
    names = {f"{config.__name__}.{section}.{name}" for config, _, section, name in CASES}
    assert {"IngestConfig.store.sql_timeout_s", "IngestConfig.server.shutdown_timeout_s",
            "CollectorConfig.sync.request_timeout_s", "CollectorConfig.spool.seal_max_age_s"} <= names


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300"])
@pytest.mark.parametrize(("config", "example", "section", "name"), CASES,
                         ids=[f"{config.__name__}.{section}.{name}" for config, _, section, name in CASES])
def test_a_float_setting_that_is_no_finite_bounded_number_is_one_line(tmp_path, config, example, section, name, value):
    """inf, nan and 1e300 in any float setting of either config file fail the load in one line naming the setting."""
    text = example.read_text(encoding="utf-8")
    assert f"[{section}]" in text
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("["):
            inside = line.strip() == f"[{section}]"
            if inside:
                lines += [line, f"{name} = {value}"]
                continue
        if inside and (line.startswith(f"{name} =") or line.startswith(f"# {name} =")):
            continue  # the example's own line (set or shown commented out) gives way to the one above
        lines.append(line)
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert tomllib.loads(path.read_text())[section][name] != 0, "the value did not reach the file"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert "\n" not in str(info.value)
    assert f"{section}.{name}" in str(info.value), str(info.value)
