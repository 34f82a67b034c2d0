"""Settings, the way both sides read them: one TOML file parsed once at the edge into a frozen model."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgeloop.errors import ConfigError

__all__ = ["MAX_SECONDS", "MiB", "PositiveInt", "Seconds", "Settings", "load_settings", "read_text"]

MiB = 1024 * 1024
PositiveInt = Annotated[int, Field(gt=0)]
# A duration past a year is a typo (1e300 would overflow the timers and crash the process at start).
MAX_SECONDS = 366 * 86400
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS)]


class Settings(BaseModel):
    # No setting means "forever" by inf, and nan compares false with every bound: both are typos.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


SettingsT = TypeVar("SettingsT", bound=BaseModel)


def read_text(path: Path, *, what: str = "", error: type[Exception] = ConfigError) -> str:
    """A file an operator wrote (config, schema, policy, token, secret) as text; else ``error``, one line naming it
    and ``what`` setting points at it: it cannot be read, or it is not UTF-8."""
    where = f"{what}: " if what else ""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{where}cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise error(f"{where}{path} is not UTF-8 text (byte {exc.start})") from exc


def load_settings(cls: type[SettingsT], path: str | Path) -> SettingsT:
    """Read a TOML config file into ``cls``; any problem is one line naming file and setting."""
    path = Path(path)
    try:
        raw: dict[str, Any] = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{path}: unknown setting {where!r}") from exc
        message = error["msg"].removeprefix("Value error, ")
        # A check across settings (a model validator) has no one setting to name.
        raise ConfigError(f"{path}: {where}: {message}" if where else f"{path}: {message}") from exc
