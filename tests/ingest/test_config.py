"""The documented config file and the config model stay in step; bad settings fail in one line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from edgeloop.errors import ConfigError
from edgeloop.ingest.config import IngestConfig

EXAMPLE = Path(__file__).parents[2] / "ingest" / "share" / "ingest.example.toml"


def _documented_keys() -> set[str]:
    """Keys set in the example plus keys shown commented out (``# key = value``)."""
    keys: set[str] = set()
    section = ""
    for line in EXAMPLE.read_text().splitlines():
        header = re.match(r"^\[(\w+)\]$", line.strip())
        if header:
            section = header.group(1)
            continue
        setting = re.match(r"^#?\s?(\w+) = ", line)
        if setting and section:
            keys.add(f"{section}.{setting.group(1)}")
    return keys


def test_example_documents_every_setting():
    """ingest/share/ingest.example.toml names exactly the settings IngestConfig has."""
    fields = {
        f"{section}.{name}"
        for section, info in IngestConfig.model_fields.items()
        for name in info.annotation.model_fields
    }
    assert _documented_keys() == fields


def test_example_loads_and_matches_defaults():
    """The example file loads, and every value it sets is the default."""
    config = IngestConfig.load(EXAMPLE)
    assert config == IngestConfig()
    assert tomllib.loads(EXAMPLE.read_text())  # plain TOML


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[store]\nqueue_depth = 0\n", "store.queue_depth: Input should be greater than 0"),
        ("[server]\ncolour = 1\n", "unknown setting 'server.colour'"),
        ('[server]\ntls_cert_file = "a.pem"\n', "server: tls_cert_file and tls_key_file go together"),
        ('[server]\nhost = "0.0.0.0:8443"\n', "server.host: '0.0.0.0:8443' is no host name or address: the port goes"),
        ('[server]\nhost = "https://ingest.example.com"\n', "server.host: 'https://ingest.example.com' is no host"),
        ('[server]\nhost = "[::1]"\n', "server.host: '[::1]' is no host name or address"),
    ],
)
def test_bad_config_is_one_line(tmp_path, text, expected):
    """A bad setting gives one line naming the file and the setting (a host:port in server.host among them, which
    check-config passed and serve refused as a failed name lookup)."""
    path = tmp_path / "ingest.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        IngestConfig.load(path)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)


@pytest.mark.parametrize("host", ["::", "::1", "0.0.0.0", "ingest.example.com", "localhost"])
def test_hosts_that_are_names_or_addresses_load(tmp_path, host):
    """IPv6 addresses, IPv4 addresses and names are hosts server.host takes."""
    path = tmp_path / "ingest.toml"
    path.write_text(f'[server]\nhost = "{host}"\n')
    assert IngestConfig.load(path).server.host == host




NOT_UTF8 = b"# caf\xe9 \xff\n"


@pytest.mark.parametrize(
    ("command", "file_name"),
    [
        (["check-config", "--config", "{file}"], "ingest.toml"),
        (["schemas", "push", "{file}", "--config", "{config}"], "model.toml"),
        (["schemas", "diff", "{file}", "--config", "{config}"], "model.toml"),
        (["sql", "SELECT 1", "--url", "http://127.0.0.1:9", "--config", "{config}"], "admin.token"),
    ],
)
def test_a_file_that_is_not_utf8_is_one_line(tmp_path, command, file_name):
    """A config, schema or token file that is not UTF-8 text is refused in one line naming it, exit 1, no traceback."""
    from tests.ingest.conftest import cli, free_port, write_config

    config = write_config(tmp_path, free_port())
    cli("devices", "add", "pump-1", "--config", str(config))  # creates the database
    path = tmp_path / file_name
    path.write_bytes(NOT_UTF8)
    path.chmod(0o600)
    result = cli(*(part.format(file=path, config=config) for part in command), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and str(path) in result.stderr and "utf-8" in result.stderr.lower(), result.stderr
