"""A sampling policy: which predictions of one model a device keeps, as named strategies with quotas.

A policy file is TOML, the same on a device (``[policy] files``) and on the server
(``edgeloop-ingest policy set --model M FILE``)::

    description = "boundary cases, rare classes, 1% baseline"
    per_hour = 100000                 # optional quota over every kept prediction of the model

    [strategies.baseline]
    type = "random"
    rate = 0.01

    [strategies.boundary]
    type = "confidence_band"          # |confidence - threshold| <= epsilon
    threshold = 0.5
    epsilon = 0.1
    per_minute = 100                  # quotas per strategy: per_minute, per_hour, per_day

    [strategies.rare]
    type = "by_class"
    field = "predicted_class"         # default: the schema's prediction_field
    rates = { bearing_wear = 1.0, imbalance = 0.5 }
    others = 0.0                      # the rate of every class not in `rates`

Strategy types: ``random`` (``rate``), ``confidence_below`` (``below``), ``confidence_band``
(``threshold``, ``epsilon``), ``by_class`` (``rates``, ``others``), ``count`` (a numeric
output such as the number of detections: ``above`` and/or ``below``) and ``drift`` (a
numeric input outside [``min``, ``max``]). Every type but ``random`` and ``by_class`` keeps a
match with probability ``rate`` (default 1).

Each strategy i gives a record a probability p_i of selecting it (0 when it does not
match), drawn independently; the record is kept when any strategy selects it, so the
policy keeps it with P = 1 − Π(1 − p_i) and it carries ``sample_weight = 1/P``. Quotas are
not in P: a quota that binds drops records the weights count (reported as ``rate_capped``).
Everything here is bounded, since a policy arrives from the server: the device checks it
with the same rules (``Policy.check``) before it applies it.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeloop.errors import PolicyError
from edgeloop.schemas.model_schema import NUMERIC_TYPES, ModelSchema

__all__ = ["MAX_POLICY_BYTES", "MAX_STRATEGIES", "Policy", "PolicyRules", "Strategy", "load_policy_text"]

MAX_STRATEGIES = 16
MAX_CLASSES = 1024
MAX_POLICY_BYTES = 256 * 1024  # as canonical JSON: what a device fetches per model
# Names join with "," in the sampled_by column, which the server caps at 512 bytes.
STRATEGY_NAME = r"^[a-z][a-z0-9_]{0,23}$"
Rate = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Quota = Annotated[int, Field(ge=0, le=10**9)] | None
Bound = Annotated[float, Field(allow_inf_nan=False)] | None
FieldName = Annotated[str, Field(min_length=1, max_length=63)]
UNIT_S = {"per_minute": 60, "per_hour": 3600, "per_day": 86400}


class _Quotas(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    per_minute: Quota = None
    per_hour: Quota = None
    per_day: Quota = None

    def quotas(self) -> tuple[tuple[int, int], ...]:
        """(window length in seconds, most kept in one window) for each quota set."""
        return tuple((UNIT_S[unit], getattr(self, unit)) for unit in UNIT_S if getattr(self, unit) is not None)


class RandomStrategy(_Quotas):
    type: Literal["random"]
    rate: Rate


class ConfidenceBelow(_Quotas):
    type: Literal["confidence_below"]
    below: Rate
    rate: Rate = 1.0


class ConfidenceBand(_Quotas):
    type: Literal["confidence_band"]
    threshold: Rate
    epsilon: Rate
    rate: Rate = 1.0


class ByClass(_Quotas):
    type: Literal["by_class"]
    field: FieldName | None = None  # default: the schema's prediction_field
    rates: dict[Annotated[str, Field(max_length=128)], Rate] = Field(default_factory=dict, max_length=MAX_CLASSES)
    others: Rate = 0.0


class ByCount(_Quotas):
    type: Literal["count"]
    field: FieldName
    above: Bound = None
    below: Bound = None
    rate: Rate = 1.0

    @model_validator(mode="after")
    def _one_bound(self) -> ByCount:
        if self.above is None and self.below is None:
            raise ValueError("a count strategy needs above or below")
        return self


class Drift(_Quotas):
    type: Literal["drift"]
    field: FieldName
    min: Bound = None
    max: Bound = None
    rate: Rate = 1.0

    @model_validator(mode="after")
    def _range(self) -> Drift:
        if self.min is None and self.max is None:
            raise ValueError("a drift strategy needs min or max (the declared range)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is above max")
        return self


Strategy = Annotated[
    Union[RandomStrategy, ConfidenceBelow, ConfidenceBand, ByClass, ByCount, Drift], Field(discriminator="type")
]


class Policy(_Quotas):
    """One model's sampling policy: named strategies plus optional quotas over all it keeps."""

    description: Annotated[str, Field(max_length=1000)] = ""
    strategies: dict[Annotated[str, Field(pattern=STRATEGY_NAME)], Strategy] = Field(max_length=MAX_STRATEGIES)

    @model_validator(mode="after")
    def _size(self) -> Policy:
        size = len(self.canonical_json())
        if size > MAX_POLICY_BYTES:
            raise ValueError(f"the policy is {size} bytes as JSON, over {MAX_POLICY_BYTES} (fewer classes?)")
        return self

    @classmethod
    def from_toml(cls, text: str, *, source: str = "<string>") -> Policy:
        """Parse a policy file; any problem is a one-line PolicyError naming the file and the setting."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML: {exc}") from exc
        return cls.from_mapping(raw, source=source)

    @classmethod
    def from_mapping(cls, raw: Any, *, source: str = "<mapping>") -> Policy:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"] if part not in _TAGS) or "policy"
            raise PolicyError(f"{source}: {where}: {error['msg'].removeprefix('Value error, ')}") from exc

    def canonical_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """The first 12 hex digits of the canonical form's sha256: names a local policy."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:12]

    def check(self, schema: ModelSchema) -> PolicyRules:
        """The policy made executable for ``schema``; a field it names must exist with a usable type."""
        return PolicyRules(self, schema)


