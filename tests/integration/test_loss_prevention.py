"""Through the real broker and Postgres: an injected item swap ends as a NEEDS_REVIEW checkout
with the anomaly linked, and the review export carries its frames as a labelling queue."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.dataset import load_labelled
from cartstream.models.shopper import ANOMALY_KINDS, ShopperProfile
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.simulate import SimConfig, plan_carts, read_truth, simulate
from cartstream.services.kafka.topics import ensure_topics
from cartstream.services.storage.repository import Repository, make_engine
from cartstream.services.tools.harness import WorkerProcess, worker_env
from cartstream.services.tools.review import export_review

ALWAYS = ShopperProfile(anomaly_rate=1.0 / len(ANOMALY_KINDS))  # every session gets one case


def swap_config(catalog: Catalog) -> SimConfig:
    """A one-session run whose session is an item swap that goes to checkout."""
    for seed in range(500):
        config = SimConfig(1, 1, seed, run_id=uuid.uuid4().hex[:6], profile=ALWAYS)
        (planned,) = plan_carts(config, catalog)
        if planned.plan.anomaly == "ITEM_SWAP" and planned.plan.outcome == "checkout":
            return config
    raise AssertionError("no seed below 500 plans an item swap")


def test_an_injected_swap_needs_review_with_the_anomaly_linked(
    broker_settings: Callable[..., Settings], pg_url: str, tmp_path: Path, catalog: Catalog
) -> None:
    settings = broker_settings(database_url=pg_url)
    ensure_topics(settings)
    ready = tmp_path / "ready"
    worker = WorkerProcess(worker_env(settings, settings.app_id, pg_url, ready), tmp_path / "w.log")
    try:
        worker.wait_ready(ready, timeout_s=60)
        client = CartClient(settings, tmp_path / "spool")
        simulate(swap_config(catalog), catalog, settings.topics, client, tmp_path / "truth.jsonl")
        assert client.close(60)
        (truth,) = read_truth(tmp_path / "truth.jsonl").values()
        repo = Repository(make_engine(pg_url))
        deadline = time.monotonic() + 90
        rows = []
        while time.monotonic() < deadline and not rows:
            rows = repo.checkouts([truth["session_id"]])
            time.sleep(0.3)
        (checkout,) = rows
        assert checkout.status == "NEEDS_REVIEW"
        links = repo.anomaly_links(checkout.checkout_id)
        assert links
        with make_engine(pg_url).connect() as conn:
            kinds = {
                row[0]
                for row in conn.execute(
                    text("SELECT kind FROM anomalies WHERE session_id = :s"),
                    {"s": truth["session_id"]},
                )
            }
        assert kinds == {"ITEM_SWAP"}
        assert any("ITEM_SWAP" in reason or "saw" in reason for reason in checkout.review_reasons)

        report = export_review(settings, tmp_path / "review", min_confidence=0.0, idle_s=1.0)
        assert report.images >= 1 and report.missing_frames == 0
        lines = (tmp_path / "review" / "labels.jsonl").read_text().splitlines()
        rows_out = [json.loads(line) for line in lines]
        assert all((tmp_path / "review" / r["image"]).is_file() for r in rows_out)
        assert any(r["reasons"][0].startswith("ITEM_SWAP") for r in rows_out)
        # a person checks one frame; training takes only that one
        rows_out[0]["verified"] = True
        rows_out[0]["boxes"] = rows_out[0]["boxes"][:1] or [
            {"sku": "PAN-TUNA-160", "x0": 0.1, "y0": 0.1, "x1": 0.3, "y1": 0.3}
        ]
        (tmp_path / "review" / "labels.jsonl").write_text(
            "\n".join(json.dumps(r) for r in rows_out) + "\n"
        )
        images, boxes = load_labelled(tmp_path / "review", catalog)
        assert images.shape == (1, 224, 224, 3) and len(boxes) == 1 and boxes[0]
    finally:
        worker.stop()
