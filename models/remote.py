"""The detector behind an Open Inference Protocol endpoint (`cartstream serve detector`, or any
KServe v2 / Triton server with the same model contract; see services/inference/server.py).

`RemoteDetector` has the shape of `DetectorRuntime` (initialize / run(batch) / close), so the
detect stage uses either without knowing which (`detect.endpoint`). It calls the server with
`tritonclient`, over gRPC (`grpc://host:port`) or HTTP (`http://host:port`), one client per
thread (the stage infers `in_flight` batches at once). SKUs come back as names and are mapped
onto the worker's catalog; a name it does not know means the server's model was trained on
another catalog (ConfigurationError). Each answer says which model version produced it, and
that is the version the detections carry.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from cartstream.exceptions import ConfigurationError
from cartstream.models.detector import INPUT_SIZE
from cartstream.models.inference import FrameDetections

MODEL_NAME = "detector"
OUTPUTS = ("count", "sku", "score", "box")


class RemoteDetector:
    def __init__(
        self,
        endpoint: str,
        skus: list[str],
        threshold: float = 0.3,
        timeout_s: float = 10.0,
        model_name: str = MODEL_NAME,
    ) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("grpc", "http") or not parts.netloc:
            raise ConfigurationError(
                f"detect.endpoint {endpoint!r}: expected grpc://host:port or http://host:port"
            )
        self.endpoint, self.scheme, self.address = endpoint, parts.scheme, parts.netloc
        self.skus = list(skus)
        self._index = {sku: i for i, sku in enumerate(self.skus)}
        self.threshold, self.timeout_s, self.model_name = threshold, timeout_s, model_name
        self.provider = f"remote {endpoint}"
        self.top_k = 0
        self._version = "unknown"
        # gRPC answers protobuf messages unless asked for dicts, as HTTP gives
        self._as_json: dict[str, bool] = {"as_json": True} if parts.scheme == "grpc" else {}
        self._local = threading.local()
        self._clients: list[Any] = []  # every thread's, to close them all
        self._lock = threading.Lock()

    @property
    def version(self) -> str:
        """The model version of this thread's last answer (the server may switch models)."""
        return str(getattr(self._local, "version", self._version))

    def _protocol(self) -> Any:
        """tritonclient's module for this endpoint's transport."""
        if self.scheme == "grpc":
            import tritonclient.grpc as grpc_protocol

            return grpc_protocol
        import tritonclient.http as http_protocol

        return http_protocol

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            options: dict[str, Any] = (
                {}
                if self.scheme == "grpc"
                else {"connection_timeout": self.timeout_s, "network_timeout": self.timeout_s}
            )
            client = self._protocol().InferenceServerClient(self.address, **options)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def initialize(self) -> RemoteDetector:
        """Checks the server is ready and serves the expected contract; ConfigurationError
        if not."""
        client = self._client()
        try:
            ready = client.is_model_ready(self.model_name)
            metadata = client.get_model_metadata(self.model_name, **self._as_json)
        except Exception as exc:  # tritonclient raises its own error types per transport
            raise ConfigurationError(f"detector endpoint {self.endpoint}: {exc}") from exc
        if not ready:
            raise ConfigurationError(f"detector endpoint {self.endpoint}: model not ready")
        shapes = {o["name"]: o["shape"] for o in metadata["outputs"]}
        missing = sorted(set(OUTPUTS) - set(shapes))
        if missing:
            raise ConfigurationError(f"detector endpoint {self.endpoint} lacks outputs {missing}")
        self.top_k = int(shapes["score"][-1])
        return self

    def warm_up(self, batch: int) -> None:
        """One blank frame: opens the connection and learns the served model version."""
        self.run(np.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), np.uint8))
        self._version = self.version

    def run(self, images: np.ndarray, threshold: float | None = None) -> list[FrameDetections]:
        """Detections for a uint8 NHWC batch of BGR frames (score >= threshold)."""
        client, protocol = self._client(), self._protocol()
        tensor = protocol.InferInput("images", list(images.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(images, dtype=np.uint8))
        outputs = [protocol.InferRequestedOutput(name) for name in OUTPUTS]
        kwargs = {"client_timeout": self.timeout_s} if self.scheme == "grpc" else {}
        result = client.infer(self.model_name, [tensor], outputs=outputs, **kwargs)
        self._local.version = result.get_response(**self._as_json).get("model_version") or (
            "unknown"
        )
        return self._frames(
            result.as_numpy("count"),
            result.as_numpy("sku"),
            result.as_numpy("score"),
            result.as_numpy("box"),
            self.threshold if threshold is None else threshold,
        )

    def _frames(
        self,
        counts: np.ndarray,
        names: np.ndarray,
        scores: np.ndarray,
        boxes: np.ndarray,
        cut: float,
    ) -> list[FrameDetections]:
        frames = []
        for i, count in enumerate(counts):
            k = int(count)
            keep = scores[i, :k] >= cut
            classes = []
            for name in names[i, :k][keep]:
                sku = name.decode() if isinstance(name, bytes) else str(name)
                if sku not in self._index:
                    raise ConfigurationError(
                        f"detector endpoint {self.endpoint} answered SKU {sku!r}, which the "
                        "catalog does not have: its model was trained on another catalog"
                    )
                classes.append(self._index[sku])
            frames.append(
                FrameDetections(
                    np.asarray(classes, np.int64),
                    scores[i, :k][keep].astype(np.float32),
                    boxes[i, :k][keep].astype(np.float32),
                )
            )
        return frames

    def close(self) -> None:
        """Closes every thread's connection (the detect stage infers in several threads)."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()
        self._local = threading.local()
