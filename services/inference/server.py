"""The detector as an Open Inference Protocol model, served by KServe's ModelServer.

KServe's own server (the `kserve` package) speaks the protocol over HTTP (`/v2/health/live`,
`/v2/models/detector`, `/v2/models/detector/infer`, with the binary tensor extension) and over
gRPC (`inference.GRPCInferenceService`); this module only says what the model takes and gives:

- input `images`: UINT8 [-1, 224, 224, 3], BGR frames as the detect stage decodes them;
- outputs, padded to `top_k` boxes per frame: `count` INT32 [-1] (boxes found), `sku` BYTES
  [-1, top_k] (catalog SKU, empty where padded), `score` FP32 [-1, top_k], `box` FP32
  [-1, top_k, 4] (x0, y0, x1, y1 as frame fractions);
- every response names the content-hash `model_version` that produced it and, as the parameter
  `batched_frames`, the frames of the batch its request ran in (dynamic batching, batcher.py).

SKUs travel as names, so a client never depends on the server's class order.
"""

from __future__ import annotations

import uuid
from typing import Any

import kserve
import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from cartstream.models.detector import INPUT_SIZE
from cartstream.models.inference import DetectorRuntime, FrameDetections
from cartstream.services.inference.batcher import DynamicBatcher

MODEL_NAME = "detector"
INPUT = "images"


def pad(found: list[FrameDetections], skus: list[str], top_k: int) -> dict[str, np.ndarray]:
    """Per-frame detections as the fixed-shape output tensors (see the module doc)."""
    n = len(found)
    counts = np.zeros(n, np.int32)
    names = np.full((n, top_k), b"", dtype=object)
    scores = np.zeros((n, top_k), np.float32)
    boxes = np.zeros((n, top_k, 4), np.float32)
    for i, frame in enumerate(found):
        k = min(len(frame.classes), top_k)
        counts[i] = k
        names[i, :k] = [skus[int(c)].encode() for c in frame.classes[:k]]
        scores[i, :k] = frame.scores[:k]
        boxes[i, :k] = frame.boxes[:k]
    return {"count": counts, "sku": names, "score": scores, "box": boxes}


class ServedDetector(kserve.Model):  # type: ignore[misc]
    """initialize (`load`) / execute (`predict`, batched across requests) / finalize (`stop`)."""

    def __init__(
        self, runtime: DetectorRuntime, max_batch: int = 16, max_wait_ms: float = 5.0
    ) -> None:
        super().__init__(MODEL_NAME)
        self.runtime = runtime
        self.batcher: DynamicBatcher[FrameDetections] = DynamicBatcher(
            runtime.run, max_batch, max_wait_ms
        )

    def load(self) -> bool:
        self.runtime.initialize()
        self.runtime.warm_up(self.batcher.max_batch)
        self.ready = True
        return True

    def stop(self) -> None:
        self.runtime.close()
        self.ready = False

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": INPUT, "datatype": "UINT8", "shape": [-1, INPUT_SIZE, INPUT_SIZE, 3]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        k = self.runtime.top_k
        return [
            {"name": "count", "datatype": "INT32", "shape": [-1]},
            {"name": "sku", "datatype": "BYTES", "shape": [-1, k]},
            {"name": "score", "datatype": "FP32", "shape": [-1, k]},
            {"name": "box", "datatype": "FP32", "shape": [-1, k, 4]},
        ]

    async def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the detector speaks the v2 protocol only (an InferRequest)")
        images = self._images(payload)
        found, batched = await self.batcher.infer(images)
        tensors = pad(found, self.runtime.skus, self.runtime.top_k)
        outputs = []
        for spec in self.get_output_types():
            name = spec["name"]
            output = InferOutput(name, list(tensors[name].shape), spec["datatype"])
            output.set_data_from_numpy(tensors[name], binary_data=_binary(payload, name))
            outputs.append(output)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.runtime.version,
            infer_outputs=outputs,
            parameters={"batched_frames": batched},
            use_binary_outputs=payload.from_grpc,
        )

    def _images(self, payload: InferRequest) -> np.ndarray:
        inputs = [i for i in payload.inputs if i.name == INPUT]
        if len(inputs) != 1:
            raise InvalidInput(f"expected one input named {INPUT!r}")
        tensor = inputs[0]
        if tensor.datatype != "UINT8":
            raise InvalidInput(f"{INPUT} must be UINT8, not {tensor.datatype}")
        shape = list(tensor.shape)
        if len(shape) != 4 or shape[1:] != [INPUT_SIZE, INPUT_SIZE, 3] or shape[0] < 1:
            raise InvalidInput(f"{INPUT} must be [N, {INPUT_SIZE}, {INPUT_SIZE}, 3], not {shape}")
        return np.ascontiguousarray(tensor.as_numpy(), dtype=np.uint8).reshape(shape)


def _binary(payload: InferRequest, output: str) -> bool:
    """Raw tensor bytes over gRPC; over HTTP JSON unless the request asks for the binary
    extension (as Triton does; tritonclient asks for it)."""
    if payload.from_grpc:
        return True
    for requested in payload.request_outputs or ():
        if requested.name == output and requested.binary_data is not None:
            return bool(requested.binary_data)
    return bool((payload.parameters or {}).get("binary_data_output", False))


def serve(
    runtime: DetectorRuntime,
    http_port: int,
    grpc_port: int,
    max_batch: int,
    max_wait_ms: float,
) -> None:
    """Serve until SIGTERM or SIGINT (KServe's ModelServer handles both)."""
    model = ServedDetector(runtime, max_batch, max_wait_ms)
    model.load()
    kserve.ModelServer(
        http_port=http_port, grpc_port=grpc_port, workers=1, enable_docs_url=False
    ).start([model])
