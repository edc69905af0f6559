"""`cartstream bench serving`: detector frames/s in process vs behind `cartstream serve detector`
(Open Inference Protocol over gRPC and HTTP), with one and with several concurrent clients.

Each client sends batches of `batch` frames (uint8 224x224, as the detect stage decodes them)
for `seconds`; the server batches requests together (up to `--max-batch` frames within
`--max-wait-ms`). The server runs on this machine, so it shares the cores with the clients:
the remote rows measure the protocol's cost, not a GPU pool's gain.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from cartstream.models.catalog import Catalog
from cartstream.models.inference import Detector, DetectorRuntime
from cartstream.models.remote import RemoteDetector
from cartstream.models.train import render_dataset
from cartstream.services.kafka.broker import free_port
from cartstream.services.tools.doc_sections import write_section
from cartstream.services.tools.process_cpu import process_cpu_s

SECTION = "serving"


@dataclass(frozen=True)
class ServingRow:
    path: str
    clients: int
    batch: int
    fps: float
    p50_ms: float  # per request
    p99_ms: float
    server_cpu_ms: float  # server CPU per frame (remote rows)


def _drive(
    detectors: list[Detector], frames: np.ndarray, seconds: float
) -> tuple[int, list[float]]:
    def client(detector: Detector) -> tuple[int, list[float]]:
        done, waits = 0, []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            started = time.perf_counter()
            detector.run(frames)
            waits.append((time.perf_counter() - started) * 1000)
            done += len(frames)
        return done, waits

    with ThreadPoolExecutor(len(detectors)) as pool:
        results = list(pool.map(client, detectors))
    return sum(r[0] for r in results), [w for r in results for w in r[1]]


def _row(
    path: str, clients: int, batch: int, done: int, waits: list[float], wall: float, cpu: float
) -> ServingRow:
    return ServingRow(
        path,
        clients,
        batch,
        done / wall,
        float(np.percentile(waits, 50)),
        float(np.percentile(waits, 99)),
        cpu * 1000 / done if cpu else 0.0,
    )


class _Server:
    def __init__(self, max_batch: int, max_wait_ms: float) -> None:
        self.http, self.grpc = free_port(), free_port()
        exe = str(Path(sys.executable).with_name("cartstream"))
        self.proc = subprocess.Popen(
            [
                exe,
                "serve",
                "detector",
                f"--http-port={self.http}",
                f"--grpc-port={self.grpc}",
                f"--max-batch={max_batch}",
                f"--max-wait-ms={max_wait_ms}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http}/v2/health/ready"):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError("the inference server did not start") from None
                time.sleep(0.3)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run_serving_bench(
    batch: int, clients: list[int], seconds: float, max_batch: int, max_wait_ms: float
) -> list[ServingRow]:
    catalog = Catalog.load()
    frames, _ = render_dataset(catalog, batch, seed=4242)
    skus = [s.sku for s in catalog.skus]
    rows = []
    for n in clients:
        local: list[Detector] = [
            DetectorRuntime(threads=max(1, (os.cpu_count() or 2) // n)).initialize()
            for _ in range(n)
        ]
        started = time.perf_counter()
        done, waits = _drive(local, frames, seconds)
        rows.append(_row("in process", n, batch, done, waits, time.perf_counter() - started, 0.0))
    server = _Server(max_batch, max_wait_ms)
    try:
        for scheme, port in (("grpc", server.grpc), ("http", server.http)):
            for n in clients:
                remotes: list[RemoteDetector] = []
                for _ in range(n):
                    remotes.append(RemoteDetector(f"{scheme}://127.0.0.1:{port}", skus))
                    remotes[-1].initialize().warm_up(1)
                cpu, started = process_cpu_s(server.proc.pid), time.perf_counter()
                done, waits = _drive(list(remotes), frames, seconds)
                wall = time.perf_counter() - started
                cpu = process_cpu_s(server.proc.pid) - cpu
                rows.append(_row(f"remote {scheme}", n, batch, done, waits, wall, cpu))
                for remote in remotes:
                    remote.close()
    finally:
        server.close()
    return rows


def table(rows: list[ServingRow]) -> str:
    return str(
        tabulate(
            [
                [
                    r.path,
                    r.clients,
                    r.batch,
                    round(r.fps),
                    round(r.p50_ms, 1),
                    round(r.p99_ms, 1),
                    round(r.server_cpu_ms, 2) if r.server_cpu_ms else "-",
                ]
                for r in rows
            ],
            headers=[
                "path",
                "clients",
                "frames/request",
                "frames/s",
                "request p50 ms",
                "request p99 ms",
                "server CPU ms/frame",
            ],
            tablefmt="github",
        )
    )


def write_report(out: Path, rows: list[ServingRow], max_batch: int, max_wait_ms: float) -> None:
    text = f"""## Serving the detector (`cartstream bench serving`)

In process (onnxruntime in the client's own process) vs `cartstream serve detector` (KServe's
ModelServer, Open Inference Protocol) called through `tritonclient`, the way the detect stage
calls it with `detect.endpoint`. Server batches: up to {max_batch} frames within {max_wait_ms:g}
ms. {os.cpu_count()} cores on {platform.machine()}, shared by the clients and the server, so
the remote rows show the protocol's cost; a GPU server on its own machine is what pays it back.

{table(rows)}

Over HTTP, KServe 0.21 turns a binary request tensor into a Python list before the model sees it
(`InferRequest.from_bytes` calls `set_data_from_numpy(..., binary_data=False)`), so each 150 KB
frame costs milliseconds of CPU in the server; gRPC hands the model the raw bytes. Workers should
use `grpc://` endpoints (the chart does).
"""
    write_section(out, SECTION, text)
