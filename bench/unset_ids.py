"""Side by side, in one process: the nil/max record_id refusal as a pydantic validator (before) or a bytes check (now).

    python -m bench.unset_ids [--records 5000] [--rounds 21]

Before, ``record_id`` carried an ``AfterValidator`` (a Python call from pydantic-core per
record); now the pipeline checks the 16 id bytes it already builds its dedup key from.
"old" and "new" run alternately, several rounds, over the same NDJSON lines (records with
their own ids, as the SDK sends), first through the line validator alone, then through
``Pipeline.process_lines`` (the agent's whole path for a slice: validate, dedup and the new
check, sample, privacy, Arrow). The old pipeline also runs the new bytes check, so its saving is understated.
Time is this thread's CPU time (a shared machine's neighbours take the wall clock, not that);
the fastest round of each is compared and the median printed beside it. A first row times the
record_id check alone: a JSON array of ids through the old type, and through the new one plus
the bytes check.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import orjson
from pydantic import TypeAdapter

from bench.simulator import SimulatedModel
from edgeloop.collector.config import SamplingSettings
from edgeloop.collector.pipeline import Pipeline
from edgeloop.schemas import records as record_types
from edgeloop.schemas.records import UNSET_IDS, LineValidator
from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry

KEY = b"0123456789abcdef-bench-fleet-key"


def _old_line_validator(registry: SchemaRegistry) -> LineValidator:
    with mock.patch.object(record_types, "RecordId", record_types.Uuid):  # record_id as it was typed
        return LineValidator(registry)


def _per_record_ns(run, data, records: int) -> float:
    started = time.thread_time_ns()
    run(data)
    return (time.thread_time_ns() - started) / records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    lines = [orjson.dumps(record) for record in SimulatedModel("vibration", seed=5).predictions(args.records)]
    validators = {"old": _old_line_validator(registry), "new": LineValidator(registry)}
    pipelines = {}
    for name, validator in validators.items():
        pipelines[name] = Pipeline(registry, SamplingSettings(seed=1), KEY)
        pipelines[name]._lines = validator

    def validate(validator: LineValidator):
        return lambda texts: [validator.validate(text) for text in texts]

    def process(pipeline: Pipeline):
        # A fresh dedup window per run: the same ids again would be answered as resends.
        return lambda texts: pipeline.process_lines(texts, seen=set(), listed=frozenset({"invalid"}))

    old_ids = TypeAdapter(list[record_types.Uuid])
    new_ids = TypeAdapter(list[record_types.RecordId])
    id_array = orjson.dumps([orjson.loads(line)["record_id"] for line in lines])

    def check_new(array: bytes) -> list:
        ids = new_ids.validate_json(array)
        return [value for value in ids if value.bytes not in UNSET_IDS]

    for title, runs, data in (
        ("record_id alone", {"old": old_ids.validate_json, "new": check_new}, id_array),
        ("line validator", {name: validate(v) for name, v in validators.items()}, lines),
        ("Pipeline.process_lines", {name: process(p) for name, p in pipelines.items()}, lines),
    ):
        times: dict[str, list[float]] = {"old": [], "new": []}
        for name in ("old", "new"):  # warm-up
            runs[name](data)
        for _ in range(args.rounds):
            for name in ("old", "new"):
                times[name].append(_per_record_ns(runs[name], data, len(lines)))
        old, new = min(times["old"]), min(times["new"])
        print(f"{title:24} old {old:8.1f} ns/record   new {new:8.1f} ns/record   saved {old - new:6.1f} ns "
              f"({(old - new) / old:6.2%})   new/old {new / old:.3f}   medians {statistics.median(times['old']):.1f} / "
              f"{statistics.median(times['new']):.1f} ns   (fastest of {args.rounds} alternating rounds of {len(lines)} records)")


if __name__ == "__main__":
    main()
