"""Row 3, wire bytes per record: sealed zstd Parquet vs gzip'd NDJSON vs JSON over MQTT, same rows.

The image model's thumbnails are JPEGs, already compressed, so no format can shrink them:
its rows also report the bytes of every other column apart (Parquet's column chunks vs
NDJSON without the image field). MQTT bytes are counted by the broker itself (mosquitto's
``$SYS/broker/bytes/received``, QoS 1 publishes, one JSON message per record).
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.harness import (
    LOOPBACK,
    Bench,
    Goal,
    Row,
    Unavailable,
    debian_binary,
    free_port,
    port_open,
    process,
    wait_for,
)
from bench.records import dumps, json_rows, sealed_table, simulated
from bench.simulator import MODELS

NUMBERS = (3,)
TITLE = "wire bytes per record"
HALF = (Goal("ratio", "<=", 0.5),)


class MqttBroker:
    """A private mosquitto on a loopback port, and a $SYS subscriber reading its byte counter."""

    def __init__(self, port: int, stack: contextlib.ExitStack) -> None:
        self.port, self._stack = port, stack
        self._received: list[tuple[float, int]] = []
        self._cond = threading.Condition()

    @classmethod
    def start(cls, bench: Bench) -> MqttBroker:
        try:
            import paho.mqtt.client  # noqa: F401
        except ImportError:
            raise Unavailable("paho-mqtt is not installed (pip install 'edgeloop[bench]')") from None
        binary = debian_binary(bench, "mosquitto", "mosquitto")
        port = free_port()
        folder = bench.folder("mosquitto")
        conf = folder / "mosquitto.conf"
        conf.write_text(
            f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence false\nsys_interval 1\n"
            "max_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )
        stack = contextlib.ExitStack()
        proc = stack.enter_context(process([binary, "-c", str(conf)], log=folder / "mosquitto.log"))
        try:
            wait_for(lambda: port_open(port), timeout_s=10, what="mosquitto", proc=proc)
        except RuntimeError as exc:
            stack.close()
            raise Unavailable(f"{exc} (see {folder / 'mosquitto.log'})") from None
        broker = cls(port, stack)
        broker._watch_sys()
        return broker

    def _client(self, name: str) -> Any:
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        client.max_inflight_messages_set(100)
        return client

    def _watch_sys(self) -> None:
        watcher = self._client("bench-sys")

        def on_message(_client: Any, _userdata: Any, message: Any) -> None:
            with self._cond:
                self._received.append((time.monotonic(), int(message.payload)))
                self._cond.notify_all()

        watcher.on_message = on_message
        watcher.on_connect = lambda client, *_: client.subscribe("$SYS/broker/bytes/received", qos=0)
        watcher.connect(LOOPBACK, self.port, keepalive=600)
        watcher.loop_start()
        self._stack.callback(watcher.loop_stop)
        self._stack.callback(watcher.disconnect)

    def _counter_after(self, moment: float) -> int:
        """The broker's bytes-received counter as first published after ``moment``."""
        with self._cond:
            if not self._cond.wait_for(lambda: any(t > moment for t, _ in self._received), timeout=10):
                raise RuntimeError("mosquitto published no $SYS byte counter")
            return next(v for t, v in self._received if t > moment)

    def publish_all(self, topic: str, payloads: list[bytes]) -> int:
        """Publish each payload with QoS 1, wait for every PUBACK; the bytes the broker received."""
        client = self._client(f"bench-{topic.rsplit('/', 1)[-1]}")
        client.connect(LOOPBACK, self.port, keepalive=600)
        client.loop_start()
        try:
            time.sleep(0.05)  # a fresh counter reading after connecting, so CONNECT is not counted
            before = self._counter_after(time.monotonic())
            infos = [client.publish(topic, payload, qos=1) for payload in payloads]
            for info in infos:
                info.wait_for_publish(timeout=60)
                if not info.is_published():
                    raise RuntimeError("MQTT publish not acknowledged within 60 s")
            after = self._counter_after(time.monotonic())
        finally:
            client.disconnect()
            client.loop_stop()
        return after - before

    def stop(self) -> None:
        self._stack.close()


def binary_columns(table: pa.Table) -> list[str]:
    """The columns holding opaque bytes (images), not 16-byte ids."""
    return [f.name for f in table.schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]


