"""Several `edgeloop-ingest serve` processes on one lake: everything true of one server stays true."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from edgeloop.collector.privacy import Privacy
from edgeloop.ingest.config import StoreSettings
from edgeloop.ingest.lake import connect_lake
from edgeloop.schemas import EXAMPLES_DIR, ModelSchema
from tests.ingest.conftest import CLI, free_port, make_table, seal
from tests.ingest.lake.conftest import lake_section

pytestmark = pytest.mark.timeout(300)


class Replica:
    """One `edgeloop-ingest serve` subprocess of the lake."""

    def __init__(self, folder: Path, store: dict[str, Any], admin_token_file: Path, index: int) -> None:
        self.folder = folder / f"replica{index}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        store_lines = "\n".join(f"{key} = {json.dumps(value)}" for key, value in store.items())
        self.config = self.folder / "ingest.toml"
        self.config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {self.port}\nadmin_token_file = "{admin_token_file}"\n'
            f'schemas_dir = "{EXAMPLES_DIR}"\nshutdown_timeout_s = 10\n'
            f'[store]\ndb_path = "{self.folder / "unused.duckdb"}"\nthreads = 1\n{store_lines}\n'
        )
        self.log = self.folder / "server.log"
        self.process: subprocess.Popen | None = None
        self.admin_token_file = admin_token_file

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([*CLI, "serve", "--config", str(self.config)], stdout=log, stderr=log)

    def wait_ready(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"replica exited: {self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"replica did not start: {self.log.read_text()}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            if self.process is not None:
                self.process.wait()
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.kill()

    def request(self, method: str, path: str, body: bytes | None = None, token: str | None = None,
                content_type: str = "application/json") -> tuple[int | None, Any]:
        """The status and decoded JSON answer; None when the connection died."""
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if token is None:
            token = self.admin_token_file.read_text().strip()
        headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, json.loads(exc.read() or b"null")
        except OSError:
            return None, None

    def put(self, batch_id: str, body: bytes, token: str) -> tuple[int | None, Any]:
        return self.request("PUT", f"/v1/batches/{batch_id}", body, token, "application/vnd.apache.parquet")

    def add_device(self, name: str) -> str:
        status, answer = self.request("POST", "/v1/devices", json.dumps({"name": name}).encode())
        assert status == 201, answer
        return answer["token"]

    def knows(self, token: str) -> bool:
        """Whether this replica takes ``token`` (a body it will refuse with 415 if the token is good, 401 if not)."""
        status, _ = self.request("PUT", "/v1/batches/00000000-0000-7000-8000-000000000000", b"x", token, "text/plain")
        return status == 415


@pytest.fixture
def replicas(postgres, tmp_path):
    """Start ``count`` replicas on one fresh lake at once; all are stopped at teardown."""
    started: list[Replica] = []
    admin_token_file = tmp_path / "admin.token"

    def start(count: int, **store: Any) -> list[Replica]:
        section = lake_section(postgres, tmp_path, **store)
        group = [Replica(tmp_path, section, admin_token_file, index) for index in range(count)]
        group[0].start()
        group[0].wait_ready()  # it writes the admin token file the others read
        for replica in group[1:]:
            replica.start()
        for replica in group[1:]:
            replica.wait_ready()
        started.extend(group)
        return group

    yield start
    try:
        for replica in started:
            replica.stop()
    finally:  # a stop cut short (the test's timeout) must not leave the other replicas running into the next test
        for replica in started:
            replica.kill()


def wait_for(condition, timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def lake_reader(replica: Replica) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the replica's lake, as a data scientist would attach it."""
    from edgeloop.ingest.config import IngestConfig

    settings: StoreSettings = IngestConfig.load(replica.config).store
    return connect_lake(settings, read_only=True)


def counts(con: duckdb.DuckDBPyConnection, model: str = "vibration") -> tuple[int, int, int]:
    """(ledger rows, distinct batch ids in the ledger, distinct record ids == rows) of the model's table."""
    ledger, batch_ids = con.execute("SELECT count(*), count(DISTINCT batch_id) FROM batches").fetchone()
    rows, distinct = con.execute(f"SELECT count(*), count(DISTINCT record_id) FROM {model}").fetchone()
    assert rows == distinct, f"{rows - distinct} record ids landed twice"
    return ledger, batch_ids, rows


