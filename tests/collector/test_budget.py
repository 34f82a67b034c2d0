"""The agent's memory follows ``agent.memory_budget_mb``: bodies in flight, row groups at the seal, what the config admits."""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import threading
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.simulator import SimulatedModel
from edgeloop.collector.budget import BODY_COST, DEFAULT_SLICE_BYTES, SLICE_COST, MemoryBudget
from edgeloop.collector.client import REQUESTS_IN_FLIGHT, Client, _UnixConnection
from edgeloop.collector.config import CollectorConfig, SamplingSettings, SpoolSettings
from edgeloop.collector.intake import _ndjson_count, _ndjson_slices, process_body
from edgeloop.collector.journal import encode_frame
from edgeloop.collector.pipeline import Pipeline, RequestRecords
from edgeloop.collector.spool import Spool
from edgeloop.errors import ConfigError
from edgeloop.schemas.registry import EXAMPLES_DIR, SchemaRegistry
from tests.collector.conftest import FLEET_KEY

MiB = 2**20
IMAGE_BYTES = 200 * 1024


def _image_schemas(folder: Path) -> Path:
    """The example schemas, with thumbnails of up to 256 KiB: camera frames, not icons."""
    folder.mkdir()
    for path in EXAMPLES_DIR.glob("*.toml"):
        shutil.copy(path, folder / path.name)
    text = (folder / "image_classifier.toml").read_text()
    (folder / "image_classifier.toml").write_text(text.replace("max_bytes = 16384", "max_bytes = 262144"))
    return folder


def _image_records(n: int, seed: int) -> list[dict[str, Any]]:
    """Image-classifier predictions, each carrying a 200 KB incompressible image."""
    rng = __import__("random").Random(seed)
    records = list(SimulatedModel("image_classifier", seed=seed).records(n, feedback_ratio=0))
    for record in records:
        record["inputs"]["thumbnail"] = base64.b64encode(rng.randbytes(IMAGE_BYTES)).decode()
    return records


WIDE_SCHEMA = 'name = "wide"\nversion = 1\n[inputs.embedding]\ntype = "vector"\ndim = 512\n[outputs.score]\ntype = "float32"\n'


def _bodies(tmp_path: Path) -> dict[str, tuple[SchemaRegistry, bytes]]:
    """Request bodies of 2,000 records: the example models, and the densest JSON a schema admits (a wide vector of zeros)."""
    examples = SchemaRegistry.from_dir(EXAMPLES_DIR)
    (tmp_path / "wide").mkdir()
    (tmp_path / "wide" / "wide.toml").write_text(WIDE_SCHEMA)
    wide = [{"kind": "prediction", "model": "wide", "model_version": "1", "record_id": str(uuid.UUID(int=i + 1, version=4)),
             "inputs": {"embedding": [0] * 512}, "outputs": {"score": 1}} for i in range(300)]
    return {
        **{f"{model}-{seed}": (examples, orjson.dumps(list(SimulatedModel(model, seed=seed).records(2_000))))
           for model in ("vibration", "image_classifier") for seed in (1, 7)},
        "wide-zeros": (SchemaRegistry.from_dir(tmp_path / "wide"), orjson.dumps(wide)),
    }


@pytest.mark.parametrize("case", ["vibration-1", "vibration-7", "image_classifier-1", "image_classifier-7", "wide-zeros"])
def test_a_body_costs_at_most_body_cost_times_its_size(case, tmp_path):
    """Parsing, validating, anonymizing and framing a request body takes at most BODY_COST bytes per body byte."""
    registry, body = _bodies(tmp_path)[case]
    pipeline = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY)
    records = orjson.loads(body)
    process_body(pipeline, body, "application/json", max_records=len(records))  # first use: caches and compiled patterns are not per body
    tracemalloc.start()
    try:
        processed = process_body(pipeline, body, "application/json", max_records=len(records))
        batches = processed.batches()
        frames = [encode_frame(batch) for batch in batches.values()]
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    arrow = sum(batch.get_total_buffer_size() for batch in batches.values())
    arrow += sum(frame[1].size for frame in frames)  # the IPC copy written to the journal
    assert processed.accepted == len(records)
    assert python_peak + arrow <= BODY_COST * len(body), (python_peak + arrow) / len(body)