def column_bytes(path: Any, names: list[str]) -> int:
    """Compressed bytes of the named columns' chunks in a Parquet file."""
    meta = pq.ParquetFile(path).metadata
    total = 0
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            if chunk.path_in_schema.split(".", 1)[0] in names:
                total += chunk.total_compressed_size
    return total


def gzip_ndjson(rows: list[dict[str, Any]]) -> int:
    return len(gzip.compress(b"".join(dumps(row) + b"\n" for row in rows), compresslevel=6))


def measure(bench: Bench) -> list[Row]:
    from edgeloop.collector.config import SpoolSettings
    from edgeloop.collector.spool import Spool

    n_records = 2_000 if bench.quick else 20_000
    n_mqtt = 1_000 if bench.quick else 20_000
    rows_out: list[Row] = []
    mqtt: MqttBroker | None = None
    mqtt_reason = ""
    try:
        mqtt = MqttBroker.start(bench)
    except Unavailable as exc:
        mqtt_reason = str(exc)
    try:
        for model in MODELS:
            table = sealed_table(bench, model, simulated(model, n_records, seed=11))
            spool = Spool(bench.folder(f"wire-{model}"), SpoolSettings(), agent_version="bench")
            batches = [
                spool.write_batch(table.slice(start, 50_000), schema=bench.registry[model])
                for start in range(0, table.num_rows, 50_000)
            ]
            parquet_bytes = sum(batch.bytes for batch in batches)
            rows = json_rows(table)
            ndjson = b"".join(dumps(row) + b"\n" for row in rows)
            gzipped = len(gzip.compress(ndjson, compresslevel=6))
            n = len(rows)
            label = f"wire bytes/record, {model}"
            images = binary_columns(table)
            rows_out.append(
                Row(3, label, "B", parquet_bytes / n, "gzip'd NDJSON, same rows", gzipped / n,
                    goals=() if images else HALF,
                    note=f"{n:,} rows; NDJSON uncompressed {len(ndjson) / n:,.0f} B/record")
            )
            if images:
                image_parquet = sum(column_bytes(batch.path, images) for batch in batches)
                others = [{k: v for k, v in row.items() if k not in images} for row in rows]
                rows_out.append(
                    Row(3, f"wire bytes/record, {model} without {', '.join(images)}", "B",
                        (parquet_bytes - image_parquet) / n, "gzip'd NDJSON, same rows and columns", gzip_ndjson(others) / n,
                        goals=HALF,
                        note=f"the JPEGs alone: {image_parquet / n:,.0f} B/record in Parquet; footer counted with the other columns")
                )
            if model == "vibration":
                rows_out.append(small_batches(bench, spool, table, rows))
            if mqtt is None:
                rows_out.append(Row(3, label, "B", parquet_bytes / n, "JSON over MQTT, QoS 1", None, unavailable=mqtt_reason))
                continue
            sent = mqtt.publish_all(f"edgeloop/bench/{model}", [dumps(row) for row in rows[:n_mqtt]])
            rows_out.append(
                Row(3, label, "B", parquet_bytes / n, "JSON over MQTT, QoS 1", sent / min(n, n_mqtt),
                    note=f"mosquitto $SYS bytes received over {min(n, n_mqtt):,} messages")
            )
    finally:
        if mqtt is not None:
            mqtt.stop()
    return rows_out


def small_batches(bench: Bench, spool: Any, table: pa.Table, rows: list[dict[str, Any]]) -> Row:
    """The same comparison for the batches a slow device seals: one record per 6 s until seal_max_age_s."""
    from edgeloop.collector.config import SpoolSettings

    age_s = SpoolSettings().seal_max_age_s
    per = int(age_s // 6)
    schema = bench.registry["vibration"]
    parquet = sum(spool.write_batch(table.slice(i, per), schema=schema).bytes for i in range(0, table.num_rows, per))
    gzipped = sum(gzip_ndjson(rows[i : i + per]) for i in range(0, len(rows), per))
    n = len(rows)
    return Row(3, f"wire bytes/record, vibration, {per}-row batches", "B", parquet / n, "gzip'd NDJSON, same batches",
               gzipped / n, goals=HALF,
               note=f"what the default seal_max_age_s = {age_s:g} gives a device logging one record per 6 s")