_TAGS = {"random", "confidence_below", "confidence_band", "by_class", "count", "drift"}
Probability = Callable[[dict[str, Any]], float]


class PolicyRules:
    """A policy checked against its model's schema: per strategy, p(record) (or a constant p) and its quotas."""

    def __init__(self, policy: Policy, schema: ModelSchema) -> None:
        self.policy = policy
        self.strategies: tuple[tuple[str, Probability, tuple[tuple[int, int], ...], float | None], ...] = tuple(
            (
                name,
                _probability(name, strategy, schema),
                strategy.quotas(),
                strategy.rate if isinstance(strategy, RandomStrategy) else None,
            )
            for name, strategy in policy.strategies.items()
        )
        self.quotas = policy.quotas()
        # When every strategy is random at rate 1 and nothing has a quota, every record is kept by all: their names.
        always = all(quotas == () and rate == 1.0 for _, _, quotas, rate in self.strategies)
        self.keeps_all: str | None = ",".join(policy.strategies) if always and self.strategies and not self.quotas else None


def _probability(name: str, strategy: Any, schema: ModelSchema) -> Probability:
    where = f"strategies.{name}"
    if isinstance(strategy, RandomStrategy):
        rate = strategy.rate
        return lambda record: rate
    if isinstance(strategy, (ConfidenceBelow, ConfidenceBand)):
        field = schema.confidence_field
        if field is None:
            raise PolicyError(f"{where}: model {schema.name!r} has no confidence_field in its schema")
        rate = strategy.rate
        if isinstance(strategy, ConfidenceBelow):
            below = strategy.below
            return lambda record: rate if _get(record, "outputs", field) is not None and record["outputs"][field] < below else 0.0
        low, high = strategy.threshold - strategy.epsilon, strategy.threshold + strategy.epsilon

        def band(record: dict[str, Any]) -> float:
            value = _get(record, "outputs", field)
            return rate if value is not None and low <= value <= high else 0.0

        return band
    if isinstance(strategy, ByClass):
        field = strategy.field or schema.prediction_field
        if field is None:
            raise PolicyError(f"{where}: name the class field (the schema declares no prediction_field)")
        spec = schema.field(field)
        if spec is None or spec.section != "outputs" or spec.type not in ("string", "int32", "int64", "bool"):
            raise PolicyError(f"{where}.field: {field!r} is not a string, integer or bool output of {schema.name!r}")
        rates, others = dict(strategy.rates), strategy.others

        def by_class(record: dict[str, Any]) -> float:
            value = _get(record, "outputs", field)
            if value is None:
                return 0.0
            key = ("true" if value else "false") if value.__class__ is bool else str(value)
            return rates.get(key, others)

        return by_class
    section = "outputs" if isinstance(strategy, ByCount) else "inputs"
    spec = schema.field(strategy.field)
    if spec is None or spec.section != section or spec.type not in NUMERIC_TYPES:
        raise PolicyError(f"{where}.field: {strategy.field!r} is not a numeric {section[:-1]} field of {schema.name!r}")
    field, rate = strategy.field, strategy.rate
    if isinstance(strategy, ByCount):
        above = math.inf if strategy.above is None else strategy.above
        below = -math.inf if strategy.below is None else strategy.below

        def count(record: dict[str, Any]) -> float:
            value = _get(record, "outputs", field)
            return rate if value is not None and (value > above or value < below) else 0.0

        return count
    low = -math.inf if strategy.min is None else strategy.min
    high = math.inf if strategy.max is None else strategy.max

    def drift(record: dict[str, Any]) -> float:
        value = _get(record, "inputs", field)
        return rate if value is not None and not low <= value <= high else 0.0

    return drift


def _get(record: Mapping[str, Any], section: str, field: str) -> Any:
    return record.get(section, _EMPTY).get(field)


_EMPTY: dict[str, Any] = {}


def load_policy_text(text: str, schema: ModelSchema, *, source: str) -> Policy:
    """A policy file read and checked against the model it is for, as the server and the device both do."""
    policy = Policy.from_toml(text, source=source)
    try:
        policy.check(schema)
    except PolicyError as exc:
        raise PolicyError(f"{source}: {exc}") from exc
    return policy