@pytest.mark.parametrize("case", ["vibration-1", "vibration-7", "image_classifier-1", "image_classifier-7", "wide-zeros"])
def test_an_ndjson_body_costs_at_most_its_charge(case, tmp_path):
    """Processing an NDJSON body a slice at a time, answering every record and framing it for the journal takes at most what the budget charges it beyond the body itself."""
    registry, array = _bodies(tmp_path)[case]
    records = orjson.loads(array)
    body = b"\n".join(orjson.dumps(record) for record in records)
    budget = MemoryBudget.from_mb(32)
    pipeline = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY)
    process_body(pipeline, body, "application/x-ndjson", max_records=len(records), slice_bytes=budget.slice_bytes)
    tracemalloc.start()
    try:
        processed = process_body(pipeline, body, "application/x-ndjson", max_records=len(records), slice_bytes=budget.slice_bytes)
        batches = processed.batches()
        frames = [encode_frame(batch) for batch in batches.values()]
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    arrow = sum(batch.get_total_buffer_size() for batch in batches.values()) + sum(frame[1].size for frame in frames)
    assert isinstance(processed, RequestRecords) and processed.accepted == len(records)
    charge = budget.charge(len(body), ndjson=True)
    assert len(body) + python_peak + arrow <= charge, (len(body) + python_peak + arrow) / charge


def test_the_sdks_requests_in_flight_are_admitted_together():
    """At the default budget the SDK's three NDJSON bodies of its default batch in flight are charged at once; the same records as one JSON array are charged its worst case."""
    budget = MemoryBudget.from_mb(CollectorConfig().agent.memory_budget_mb)
    records = SimulatedModel("vibration", seed=2).records(Client.__init__.__kwdefaults__["batch_size"], feedback_ratio=0)
    body = b"\n".join(orjson.dumps(record) for record in records)
    charges = [budget.try_reserve(len(body), ndjson=True) for _ in range(REQUESTS_IN_FLIGHT)]
    assert REQUESTS_IN_FLIGHT >= 2 and None not in charges, (len(body), budget.charge(len(body), ndjson=True), budget.intake_bytes)
    for charge in charges:
        budget.release(charge)
    assert budget.in_flight_bytes == 0
    assert budget.charge(len(body), ndjson=False) == BODY_COST * len(body)
    assert budget.charge(10, ndjson=True) <= BODY_COST * 10  # a tiny body is never charged more than parsing it whole


def test_a_body_the_budget_cannot_hold_is_a_config_error(tmp_path):
    """intake.max_body_bytes above what agent.memory_budget_mb admits fails at load, naming both settings."""
    path = tmp_path / "collector.toml"
    path.write_text("[agent]\nmemory_budget_mb = 16\n[intake]\nmax_body_bytes = 1048576\n")
    with pytest.raises(ConfigError, match=r"intake.max_body_bytes.*agent.memory_budget_mb = 16"):
        CollectorConfig.load(path)
    path.write_text("[agent]\nmemory_budget_mb = 64\n[intake]\nmax_body_bytes = 1048576\n")
    assert CollectorConfig.load(path).intake.max_body_bytes == 1048576
    assert CollectorConfig().intake.max_body_bytes <= MemoryBudget.from_mb(CollectorConfig().agent.memory_budget_mb).max_body_bytes