def test_one_batch_sent_to_two_replicas_at_once_lands_once_with_one_receipt(replicas, tmp_path, vibration):
    """The same batch id PUT to two replicas at the same moment answers 201 once and 200 once, with one receipt, and lands once."""
    a, b = replicas(2)
    token = a.add_device("pump-1")
    wait_for(lambda: b.knows(token), what="the token to reach the other replica")
    for round_ in range(5):
        batch_id, body = seal(tmp_path / f"r{round_}", vibration, make_table(vibration, predictions=50)[0])
        answers: dict[str, tuple[int | None, Any]] = {}
        barrier = threading.Barrier(2)

        def send(replica: Replica, name: str) -> None:
            barrier.wait()
            answers[name] = replica.put(batch_id, body, token)

        threads = [threading.Thread(target=send, args=(replica, name)) for replica, name in ((a, "a"), (b, "b"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(status for status, _ in answers.values()) == [200, 201], answers
        receipts = [{key: value for key, value in answer.items() if key != "status"} for _, answer in answers.values()]
        assert receipts[0] == receipts[1]  # the same receipt; only "landed" / "already_landed" differ
    with lake_reader(a) as con:
        assert counts(con) == (5, 5, 250)


def test_a_replica_killed_mid_commit_and_a_retry_elsewhere_land_each_batch_once(replicas, tmp_path, vibration):
    """SIGKILL a replica while it lands batches; the same batches retried on another replica land exactly once."""
    a, b = replicas(2, lake_group_commit_delay_s=0.2)
    token = a.add_device("pump-1")
    wait_for(lambda: b.knows(token), what="the token to reach the other replica")
    batches = [seal(tmp_path / f"b{index}", vibration, make_table(vibration, predictions=2000)[0]) for index in range(8)]
    first: dict[str, int | None] = {}

    def send(batch_id: str, body: bytes) -> None:
        first[batch_id] = a.put(batch_id, body, token)[0]

    threads = [threading.Thread(target=send, args=batch) for batch in batches]
    for thread in threads:
        thread.start()
    # Kill it once the first of them has landed: the rest are being read, queued or committed.
    wait_for(lambda: any(status == 201 for status in first.values()), timeout_s=60, what="a first landing")
    a.kill()
    for thread in threads:
        thread.join()
    retried = {batch_id: b.put(batch_id, body, token) for batch_id, body in batches}
    for batch_id, (status, _) in retried.items():
        assert status in (200, 201), (batch_id, status)
        if first[batch_id] == 201:
            assert status == 200  # what the dead replica acknowledged stays acknowledged
    with lake_reader(b) as con:
        assert counts(con) == (8, 8, 16_000)


def test_a_token_added_on_one_replica_works_on_another_and_a_revoke_holds_everywhere(replicas, tmp_path, vibration):
    """Device tokens live in the lake: added through one replica they authenticate on another, revoked through that one they fail on both."""
    a, b = replicas(2)
    token = a.add_device("pump-7")
    wait_for(lambda: b.knows(token), what="the token to reach the other replica")
    batch_id, body = seal(tmp_path, vibration, make_table(vibration, predictions=3)[0])
    assert b.put(batch_id, body, token)[0] == 201
    status, _ = b.request("DELETE", "/v1/devices/pump-7")
    assert status == 200
    wait_for(lambda: not a.knows(token) and not b.knows(token), what="the revoke to reach both replicas")
    assert a.put(batch_id, body, token)[0] == 401


def test_two_replicas_adding_the_same_new_field_at_once_fail_no_batch(replicas, tmp_path, vibration):
    """A schema with a new field pushed to two replicas at once registers once; its batches land through both, the field filled."""
    a, b = replicas(2)
    token = a.add_device("pump-1")
    text = (EXAMPLES_DIR / "vibration.toml").read_text().replace("version = 1", "version = 2", 1)
    text += '\n[inputs.humidity]\ntype = "float32"\nprivacy = "keep"\n'
    v2 = ModelSchema.from_toml(text, source="v2")
    answers: list[int | None] = []
    barrier = threading.Barrier(2)

    def push(replica: Replica) -> None:
        barrier.wait()
        answers.append(replica.request("POST", "/v1/schemas", text.encode(), content_type="application/toml")[0])

    threads = [threading.Thread(target=push, args=(replica,)) for replica in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200, 201]
    wait_for(lambda: b.knows(token), what="the token to reach the other replica")
    sent = [seal(tmp_path / f"v{index}", v2, make_table(v2, predictions=10)[0]) for index in range(6)]
    results: list[int | None] = []
    barrier = threading.Barrier(len(sent))

    def send(replica: Replica, batch_id: str, body: bytes) -> None:
        barrier.wait()
        results.append(replica.put(batch_id, body, token)[0])

    threads = [threading.Thread(target=send, args=((a, b)[index % 2], *batch)) for index, batch in enumerate(sent)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * 6
    with lake_reader(a) as con:
        assert counts(con) == (6, 6, 60)
        assert con.execute("SELECT count(humidity) FROM vibration").fetchone()[0] == 60


def test_fleet_health_and_dashboard_through_two_replicas_match_sql_over_the_lake(replicas, tmp_path, vibration):
    """Devices uploading through two replicas at once and reporting status through each: the fleet, health and
    dashboard answers of both replicas and of the CLI equal SQL over the landed tables, before and after compact."""
    from datetime import UTC, datetime, timedelta

    from tests.ingest.conftest import cli
    from tests.ingest.fleet_truth import assert_aggregates_match
    from tests.ingest.test_health import status_document

    a, b = replicas(2)
    names = ("pump-1", "pump-2", "pump-3")
    tokens = {name: a.add_device(name) for name in names}
    wait_for(lambda: all(b.knows(token) for token in tokens.values()), what="the tokens to reach the other replica")
    start = datetime.now(UTC) - timedelta(hours=2)
    sent = []
    for index in range(12):  # every device through both replicas, moving from 1.0 to 2.0 halfway
        name = names[index % 3]
        table, ids = make_table(vibration, predictions=5 + index, version="1.0" if index < 6 else "2.0",
                                start=start + timedelta(minutes=index))
        feedback = make_table(vibration, feedback=[(ids[0], "ok", start + timedelta(minutes=index, seconds=30))])[0]
        for part, rows in (("p", table), ("f", feedback)):
            sent.append(((a, b)[(index + len(part)) % 2], name, *seal(tmp_path / f"b{index}{part}", vibration, rows)))
    results: list[int | None] = []
    barrier = threading.Barrier(len(sent))

    def send(replica: Replica, name: str, batch_id: str, body: bytes) -> None:
        barrier.wait()
        results.append(replica.put(batch_id, body, tokens[name])[0])

    threads = [threading.Thread(target=send, args=job) for job in sent]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [201] * len(sent)
    for replica, name in ((a, "pump-1"), (b, "pump-1"), (b, "pump-2"), (a, "pump-3")):
        document = status_document(sync={**status_document()["sync"], "outcome": "failed" if name == "pump-3" else "ok",
                                         "error": "timeout" if name == "pump-3" else None})
        status, answer = replica.request("PUT", f"/v1/status/{document['status_id']}", json.dumps(document).encode(),
                                         tokens[name])
        assert status == 201, answer

    def sql_on(replica: Replica):
        def sql(query: str) -> list[dict[str, Any]]:
            status, answer = replica.request("POST", "/v1/sql", json.dumps({"sql": query}).encode())
            assert status == 200, answer
            return answer["rows"]
        return sql

    def check() -> None:
        for replica in (a, b):
            assert_aggregates_match(sql_on(replica))
            status, fleet = replica.request("GET", "/v1/dashboard/fleet")
            assert status == 200, fleet
            assert fleet["devices"] == 3 and fleet["states"]["failing"] == 1, fleet
            status, data = replica.request("GET", "/v1/dashboard/data?days=7")
            truth = sql_on(replica)("SELECT (SELECT count(*) FROM vibration) + (SELECT count(*) FROM vibration_feedback) AS n")
            assert sum(data["rows_per_day"]["vibration"]) == truth[0]["n"] == sum(5 + i for i in range(12)) + 12
            status, device = replica.request("GET", "/v1/dashboard/devices/pump-2")
            assert status == 200, device
            per_version = {row["model_version"]: row["predictions"] for row in device["versions"]}
            truth = sql_on(replica)("SELECT model_version, count(*) AS n FROM vibration WHERE device = 'pump-2' GROUP BY 1")
            assert per_version == {row["model_version"]: row["n"] for row in truth}
            assert device["device"]["statuses"] == 1 and device["device"]["rows"] == sum(per_version.values()) + 4
        listed = [json.loads(line) for line in cli("fleet", "--format", "json", "--config", str(a.config)).stdout.splitlines()]
        assert {(row["device"], row["state"], row["rows"]) for row in listed} == {
            (row["device"], row["state"], row["rows"]) for row in sql_on(a)(
                "SELECT device, CASE WHEN device = 'pump-3' THEN 'failing' ELSE 'ok' END AS state, count(*) AS rows FROM "
                "(SELECT device FROM vibration UNION ALL SELECT device FROM vibration_feedback) GROUP BY device")}

    check()
    folded = cli("compact", "--config", str(a.config))
    assert "compacted" in folded.stderr
    check()
    deltas = sql_on(a)("SELECT (SELECT count(*) FROM landed_daily_deltas) AS deltas, (SELECT count(*) FROM landed_daily) AS keys")
    assert deltas[0]["deltas"] == deltas[0]["keys"] > 0  # compact folded each key's deltas into one row


def test_an_erasure_on_one_replica_holds_on_another_after_lake_refresh_s(replicas, tmp_path, vibration):
    """A --where-hashed erasure made through replica A is held by replica B from its next lake_refresh_s: B answers a retried erased batch from the ledger without landing it again, and leaves the erased person's rows and the feedback on the deleted predictions out of a new batch."""
    refresh_s = 0.5
    a, b = replicas(2, lake_refresh_s=refresh_s)
    token = a.add_device("pump-1")
    wait_for(lambda: b.knows(token), what="the token to reach the other replica")
    privacy = Privacy(secrets.token_bytes(32))
    jane, john = privacy.hash("jane.roe@plant.example.com"), privacy.hash("john@plant.example.com")

    def with_people(rows: pa.Table, people: list[str]) -> pa.Table:
        index = rows.schema.get_field_index("operator_email")
        return rows.set_column(index, rows.schema.field(index), pa.array(people, rows.schema.field(index).type))

    first, first_ids = make_table(vibration, predictions=6)
    first = with_people(first, [jane, jane, jane, john, john, john])
    erased_batch, erased_body = seal(tmp_path / "a", vibration, first)
    assert a.put(erased_batch, erased_body, token)[0] == 201
    status, done = a.request("POST", "/v1/deletions", json.dumps(
        {"where_hashed": {"field": "operator_email", "value": jane}, "execute": True, "by": "dpo"}).encode())
    assert status == 200 and done["tables"]["vibration"] == 3, done
    time.sleep(refresh_s * 4)  # B re-reads the lake at least once

    status, answer = b.put(erased_batch, erased_body, token)  # its ack was lost: the device sends it again, to B
    assert status == 200, answer
    later, _ = make_table(vibration, predictions=4)
    later = with_people(later, [jane, john, jane, john])
    batch_id, body = seal(tmp_path / "b", vibration, later)
    status, receipt = b.put(batch_id, body, token)
    assert status == 201 and receipt["erased"] == 2, receipt
    at = datetime(2025, 7, 1, tzinfo=UTC)
    labels, _ = make_table(vibration, feedback=[(first_ids[0], "bad", at), (first_ids[3], "ok", at)])
    batch_id, body = seal(tmp_path / "c", vibration, labels)
    status, receipt = b.put(batch_id, body, token)
    assert status == 201 and receipt["erased"] == 1, receipt  # the label on jane's deleted prediction
    with lake_reader(b) as con:
        assert con.execute("SELECT count(*) FROM vibration WHERE operator_email = ?", [jane]).fetchone()[0] == 0
        assert con.execute("SELECT count(*) FROM vibration").fetchone()[0] == 5
        assert con.execute("SELECT prediction_id::VARCHAR FROM vibration_feedback").fetchall() == [(str(first_ids[3]),)]
