"""The device agent's settings: one TOML file, parsed once at the edge into a frozen model.

Every setting is documented in ``share/collector.example.toml`` (shipped in the package and
printed by ``edgeloop-collector init-config``); a test keeps the two in step.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.cron import CronTrigger
from pydantic import Field, field_validator, model_validator
from yarl import URL

from edgeloop.errors import ConfigError, PolicyError
from edgeloop.schemas.model_schema import SchemaPrivacy
from edgeloop.schemas.registry import SchemaRegistry
from edgeloop.settings import MAX_SECONDS, MiB, PositiveInt, Seconds, Settings, load_settings, read_text

__all__ = [
    "AgentSettings",
    "CollectorConfig",
    "EXAMPLE_CONFIG",
    "UNIT_FILE",
    "check_policy_files",
    "check_sampling_models",
    "IntakeSettings",
    "PolicySettings",
    "PrivacySettings",
    "SamplingRule",
    "SamplingSettings",
    "SpoolSettings",
    "SyncSettings",
]

# One source: the installer, init-config and the settings table all read these files.
EXAMPLE_CONFIG: Traversable = files("edgeloop.collector") / "share" / "collector.example.toml"
UNIT_FILE: Traversable = files("edgeloop.collector") / "share" / "edgeloop-collector.service"


class AgentSettings(Settings):
    state_dir: Path = Path("/var/lib/edgeloop")
    socket_path: Path | None = None  # default: <state_dir>/agent.sock
    socket_mode: str = "0660"  # octal permissions of the socket: who may send records
    schemas_dir: Path | None = None  # default: the example schemas shipped with edgeloop
    key_file: Path = Path("/etc/edgeloop/fleet.key")
    metrics_listen: str | None = None  # "127.0.0.1:9464" also serves /metrics on TCP
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True
    shutdown_timeout_s: Seconds = 20.0
    malloc_arenas: Annotated[int, Field(ge=1, le=64)] = 2
    memory_budget_mb: Annotated[int, Field(ge=8, le=65536)] = 32  # working memory above the idle floor

    @field_validator("socket_mode")
    @classmethod
    def _octal(cls, value: str) -> str:
        try:
            mode = int(value, 8)
        except ValueError:
            raise ValueError(f"not an octal file mode: {value!r}") from None
        if not 0 <= mode <= 0o777:
            raise ValueError(f"not a file mode: {value!r}")
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"must be host:port, got {value!r}")
        return value

    @property
    def socket(self) -> Path:
        return self.socket_path or self.state_dir / "agent.sock"


class IntakeSettings(Settings):
    max_body_bytes: PositiveInt = 640 * 1024  # at most what agent.memory_budget_mb admits
    max_records_per_request: PositiveInt = 10_000
    max_connections: PositiveInt = 256
    idle_timeout_s: Seconds = 30.0
    body_timeout_s: Seconds = 30.0
    recent_ids: Annotated[int, Field(ge=0)] = 50_000  # at least this many accepted record ids remembered, to store a resend once


class SpoolSettings(Settings):
    seal_max_rows: PositiveInt = 50_000
    seal_max_bytes: PositiveInt = 32 * MiB
    seal_max_age_s: Seconds = 3600.0
    max_bytes: PositiveInt = 1024 * MiB
    reserve_free_bytes: Annotated[int, Field(ge=0)] = 256 * MiB
    seal_reserve_bytes: Annotated[int, Field(ge=0)] = 40 * MiB  # preallocated so a seal works on a full disk
    when_full: Literal["drop_oldest", "reject_new"] = "drop_oldest"
    zstd_level: Annotated[int, Field(ge=1, le=22)] = 3


class SamplingRule(Settings):
    keep_rate: Annotated[float, Field(gt=0, le=1)] = 1.0
    always_keep_below_confidence: Annotated[float, Field(ge=0, le=1)] | None = None
    max_per_hour: PositiveInt | None = None


class SamplingSettings(Settings):
    default: SamplingRule = SamplingRule()
    models: dict[str, SamplingRule] = {}
    seed: int | None = None  # fixes the sampling RNG, for tests and reproducible benchmarks

    def rule(self, model: str) -> SamplingRule:
        return self.models.get(model, self.default)


class PolicySettings(Settings):
    """[policy]: whether the server may steer sampling, and the policy files this device pins."""

    remote: Literal["allow", "forbid"] = "allow"
    files: dict[str, Path] = {}  # model -> a policy file on the device; that model ignores remote policies


class SyncSettings(Settings):
    enabled: bool = True
    url: str | None = None  # ingest base URL, e.g. "https://ingest.example.com:8443"
    token_file: Path | None = None
    ca_file: Path | None = None
    schedule: str = "0 2 * * *"  # cron, in `timezone`
    timezone: str = "UTC"
    jitter_s: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = 7200.0
    interval_s: Seconds | None = None  # if set, replaces `schedule`
    jitter_seed: int | None = None
    high_water_bytes: PositiveInt | None = 256 * MiB
    only_if: str | None = None  # shell command; exit 0 allows the sync
    only_if_timeout_s: Seconds = 30.0
    bandwidth_bytes_per_s: PositiveInt | None = None
    request_timeout_s: Seconds = 300.0
    expect_continue_bytes: PositiveInt = 1 * MiB
    expect_continue_timeout_s: Seconds = 1.0
    max_attempts: PositiveInt = 6
    backoff_initial_s: Seconds = 1.0
    backoff_max_s: Seconds = 300.0
    max_throttle_wait_s: Seconds = 3600.0
    retry_initial_s: Seconds = 300.0
    retry_max_s: Seconds = 14400.0

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            trigger = CronTrigger.from_crontab(value, timezone=UTC)
        except ValueError as exc:
            raise ValueError(f"not a 5-field cron expression: {exc}") from None
        if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
            raise ValueError(f"{value!r} never fires: no date matches it (the agent would never sync)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError(f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Berlin") from None
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        try:
            host = URL(value).host
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if not host or any(char.isspace() for char in value):
            raise ValueError(f"not a URL with a host: {value!r}")
        # The agent adds /v1/batches/... itself: an API path here made every upload a 404 at sync time.
        path = URL(value).path.rstrip("/")
        if path.endswith("/v1") or "/v1/" in path or URL(value).query_string or URL(value).fragment:
            raise ValueError(f"{value!r}: give the server's base URL (e.g. https://ingest.example.com:8443), "
                             "without /v1, a query or a fragment")
        return value.rstrip("/")


def check_sampling_models(sampling: SamplingSettings, models: Iterable[str]) -> None:
    """A [sampling.models.X] section for a model with no schema is a typo that would silently not apply."""
    known = sorted(models)
    for model in sampling.models:
        if model not in known:
            raise ConfigError(f"sampling.models.{model}: no schema for a model named {model!r} (models: {', '.join(known)})")


def check_policy_files(policy: PolicySettings, registry: SchemaRegistry) -> None:
    """Each pinned policy file reads, parses and fits its model's schema (a ConfigError names the one that does not)."""
    from edgeloop.schemas.policy import load_policy_text

    for model, path in policy.files.items():
        schema = registry.get(model)
        if schema is None:
            raise ConfigError(f"policy.files.{model}: no schema for a model named {model!r}")
        text = read_text(path, what=f"policy.files.{model}")
        try:
            load_policy_text(text, schema, source=str(path))
        except PolicyError as exc:
            raise ConfigError(f"policy.files.{model}: {exc}") from exc


