"""The ingest service's settings: one TOML file, parsed once at the edge into a frozen model.

Every setting is documented in ``share/ingest.example.toml`` (shipped in the package and
printed by ``edgeloop-ingest init-config``); a test keeps the two in step.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from edgeloop.settings import MAX_SECONDS, MiB, PositiveInt, Seconds, Settings, load_settings

__all__ = ["EXAMPLE_CONFIG", "FleetSettings", "IngestConfig", "LimitSettings", "ServerSettings", "StoreSettings", "UNIT_FILE"]

# One source: init-config, the installer and the settings table all read these files.
EXAMPLE_CONFIG: Traversable = files("edgeloop.ingest") / "share" / "ingest.example.toml"
UNIT_FILE: Traversable = files("edgeloop.ingest") / "share" / "edgeloop-ingest.service"


class ServerSettings(Settings):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8443
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    admin_token_file: Path = Path("/var/lib/edgeloop-ingest/admin.token")
    viewer_token_file: Path | None = None  # default: viewer.token beside admin_token_file
    metrics_token_file: Path | None = None  # unset: /metrics is open
    session_ttl_s: Annotated[float, Field(ge=60, le=30 * 86400)] = 43_200.0
    max_sessions: PositiveInt = 1000
    max_sessions_per_address: PositiveInt = 32
    login_failures_burst: PositiveInt = 10
    login_failure_refill_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    schemas_dir: Path | None = None
    shutdown_timeout_s: Seconds = 30.0
    max_connections: PositiveInt = 4096
    idle_timeout_s: Seconds = 30.0
    body_timeout_s: Seconds = 60.0
    retry_after_s: PositiveInt = 2
    retry_after_max_s: PositiveInt = 60
    admit_wait_s: Annotated[float, Field(ge=0, le=60)] = 30.0
    line_max_bytes: PositiveInt = 256 * MiB
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        """A name or an address: '0.0.0.0:8443' or 'https://...' only failed at serve, as a name lookup."""
        import ipaddress

        if ":" in value or "/" in value or any(char.isspace() for char in value):
            try:
                ipaddress.IPv6Address(value)
            except ValueError:
                raise ValueError(f"{value!r} is no host name or address: the port goes in server.port, and no "
                                 "scheme or path (e.g. host = \"0.0.0.0\", port = 8443)") from None
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    @property
    def viewer_token_path(self) -> Path:
        return self.viewer_token_file or self.admin_token_file.with_name("viewer.token")

    @property
    def url(self) -> str:
        """Where a CLI on this machine reaches the server."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        scheme = "https" if self.tls_cert_file else "http"
        return f"{scheme}://{host}:{self.port}"


class StoreSettings(Settings):
    db_path: Path = Path("/var/lib/edgeloop-ingest/edgeloop.duckdb")
    queue_depth: PositiveInt = 256
    queue_max_bytes: PositiveInt = 512 * MiB
    group_commit_max_batches: PositiveInt = 32
    group_commit_delay_s: Annotated[float, Field(ge=0, le=1)] = 0.002
    threads: PositiveInt | None = None  # DuckDB worker threads; default: one per core but one (at least one)
    sql_timeout_s: Seconds = 60.0
    memory_limit_bytes: PositiveInt | None = None  # DuckDB's memory_limit; default: half the machine's (or cgroup's) memory
    spill_max_bytes: PositiveInt | None = None  # DuckDB's max_temp_directory_size; default: half the disk's free space less the reserve
    reserve_free_bytes: Annotated[int, Field(ge=0)] = 256 * MiB
    sql_max_result_rows: PositiveInt = 1_000_000
    sql_max_result_bytes: PositiveInt = 256 * MiB
    sql_max_concurrent: PositiveInt = 2
    backend: Literal["duckdb", "ducklake"] = "duckdb"
    catalog: str | None = None  # ducklake: a PostgreSQL connection string (libpq key=value or postgresql:// URI)
    data_path: str | None = None  # ducklake: where the lake's Parquet files go (a directory or s3://bucket/prefix)
    lake_group_commit_max_batches: PositiveInt = 256
    lake_group_commit_delay_s: Annotated[float, Field(ge=0, le=60)] = 1.0
    lake_claim_timeout_s: Seconds = 60.0
    lake_refresh_s: Seconds = 1.0
    lake_max_retry_count: PositiveInt = 100
    s3_region: str | None = None
    s3_endpoint: str | None = None
    s3_url_style: Literal["vhost", "path"] = "vhost"
    s3_use_ssl: bool = True
    s3_key_id: str | None = None
    s3_secret_file: Path | None = None

    @model_validator(mode="after")
    def _lake(self) -> StoreSettings:
        if self.backend == "ducklake" and (not self.catalog or not self.data_path):
            raise ValueError('backend = "ducklake" needs store.catalog (a PostgreSQL connection string) and store.data_path')
        if (self.s3_key_id is None) != (self.s3_secret_file is None):
            raise ValueError("s3_key_id and s3_secret_file go together: set both or neither")
        return self

    @property
    def on_s3(self) -> bool:
        return bool(self.data_path) and self.data_path.startswith("s3://")

    @property
    def commit_max_batches(self) -> int:
        """Batches per group commit: a lake commits larger groups, rarer (each commit is a catalog transaction)."""
        return self.lake_group_commit_max_batches if self.backend == "ducklake" else self.group_commit_max_batches

    @property
    def commit_delay_s(self) -> float:
        return self.lake_group_commit_delay_s if self.backend == "ducklake" else self.group_commit_delay_s
    retention_days: PositiveInt | None = None
    retention_days_by_model: dict[str, PositiveInt] = {}
    # Finite and at most 10 years: APScheduler's interval is a timedelta, which inf or 1e300 overflowed at start.
    retention_interval_s: Annotated[float, Field(gt=0, le=10 * 365 * 86400)] = 86400.0
    tombstone_days: PositiveInt = 90


class LimitSettings(Settings):
    max_body_bytes: PositiveInt = 64 * MiB
    max_decompressed_bytes: PositiveInt = 512 * MiB
    max_rows_per_batch: PositiveInt = 1_000_000
    max_value_bytes: PositiveInt = 8 * MiB
    max_pages_per_batch: PositiveInt = 65_536
    max_footer_metadata_bytes: PositiveInt = 256 * 1024


class FleetSettings(Settings):
    default_sync_window_s: Seconds = 86400.0  # a device that has not declared how often it syncs
    grace_s: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = 900.0
    silent_after_windows: Annotated[float, Field(ge=1, le=10_000)] = 3.0
    status_retention_days: PositiveInt = 30
    min_status_interval_s: Annotated[float, Field(ge=0, le=MAX_SECONDS)] = 1.0


class IngestConfig(Settings):
    server: ServerSettings = ServerSettings()
    store: StoreSettings = StoreSettings()
    limits: LimitSettings = LimitSettings()
    fleet: FleetSettings = FleetSettings()

    @classmethod
    def load(cls, path: str | Path) -> IngestConfig:
        return load_settings(cls, path)
