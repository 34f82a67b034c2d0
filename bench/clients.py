"""The apps on the device, run as child processes so their CPU is measured apart from the bench.

    python -m bench.clients sdk SOCKET NDJSON      # edgeloop: log each record through the SDK
    python -m bench.clients naive URL NDJSON       # the usual alternative: POST each record as JSON
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.harness import ROOT, ProcessWatch, python_module


def sdk_client(socket_path: str, ndjson: Path) -> None:
    """The device side of edgeloop: the app logs each record through the SDK."""
    import orjson

    from edgeloop.collector.client import Client

    client = Client(socket_path)
    with open(ndjson, "rb") as lines:
        for count, line in enumerate(lines, 1):
            r = orjson.loads(line)
            if r["kind"] == "prediction":
                client.log_prediction(r["model"], r["model_version"], r["inputs"], r["outputs"], record_id=r["record_id"])
            else:
                client.log_feedback(r["prediction_id"], r["model"], r["model_version"], r["feedback"], source=r.get("source"))
            if count % 50_000 == 0:  # keep the buffer bounded: the app waits, nothing is dropped
                client.flush(timeout_s=120)
    client.flush(timeout_s=120)
    stats = client.stats()
    client.close()
    print(json.dumps(stats, default=str))


async def naive_client(url: str, ndjson: Path, concurrency: int = 4) -> None:
    """The device side of the alternative: POST each record as it is made, a few in flight."""
    import aiohttp

    queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=concurrency * 4)

    async def worker(session: aiohttp.ClientSession) -> None:
        while (body := await queue.get()) is not None:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                if response.status != 201:
                    raise RuntimeError(f"naive collector answered {response.status}")
                await response.read()

    async with aiohttp.ClientSession() as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        with open(ndjson, "rb") as lines:
            for line in lines:
                await queue.put(line.rstrip(b"\n"))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)


def run_sdk(socket_path: Path, ndjson: Path) -> tuple[dict[str, Any], float]:
    """Log every record of ``ndjson`` through the SDK in a child process; its stats and CPU seconds."""
    sdk = subprocess.Popen(
        python_module("bench.clients", "sdk", str(socket_path), str(ndjson)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    watch = ProcessWatch(sdk.pid)
    out, err = sdk.communicate(timeout=1200)
    watch.stop()
    if sdk.returncode != 0:
        raise RuntimeError(f"SDK client failed: {err.decode()[-800:]}")
    stats = json.loads(out.decode().strip().splitlines()[-1])
    if stats.get("dropped"):
        raise RuntimeError(f"the SDK dropped records: {stats['dropped']}")
    return stats, watch.cpu_s


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "sdk":
        sdk_client(argv[1], Path(argv[2]))
        return 0
    if len(argv) == 3 and argv[0] == "naive":
        asyncio.run(naive_client(argv[1], Path(argv[2])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