class PrivacySettings(SchemaPrivacy):
    """[privacy]: the fleet-wide patterns and allow-list (a schema can add its own), phone regions, a detector."""

    regions: tuple[str, ...] = ()  # ISO 3166 codes whose national phone numbers are found
    detector: str | None = None  # "package.module:callable" (text) -> [(start, end, label)]

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            return value  # without loading libphonenumber's tables: `status` reads this config too
        import phonenumbers

        for region in value:
            if phonenumbers.PhoneMetadata.metadata_for_region(region.upper()) is None:
                raise ValueError(f"unknown region {region!r}: use ISO 3166 codes such as DE, FR, US")
        return tuple(region.upper() for region in value)

    @field_validator("detector")
    @classmethod
    def _detector(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.]+:[\w.]+", value):
            raise ValueError(f"must be 'package.module:callable', got {value!r}")
        return value


class CollectorConfig(Settings):
    agent: AgentSettings = AgentSettings()
    intake: IntakeSettings = IntakeSettings()
    spool: SpoolSettings = SpoolSettings()
    sampling: SamplingSettings = SamplingSettings()
    sync: SyncSettings = SyncSettings()
    policy: PolicySettings = PolicySettings()
    privacy: PrivacySettings = PrivacySettings()

    @model_validator(mode="after")
    def _body_fits_budget(self) -> CollectorConfig:
        from edgeloop.collector.budget import BODY_COST, MemoryBudget

        admits = MemoryBudget.from_mb(self.agent.memory_budget_mb).max_body_bytes
        if self.intake.max_body_bytes > admits:
            raise ValueError(
                f"intake.max_body_bytes = {self.intake.max_body_bytes} is more than agent.memory_budget_mb ="
                f" {self.agent.memory_budget_mb} admits ({admits}: half the budget, a JSON array body costing about"
                f" {BODY_COST}x its size while processed); lower the one or raise the other"
            )
        return self

    @classmethod
    def load(cls, path: str | Path) -> CollectorConfig:
        return load_settings(cls, path)
