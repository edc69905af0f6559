"""`cartstream serve detector`: the detector over the Open Inference Protocol (KServe v2) on
HTTP and gRPC, for workers with `detect.endpoint` (a GPU pool serving many CPU workers) and for
any tool that speaks the protocol (tritonclient, KServe's clients, perf_analyzer)."""

from __future__ import annotations

import click

from cartstream.models.inference import DetectorRuntime
from cartstream.models.registry import resolve_model
from cartstream.services.cli.context import cli_settings, console


@click.group()
def serve() -> None:
    """Serve models over the network."""


@serve.command("detector")
@click.option("--http-port", type=int, default=8080, show_default=True)
@click.option("--grpc-port", type=int, default=8081, show_default=True)
@click.option(
    "--max-batch",
    type=click.IntRange(1, 1024),
    default=32,
    show_default=True,
    help="Frames inferred together, gathered across requests.",
)
@click.option(
    "--max-wait-ms",
    type=click.FloatRange(0),
    default=5.0,
    show_default=True,
    help="How long the first request of a batch waits for others.",
)
@click.pass_context
def serve_detector(
    ctx: click.Context, http_port: int, grpc_port: int, max_batch: int, max_wait_ms: float
) -> None:
    """Serve the detector that detect.* selects (model_path, else the registry's
    model_version, else the bundled one) on device detect.device, until SIGTERM or Ctrl-C.

    Input `images` UINT8 [N, 224, 224, 3]; outputs `count`, `sku`, `score`, `box` (see
    docs/models.md). Health: /v2/health/ready; metadata: /v2/models/detector."""
    from cartstream.services.inference.server import serve as run_server

    config = cli_settings(ctx).detect
    runtime = DetectorRuntime(
        resolve_model(config.model_path, config.registry, config.model_version),
        threshold=config.score_threshold,
        device=config.device,
        threads=config.threads,
    )
    console.print(
        f"[bold]detector {runtime.version}[/] over the Open Inference Protocol: "
        f"http://0.0.0.0:{http_port}/v2/models/detector, grpc 0.0.0.0:{grpc_port} "
        f"(batches of up to {max_batch} frames within {max_wait_ms:g} ms)"
    )
    run_server(runtime, http_port, grpc_port, max_batch, max_wait_ms)
