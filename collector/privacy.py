"""Privacy rules applied on the device, column by column, before anything touches disk.

``Privacy.column(spec, values)`` turns one field's raw values (validated Python objects,
``None`` where absent) into the Arrow column that is stored, ``spec.arrow_type``:

    keep             the value as sent
    drop             never called: a dropped field has no column (see ``FieldSpec.stored``)
    hash             HMAC-SHA256 under the fleet key, lowercase hex, of the value's canonical
                     text (see ``canonical_bytes``); never a plain hash, which anyone could
                     reverse for a known e-mail by hashing it themselves
    redact           e-mails, phones, IPs, cards, IBANs replaced in text (``collector.redact``)
    round:<step>     round(x / step) * step, vectors elementwise, column type kept
    truncate:<unit>  timestamps floored to the second, minute, hour or day
    noise:<scale>    Laplace(0, scale) noise added, vectors elementwise, column type kept

Nulls stay null under every rule.
"""

from __future__ import annotations

import functools
import hmac
import random
import re
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from edgeloop.collector.redact import CustomPattern, Detector, Redactor
from edgeloop.errors import ConfigError
from edgeloop.schemas.model_schema import FieldSpec, ModelSchema, PrivacyRule

__all__ = ["MIN_KEY_BYTES", "Privacy", "canonical_bytes", "load_detector", "redactor_for"]

MIN_KEY_BYTES = 16
_HASH_CACHE_SIZE = 8192

_INT_BOUNDS = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


def canonical_bytes(value: Any) -> bytes:
    """The text a value is hashed as: UTF-8 for strings, raw bytes for binary,
    ``true``/``false``, decimal integers, Python's shortest float repr, and RFC 3339
    UTC timestamps with microseconds (``2026-11-26T06:00:00.000000+00:00``)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"true" if value else b"false"
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds").encode()
    raise TypeError(f"cannot hash a {type(value).__name__}")


def load_detector(target: str) -> Detector:
    """Import ``package.module:callable``, the model-based detector the device runs under ``redact``."""
    import importlib
    import sys

    # The agent keeps numpy out only to save its own memory; a detector (spaCy, Presidio) may need it.
    if "numpy" in sys.modules and sys.modules["numpy"] is None:
        del sys.modules["numpy"]
    module_name, _, attribute = target.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"privacy.detector: cannot load {target!r}: {exc}") from exc
    if not callable(found):
        raise ConfigError(f"privacy.detector: {target!r} is not callable")
    return found


def redactor_for(schema: ModelSchema | None, settings: Any = None, detector: Detector | None = None) -> Redactor:
    """The redactor of a schema: the fleet's regions, patterns, allow-list and detector plus the schema's own."""
    patterns = list(settings.patterns) if settings is not None else []
    allow = list(settings.allow) if settings is not None else []
    if schema is not None:
        patterns += schema.privacy.patterns
        allow += schema.privacy.allow
    return Redactor(
        regions=settings.regions if settings is not None else (),
        patterns=[CustomPattern(p.name, p.compiled, p.label, p.validator) for p in patterns],
        allow=[re.compile(text) for text in allow],
        detector=detector,
    )


class Privacy:
    """Applies a field's privacy rule to a column of raw values."""

    def __init__(self, fleet_key: bytes, *, rng: random.Random | None = None, redactor: Redactor | None = None) -> None:
        if not isinstance(fleet_key, bytes) or len(fleet_key) < MIN_KEY_BYTES:
            raise ConfigError(f"the fleet key must be at least {MIN_KEY_BYTES} bytes")
        self._key = fleet_key
        # Noise must not be predictable, so it is never seeded from the sampling seed.
        self._rng = rng if rng is not None else random.Random()
        # Pseudonymized fields repeat (operators, cameras): most hashes are a dict lookup.
        self._hashes: dict[bytes, str] = {}
        self.redactor = redactor or Redactor()

    def hash(self, value: Any) -> str:
        """HMAC-SHA256 of the value's canonical text under the fleet key, lowercase hex."""
        message = canonical_bytes(value)
        digest = self._hashes.get(message)
        if digest is None:
            digest = hmac.digest(self._key, message, "sha256").hex()
            if len(self._hashes) >= _HASH_CACHE_SIZE:
                self._hashes.clear()
            self._hashes[message] = digest
        return digest

    def text_column(self, rule: PrivacyRule, values: list[Any], redactor: Redactor | None = None) -> pa.Array:
        """A free-text column under keep, drop (all null), hash or redact: the envelope's ``source``."""
        if rule.action == "drop":
            return pa.nulls(len(values), type=pa.string())
        if rule.action == "hash":
            return pa.array([None if v is None else self.hash(v) for v in values], type=pa.string())
        if rule.action == "redact":
            return pa.array((redactor or self.redactor).redact_many(values), type=pa.string())
        return pa.array(values, type=pa.string())

    def column(self, spec: FieldSpec, values: list[Any], redactor: Redactor | None = None) -> pa.Array:
        """The stored Arrow column for ``values`` under ``spec``'s privacy rule."""
        rule = spec.privacy
        action = rule.action
        if action == "keep":
            return pa.array(values, type=spec.arrow_type)
        if action == "hash":
            digest = self.hash
            if spec.type in ("float32", "float64"):
                return pa.array([None if v is None else digest(float(v)) for v in values], type=pa.string())
            return pa.array([None if v is None else digest(v) for v in values], type=pa.string())
        if action == "redact":
            return pa.array((redactor or self.redactor).redact_many(values), type=pa.string())
        if action == "truncate":
            import pyarrow.compute as pc  # here, not at the top: 4 MB an agent pays from its first computed rule, not from start

            return pc.floor_temporal(pa.array(values, type=spec.arrow_type), unit=rule.unit)
        if action == "round":
            return _numeric(spec, values, lambda x: _round(x, rule.step))  # type: ignore[arg-type]
        if action == "noise":
            return _numeric(spec, values, lambda x: self._noise(x, rule.scale))  # type: ignore[arg-type]
        raise ValueError(f"field {spec.name!r}: rule {rule} builds no column")

    def _noise(self, values: pa.Array, scale: float) -> pa.Array:
        # Laplace(0, b) is the difference of two independent exponentials of mean b.
        draw = self._rng.expovariate
        rate = 1.0 / scale
        noisy = [None if v is None else v + draw(rate) - draw(rate) for v in values.to_pylist()]
        return pa.array(noisy, type=pa.float64())


