"""`cartstream serve detector` over the Open Inference Protocol, checked with `tritonclient`
(an unmodified foreign client) over HTTP and gRPC: health, metadata, infer (the same detections
as in-process inference), dynamic batching across requests, clear errors for bad input, and the
detect stage calling it through `detect.endpoint`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from cartstream.core.ids import now_ms
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.inference import DetectorRuntime, FrameDetections
from cartstream.models.remote import RemoteDetector
from cartstream.models.train import render_dataset
from cartstream.services.kafka.broker import free_port
from cartstream.services.tools.bench import frame_records
from cartstream.streams.detect import DetectStage
from cartstream.streams.stage import Inbound

OUTPUTS = ("count", "sku", "score", "box")


@dataclass(frozen=True)
class Server:
    http: str
    grpc: str


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "CARTSTREAM_DETECT__THREADS": "1"}
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("cartstream")),
            "serve",
            "detector",
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--max-wait-ms",
            "200",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready") as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the inference server did not start:\n{proc.communicate()[0]}")
        time.sleep(0.3)
    try:
        yield Server(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("the inference server ignored SIGTERM")


@pytest.fixture(scope="module")
def frames(catalog: Catalog) -> np.ndarray:
    images, _ = render_dataset(catalog, 12, seed=4242)
    return images


def same(a: list[FrameDetections], b: list[FrameDetections]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.classes, y.classes)
        and np.allclose(x.scores, y.scores, atol=1e-4)
        and np.allclose(x.boxes, y.boxes, atol=1e-4)
        for x, y in zip(a, b, strict=True)
    )


def infer(module: Any, client: Any, images: np.ndarray) -> Any:
    tensor = module.InferInput("images", list(images.shape), "UINT8")
    tensor.set_data_from_numpy(images)
    outputs = [module.InferRequestedOutput(name) for name in OUTPUTS]
    return client.infer("detector", [tensor], outputs=outputs)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_tritonclient_gets_the_in_process_detections(
    server: Server, frames: np.ndarray, catalog: Catalog, transport: str
) -> None:
    module: Any = httpclient if transport == "http" else grpcclient
    client = module.InferenceServerClient(server.http if transport == "http" else server.grpc)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("detector")
    metadata = (
        client.get_model_metadata("detector", as_json=True)
        if transport == "grpc"
        else (client.get_model_metadata("detector"))
    )
    assert [i["name"] for i in metadata["inputs"]] == ["images"]
    assert [o["name"] for o in metadata["outputs"]] == list(OUTPUTS)
    local = DetectorRuntime(threads=1).initialize()
    result = infer(module, client, frames)
    response = result.get_response(as_json=True) if transport == "grpc" else result.get_response()
    assert response["model_version"] == local.version
    counts, skus = result.as_numpy("count"), result.as_numpy("sku")
    want = local.run(frames)
    assert [int(c) for c in counts] == [len(f.classes) for f in want]
    names = [[_text(s) for s in row[: int(c)]] for row, c in zip(skus, counts, strict=True)]
    assert names == [[local.skus[int(k)] for k in f.classes] for f in want]
    assert sum(len(f.classes) for f in want) > len(frames)  # the frames show items
    remote = RemoteDetector(f"{transport}://{client_address(server, transport)}", local.skus)
    remote.initialize().warm_up(1)
    assert remote.version == local.version and same(remote.run(frames), want)
    client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def client_address(server: Server, transport: str) -> str:
    return server.http if transport == "http" else server.grpc


def test_requests_are_batched_together(server: Server, frames: np.ndarray) -> None:
    """Six clients at once, two frames each: the server runs them in fewer, larger batches."""

    def one(n: int) -> int:
        client = grpcclient.InferenceServerClient(server.grpc)
        try:
            result = infer(grpcclient, client, frames[2 * n : 2 * n + 2])
            response = result.get_response(as_json=True)
            return int(response["parameters"]["batched_frames"]["int64_param"])
        finally:
            client.close()

    with ThreadPoolExecutor(6) as pool:
        batched = list(pool.map(one, range(6)))
    assert max(batched) > 2, batched  # at least two requests shared one inference


def test_bad_input_gets_a_clear_error(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.http)
    wrong = np.zeros((1, 100, 100, 3), np.uint8)
    with pytest.raises(InferenceServerException, match=r"images must be \[N, 224, 224, 3\]"):
        infer(httpclient, client, wrong)
    floats = httpclient.InferInput("images", [1, 224, 224, 3], "FP32")
    floats.set_data_from_numpy(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(InferenceServerException, match="must be UINT8"):
        client.infer("detector", [floats])
    assert client.is_server_ready()  # and it keeps serving
    client.close()


def test_the_detect_stage_calls_the_endpoint(
    server: Server, frames: np.ndarray, catalog: Catalog
) -> None:
    records = frame_records(frames, len(frames))
    inbounds = [Inbound("cart.frames", 0, n, b"c", now_ms()) for n in range(len(records))]

    def detections(settings: Settings) -> list[Any]:
        stage = DetectStage(settings, catalog)
        stage.start()
        try:
            out = stage.handle_batch(records, inbounds, [b""] * len(records), now_ms())
            return [(o.topic, o.record) for o in out]
        finally:
            stage.close()

    local = Settings().with_overrides(detect={"threads": 1})
    remote = local.with_overrides(
        detect={**local.detect.model_dump(), "endpoint": f"grpc://{server.grpc}"}
    )
    assert detections(remote) == detections(local)