def test_sealed_row_groups_hold_at_most_the_budgets_share(tmp_path):
    """Sealing large records writes row groups of at most row_group_bytes of Arrow data (one record over at most)."""
    registry = SchemaRegistry.from_dir(_image_schemas(tmp_path / "schemas"))
    schema = registry["image_classifier"]
    pipeline = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY)
    frames = [pipeline.process(_image_records(7, seed)).batches["image_classifier"] for seed in range(6)]
    row_group_bytes = MiB
    spool = Spool(tmp_path / "state", SpoolSettings(reserve_free_bytes=0, seal_reserve_bytes=0), agent_version="t",
                  row_group_bytes=row_group_bytes)
    sealed = spool.write_batch(iter(frames), schema=schema)
    metadata = pq.ParquetFile(sealed.path).metadata
    assert sealed.rows == 42 and metadata.num_row_groups >= 42 * IMAGE_BYTES // row_group_bytes
    row_bytes = max(frame.nbytes / frame.num_rows for frame in frames)
    for index in range(metadata.num_row_groups):
        group = pq.ParquetFile(sealed.path).read_row_group(index)
        assert group.nbytes <= row_group_bytes + row_bytes
    table = pq.read_table(sealed.path)
    assert table.column("record_id").to_pylist() == pa.concat_tables(
        [pa.Table.from_batches([frame]) for frame in frames]).column("record_id").to_pylist()


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


class _RssWatch:
    """Samples a process's RSS from a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak = pid, _rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _send_until_accepted(socket_path: Path, records: list[dict[str, Any]], busy: list[int], content_type: str = "application/json") -> None:
    """POST the records, retrying a 503 (the budget is in use) after its Retry-After, as the SDK does."""
    ndjson = content_type == "application/x-ndjson"
    body = b"\n".join(orjson.dumps(record) for record in records) if ndjson else orjson.dumps(records)
    conn = _UnixConnection(str(socket_path), 60.0)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                conn.request("POST", "/v1/records?results=none", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                status, raw = response.status, response.read()
            except (OSError, http.client.HTTPException):
                conn.close()  # refused before its body was read: the agent may close the connection
                status, raw = 0, b""
            if status == 200:
                assert orjson.loads(raw)["accepted"] == len(records)
                return
            assert status in (0, 503), (status, raw)
            assert time.monotonic() < deadline, "never admitted"
            busy.append(status)
            time.sleep(0.05)
    finally:
        conn.close()


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_large_records_keep_the_agent_within_its_budget(agent_factory, tmp_path, content_type):
    """Senders posting 200 KB images at once, as JSON arrays or NDJSON (several bodies admitted together), keep the agent's RSS under its floor (idle, code paths run once) plus memory_budget_mb; every record is sealed."""
    budget_mb = 24
    budget = MemoryBudget.from_mb(budget_mb)
    agent = agent_factory(
        agent={"memory_budget_mb": budget_mb, "schemas_dir": str(_image_schemas(tmp_path / "schemas"))},
        intake={"max_body_bytes": budget.max_body_bytes},
        spool={"seal_max_bytes": 16 * MiB},
    ).start()
    per_request = max(1, budget.max_body_bytes // (IMAGE_BYTES * 4 // 3 + 1024))  # bodies as large as admitted
    senders, rounds = 8, 5
    payloads = [[_image_records(per_request, 100 * sender + turn) for turn in range(rounds)] for sender in range(senders)]
    _send_until_accepted(agent.socket, _image_records(1, seed=99_999), [], content_type)
    agent.flush()  # the floor: started, and each code path (intake, journal, seal) run once, so its code is mapped
    time.sleep(0.5)
    idle = _rss(agent.proc.pid)
    watch = _RssWatch(agent.proc.pid)
    busy: list[int] = []
    errors: list[BaseException] = []

    def send(batches: list[list[dict[str, Any]]]) -> None:
        try:
            for records in batches:
                _send_until_accepted(agent.socket, records, busy, content_type)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(payloads[sender],)) for sender in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    sealed = agent.flush()
    peak = watch.stop()
    assert not errors, errors[0]
    total = senders * rounds * per_request + 1
    assert sealed["sealed"] >= 1
    assert sum(pq.read_metadata(path).num_rows for path in agent.batch_files()) == total
    assert peak <= idle + budget.total_bytes, f"peak {peak / MiB:.0f} MB, idle {idle / MiB:.0f} MB + budget {budget_mb} MB"