@functools.lru_cache(maxsize=256)
def _rounding(step: float) -> tuple[bool, pa.Scalar]:
    """Whether round:<step> multiplies by an integer inverse, and its operand as an Arrow scalar.

    A Python number handed to a kernel is converted (with type inference) on every call:
    about 40 us, paid per field per slice, more than the rounding of the slice itself.
    """
    inverse = 1.0 / step
    if abs(inverse - round(inverse)) < 1e-9 * inverse:
        return True, pa.scalar(float(round(inverse)), type=pa.float64())
    return False, pa.scalar(float(step), type=pa.float64())


def _round(values: pa.Array, step: float) -> pa.Array:
    import pyarrow.compute as pc  # loaded on the first rounded column (see Privacy.column)

    by_inverse, operand = _rounding(step)
    if by_inverse:
        # round(x * 100) / 100 lands on the nearest double to k/100; multiplying by 0.01 does not.
        return pc.divide(pc.round(pc.multiply(values, operand)), operand)
    return pc.multiply(pc.round(pc.divide(values, operand)), operand)


def _numeric(spec: FieldSpec, values: list[Any], transform) -> pa.Array:
    """Apply a float64 transform to a numeric or vector column and cast back to its type."""
    if spec.type == "vector":
        array = pa.array(values, type=pa.list_(pa.float64(), spec.dim))
        flat = transform(array.values)
        result = pa.FixedSizeListArray.from_arrays(flat, spec.dim, mask=array.is_null())
        return _cast(result, spec.arrow_type)
    if spec.type in _INT_BOUNDS:
        array = pa.array(values, type=pa.int64()).cast(pa.float64(), safe=False)
    else:
        array = pa.array(values, type=pa.float64())
    result = transform(array)
    if spec.type in _INT_BOUNDS:
        low, high = _INT_SCALARS[spec.type]
        import pyarrow.compute as pc  # loaded on the first integer column with a numeric rule (see Privacy.column)

        result = pc.round(result)
        result = pc.min_element_wise(pc.max_element_wise(result, low, skip_nulls=False), high, skip_nulls=False)
    return _cast(result, spec.arrow_type)


def _cast(array: pa.Array, target: pa.DataType) -> pa.Array:
    return array if array.type == target else array.cast(target)


# int64's extremes are not exact doubles; clamping just inside keeps the cast safe.
_INT_SCALARS = {
    name: (pa.scalar(float(low), type=pa.float64()),
           pa.scalar(float(high) if high < 2**53 else 9.223372036854775e18, type=pa.float64()))
    for name, (low, high) in _INT_BOUNDS.items()
}