def test_a_body_that_does_not_fit_next_to_those_in_flight_gets_503_and_retry_after(agent_factory):
    """While a body holding the whole intake share is being received, another request is answered 503 busy, and /metrics shows the charge."""
    budget = MemoryBudget.from_mb(16)
    agent = agent_factory(agent={"memory_budget_mb": 16}, intake={"max_body_bytes": budget.max_body_bytes}).start()
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.settimeout(30)
    slow.connect(str(agent.socket))
    try:
        head = (f"POST /v1/records HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                f"Content-Length: {budget.max_body_bytes}\r\n\r\n[")
        slow.sendall(head.encode())
        deadline = time.monotonic() + 30
        while True:  # the slow request's charge is held once its handler runs
            probe = _UnixConnection(str(agent.socket), 30.0)
            try:
                probe.request("POST", "/v1/records", body=b'[{"model": "vibration"}]', headers={"Content-Type": "application/json"})
                response = probe.getresponse()
                status, retry_after, body = response.status, response.getheader("Retry-After"), orjson.loads(response.read())
            finally:
                probe.close()
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert status == 503 and retry_after == "1", body
        assert body["error"]["code"] == "busy"
        assert body["error"]["details"]["budget_bytes"] == budget.intake_bytes
        gauges = {line.split()[0]: float(line.split()[1]) for line in agent.metrics().splitlines()
                  if line.startswith("edgeloop_intake_")}
        assert gauges["edgeloop_intake_budget_bytes"] == budget.intake_bytes
        assert gauges["edgeloop_intake_in_flight_bytes"] == budget.max_body_bytes * BODY_COST
    finally:
        slow.close()
    deadline = time.monotonic() + 30
    while True:  # the slow request is gone: its charge is released
        status, body = agent.post_raw(orjson.dumps(list(SimulatedModel("vibration", seed=2).records(5))))
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert status == 200, body


def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(agent_factory):
    """A Content-Length over intake.max_body_bytes is answered 413 too_large without reading the body."""
    agent = agent_factory().start()
    limit = CollectorConfig().intake.max_body_bytes
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(30)
    conn.connect(str(agent.socket))
    try:
        conn.sendall((f"POST /v1/records HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {limit * 4}\r\n\r\n[").encode())
        response = http.client.HTTPResponse(conn)
        response.begin()
        assert response.status == 413
        error = orjson.loads(response.read())["error"]
        assert error["code"] == "too_large" and error["details"] == {"limit": limit}
    finally:
        conn.close()


def test_a_request_waits_for_room_then_is_admitted_or_refused():
    """reserve() waits for a release and is admitted; with nothing released in its wait it is refused and counted."""
    import asyncio

    async def scenario() -> tuple[int | None, int | None, int]:
        budget = MemoryBudget.from_mb(8)
        held = budget.try_reserve(budget.max_body_bytes)
        assert held is not None and budget.try_reserve(1) is None
        waiting = asyncio.ensure_future(budget.reserve(budget.max_body_bytes, wait_s=30))
        await asyncio.sleep(0)
        budget.release(held)
        admitted = await waiting
        refused = await budget.reserve(budget.max_body_bytes, wait_s=0.05)
        return admitted, refused, budget.refused

    admitted, refused, count = asyncio.run(scenario())
    assert admitted == MemoryBudget.from_mb(8).max_body_bytes * BODY_COST
    assert refused is None and count == 1


@pytest.mark.parametrize("records", [1_000, 4_000])
def test_an_ndjson_body_is_python_objects_one_slice_at_a_time(records):
    """Processing an NDJSON body holds at most SLICE_COST x slice_bytes as Python objects plus its record ids (for duplicates across slices), however large the body: its lines are copied and parsed a slice at a time."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    pipeline = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY)
    body = b"\n".join(orjson.dumps(record) for record in SimulatedModel("vibration", seed=3).records(records))
    process_body(pipeline, body, "application/x-ndjson", max_records=records)  # first use: caches are not per body
    tracemalloc.start()
    try:
        processed = process_body(pipeline, body, "application/x-ndjson", max_records=records, listed=frozenset({"invalid"}))
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert processed.accepted == records and not processed.results
    assert len(body) > 3 * DEFAULT_SLICE_BYTES
    ids = 128 * records  # a 16-byte id + tag as bytes, in the request's seen set and its kept keys
    assert python_peak <= SLICE_COST * DEFAULT_SLICE_BYTES + ids, (python_peak - ids) / DEFAULT_SLICE_BYTES


def test_slices_follow_the_memory_budget():
    """A larger agent.memory_budget_mb processes NDJSON in larger slices (fewer fixed costs per record); the largest admitted body is a few slices."""
    sizes = [MemoryBudget.from_mb(mb).slice_bytes for mb in (8, 32, 128)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert DEFAULT_SLICE_BYTES == MemoryBudget.from_mb(32).slice_bytes
    for mb in (8, 32, 128):
        budget = MemoryBudget.from_mb(mb)
        assert 2 * budget.slice_bytes <= budget.max_body_bytes <= 8 * budget.slice_bytes


@given(
    lines=st.lists(st.sampled_from([b'{"a": 1}', b"", b"  ", b"\t", b"{not json", b'{"b": "' + b"x" * 300 + b'"}', b"[1]"]), max_size=60),
    separators=st.lists(st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n"]), min_size=1, max_size=60),
    slice_bytes=st.integers(min_value=1, max_value=400),
    trailing=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_ndjson_slices_index_lines_as_splitlines_does(lines, separators, slice_bytes, trailing):
    """However the body is cut into slices, records, broken lines and their indices are those of its non-blank lines in order."""
    body = b"".join(line + separators[i % len(separators)] for i, line in enumerate(lines))
    if not trailing and body:
        body = body.rstrip(b"\r\n")
    expected = [line for line in body.splitlines() if line.strip()]
    got: dict[int, Any] = {}
    for records, positions, broken in _ndjson_slices(body, slice_bytes):
        assert len(records) == len(positions)
        got.update(zip(positions, records, strict=True))
        got.update({index: "broken" for index in broken})
    assert _ndjson_count(body, slice_bytes) == len(expected)
    assert sorted(got) == list(range(len(expected)))
    for index, line in enumerate(expected):
        try:
            assert got[index] == orjson.loads(line)
        except orjson.JSONDecodeError:
            assert got[index] == "broken"


def test_a_body_in_many_slices_is_answered_as_one(agent):
    """Across slices a repeated id is stored once, bad records and broken lines are reported at their own index, and the rest is kept."""
    records = list(SimulatedModel("vibration", seed=8).records(1_100, feedback_ratio=0))
    records[1_050] = {**records[1_050], "record_id": records[3]["record_id"]}
    records[600] = {**records[600], "model_version": ""}
    lines = [orjson.dumps(record) for record in records]
    lines[800] = b'{"kind": "prediction", "model": '
    body = b"\n".join(lines)
    assert len(body) > 3 * DEFAULT_SLICE_BYTES  # the body really is cut into slices
    status, answer = agent.post_raw(body, "application/x-ndjson")
    assert status == 200, answer
    assert (answer["accepted"], answer["duplicates"], answer["invalid"], answer["sampled_out"]) == (1_098, 1, 2, 0)
    invalid = [result for result in answer["results"] if result["status"] == "invalid"]
    assert [result["index"] for result in invalid] == [600, 800]
    assert invalid[0]["error"]["field"] == "model_version"
    duplicate = answer["results"][1_050]
    assert duplicate["index"] == 1_050 and duplicate["duplicate"] is True
    assert duplicate["record_id"] == records[3]["record_id"]
    assert [result["index"] for result in answer["results"]] == list(range(1_100))
    agent.flush()
    table = agent.read_batches()["vibration"]
    assert table.num_rows == 1_097
    assert len(set(table.column("record_id").to_pylist())) == 1_097


def test_an_app_logging_at_full_speed_keeps_the_agent_within_its_budget(agent_factory):
    """The SDK logging 20,000 records as fast as it can keeps the agent's RSS under its floor (code paths run once) plus memory_budget_mb."""
    from edgeloop.collector import Client

    budget_mb = 8
    agent = agent_factory(
        agent={"memory_budget_mb": budget_mb},
        intake={"max_body_bytes": MemoryBudget.from_mb(budget_mb).max_body_bytes, "recent_ids": 1_000},
    ).start()
    records = list(SimulatedModel("vibration", seed=13).records(20_000, feedback_ratio=0))
    client = Client(agent.socket)

    def log(batch: list[dict[str, Any]]) -> None:
        for r in batch:
            client.log_prediction(r["model"], r["model_version"], r["inputs"], r["outputs"], record_id=r["record_id"])
        assert client.flush(timeout_s=60)

    try:
        log(records[:2_000])
        agent.flush()  # the floor: each code path (intake, journal, seal) run once
        time.sleep(0.5)
        floor = _rss(agent.proc.pid)
        watch = _RssWatch(agent.proc.pid)
        log(records[2_000:])
        agent.flush()
        peak = watch.stop()
        assert client.stats()["sent"] == 20_000, client.stats()
    finally:
        client.close()
    print(f"floor {floor / MiB:.1f} MB, peak {peak / MiB:.1f} MB")
    assert peak <= floor + budget_mb * MiB, f"peak {peak / MiB:.0f} MB, floor {floor / MiB:.0f} MB + budget {budget_mb} MB"


def _odd_lines(base: dict[str, Any], image: dict[str, Any]) -> list[bytes]:
    """Lines the one-pass parser and orjson + pydantic might read differently: each must get today's answer."""
    vibration = orjson.dumps(base)
    spectrum = orjson.dumps(base["inputs"]["spectrum"])

    def fresh(old: bytes = b"", new: bytes = b"", **fields: Any) -> bytes:
        text = orjson.dumps({**base, "record_id": str(uuid.uuid4()), **fields})
        assert old in text
        return text.replace(old, new, 1)

    return [
        fresh(),
        orjson.dumps({**image, "record_id": str(uuid.uuid4())}),
        vibration,  # the same id again: a duplicate
        fresh(b'"rpm":', b'"rpm":"fast","x":'),
        fresh(b'"confidence":', b'"confidence":NaN,"c":'),
        fresh(b'"confidence":', b'"confidence":Infinity,"c":'),
        fresh(b'"confidence":', b'"confidence":1e400,"c":'),
        fresh(b'"lat":', b'"lat":-1e400,"l":'),
        fresh(spectrum, b"[NaN" + spectrum[spectrum.index(b","):]),
        fresh(b'"rpm":', b'"rpm":2147483648,"r":'),
        fresh(b'"lat":', b'"lat":18446744073709551616,"l":'),
        fresh(b'"vibration"', b'"turbine"'),
        fresh(b'"model":"vibration",', b""),
        fresh(b'"kind":"prediction"', b'"kind":"guess"'),
        fresh(extra=1),
        fresh()[:-9],
        fresh() + b" x",
        b"\xef\xbb\xbf" + fresh(),
        fresh(b"SURROGATE", b"\\ud800x", inputs={**base["inputs"], "note": "SURROGATE"}),
        orjson.dumps({**base, "record_id": str(uuid.uuid4()).upper(), "created_at": "2026-11-26T06:30:15"}),
        orjson.dumps({**base, "record_id": str(uuid.uuid4()), "created_at": 1795000000.25}),
        b"[1]",
        b'"text"',
        b"{}",
    ]


@given(
    picks=st.lists(st.integers(min_value=0, max_value=23), min_size=1, max_size=40),
    slice_bytes=st.sampled_from([600, 1500, 6000, DEFAULT_SLICE_BYTES]),
    listed=st.sampled_from([frozenset({"invalid"}), frozenset({"accepted", "sampled_out", "invalid"})]),
)
@settings(max_examples=25, deadline=None)
def test_ndjson_parsed_and_validated_in_one_pass_answers_as_orjson_and_pydantic_did(picks, slice_bytes, listed):
    """Each NDJSON line gets the answer, row and sampling decision that decoding it with orjson and validating it with pydantic gave, odd lines (NaN, 1e400, a BOM, a lone surrogate) included."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    sampling = SamplingSettings.model_validate({"seed": 5, "default": {"keep_rate": 0.5}})
    base = {**next(SimulatedModel("vibration", seed=2).records(1)), "created_at": "2026-11-26T06:30:15Z"}
    image = {**next(SimulatedModel("image_classifier", seed=2).records(1)), "created_at": 1795000000.5}
    pool = _odd_lines(base, image)
    body = b"\n".join(pool[pick] for pick in picks)
    one_pass = process_body(Pipeline(registry, sampling, FLEET_KEY), body, "application/x-ndjson", max_records=100,
                            listed=listed, slice_bytes=slice_bytes)
    decoded, pipeline = RequestRecords(count=_ndjson_count(body, slice_bytes), listed=listed), Pipeline(registry, sampling, FLEET_KEY)
    for records, positions, broken in _ndjson_slices(body, slice_bytes):  # the path every line took before
        for index, message in broken.items():
            decoded.refuse(index, "record", message)
        if records:
            decoded.absorb(pipeline.process(records, seen=decoded.seen, listed=listed), positions)
    assert isinstance(one_pass, RequestRecords)
    by_index = lambda results: sorted(results, key=lambda result: result["index"])  # noqa: E731
    assert by_index(one_pass.results) == by_index(decoded.results)
    assert (one_pass.count, one_pass.drops, one_pass.duplicates, one_pass.invalid, one_pass.keys) == (
        decoded.count, decoded.drops, decoded.duplicates, decoded.invalid, decoded.keys)
    got, want = one_pass.batches(), decoded.batches()
    assert sorted(got) == sorted(want)
    for model in want:
        assert got[model].drop_columns(["repair_cost_eur"]).equals(want[model].drop_columns(["repair_cost_eur"]))


@pytest.mark.parametrize("separator", [b"\n", b"\r\n", b"\r", b"\n\n \n"])
def test_an_ndjson_body_over_the_record_limit_is_refused_before_any_record_is_processed(separator):
    """More non-blank lines than ``max_records`` is 413 ``too_many_records`` before any work; blank lines do not count toward it."""
    registry = SchemaRegistry.from_dir(EXAMPLES_DIR)
    pipeline = Pipeline(registry, SamplingSettings(seed=1), FLEET_KEY)
    lines = [orjson.dumps(record) for record in SimulatedModel("vibration", seed=4).records(4, feedback_ratio=0)]
    body = separator.join(lines) + separator
    refused = process_body(pipeline, body, "application/x-ndjson", max_records=3)
    assert isinstance(refused, web.Response) and refused.status == 413
    assert orjson.loads(refused.body)["error"]["code"] == "too_many_records"
    taken = process_body(pipeline, body, "application/x-ndjson", max_records=4)
    assert isinstance(taken, RequestRecords) and taken.count == 4 and taken.accepted == 4
