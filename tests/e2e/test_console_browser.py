"""The console in a real browser (Playwright driving Debian's chromium): a store employee logs
in, watches a basket fill while a cart shops, opens a NEEDS_REVIEW checkout, corrects an item,
approves it, and the Postgres row and the checkout.decisions records say so.

Screenshots go to $SCREENSHOTS_DIR (the docs' are made with
`SCREENSHOTS_DIR=docs/console ./scripts/test tests/e2e/test_console_browser.py`)."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from sqlalchemy import text

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.shopper import ShopperProfile
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.simulate import SimConfig, read_truth, simulate
from cartstream.services.kafka.tail import read_topic
from cartstream.services.storage.repository import Repository, make_engine
from tests.console_stack import PASSWORD, console_stack, wait_for

pytestmark = pytest.mark.e2e
CHROMIUM = "/usr/bin/chromium"
CART = "cart-001-0000"  # store-001's cart (the other shops in store-002)


def shot(page: Page, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.jpg"), type="jpeg", quality=80)


def test_a_store_employee_reviews_a_checkout_in_the_browser(
    broker_settings: Callable[..., Settings],
    pg_url: str,
    tmp_path: Path,
    catalog: Catalog,
) -> None:
    shots = Path(os.environ.get("SCREENSHOTS_DIR", tmp_path / "screenshots"))
    settings = broker_settings(database_url=pg_url)
    config = SimConfig(
        carts=2,
        sessions=2,
        seed=31,
        run_id=uuid.uuid4().hex[:6],
        profile=ShopperProfile(anomaly_rate=1.0, abandon_rate=0.0, mean_items=5.0),
    )
    with (
        console_stack(settings, pg_url, tmp_path, secure_cookies=True) as stack,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{stack.url}/")
        expect(page).to_have_url(f"{stack.url}/login?next=/")
        page.fill("input[name=username]", "alice")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        expect(page.get_by_test_id("who")).to_contain_text("alice · store-001")

        client = CartClient(settings, tmp_path / "spool")
        done: dict[str, Any] = {}

        def shop() -> None:
            done["report"] = simulate(
                config, catalog, settings.topics, client, tmp_path / "truth.jsonl", speed=4.0
            )

        shopper = threading.Thread(target=shop)
        shopper.start()
        # the store view: the cart appears live; its basket fills while it shops
        page.locator(f'[data-open-cart="{CART}"]').click(timeout=60_000)
        expect(page.locator("#basket-items tr").first).to_be_visible(timeout=60_000)
        expect(page.locator('tr[data-cart="cart-002-0001"]')).to_have_count(0)  # other store
        shot(page, shots, "store")
        shopper.join(timeout=300)
        assert client.close(60)
        truth = read_truth(tmp_path / "truth.jsonl")
        requested = [s for s, t in truth.items() if t["outcome"] == "checkout"]
        repo = Repository(make_engine(pg_url))
        wait_for(lambda: len(repo.checkouts(requested)) == len(requested), 120, "checkouts")

        # the review queue: store-001's NEEDS_REVIEW checkouts only
        page.click("text=Review queue")
        rows = page.locator("#queue tbody tr")
        expect(rows.first).to_be_visible()
        assert set(rows.locator("td:nth-child(3)").all_inner_texts()) == {"store-001"}
        checkout_id = rows.first.get_attribute("data-checkout")
        assert checkout_id
        rows.first.locator("a").click()
        expect(page.get_by_test_id("final-status")).to_have_text("NEEDS_REVIEW")
        expect(page.locator("svg.frame image").first).to_be_attached()
        expect(page.locator("svg.trace polyline").first).to_be_attached()
        shot(page, shots, "review")

        # correct an item (one more of the first line), then approve the corrected checkout
        first = page.locator("#decision input[type=number][name^='qty:']").first
        sku = (first.get_attribute("name") or "")[4:]
        quantity = int(first.input_value())
        first.fill(str(quantity + 1))
        page.fill("#decision input[name=note]", "one more under the bag")
        page.click("#decision button[value=CORRECT]")
        expect(page.get_by_test_id("final-status")).to_have_text("CORRECTED", timeout=60_000)
        page.click("#decision button[value=APPROVE]")
        expect(page.get_by_test_id("final-status")).to_have_text("APPROVED", timeout=60_000)
        expect(page.locator("#trail tbody tr")).to_have_count(2)
        shot(page, shots, "decided")

        # another store's checkout is not there for alice
        other = next(r for r in repo.checkouts(requested) if r.store_id == "store-002")
        answer = page.goto(f"{stack.url}/review/{other.checkout_id}")
        assert answer is not None and answer.status == 404
        browser.close()

    row = next(r for r in repo.checkouts(requested) if r.checkout_id == checkout_id)
    line = next(i for i in row.items if i.sku == sku)
    expected_subtotal = row.subtotal_cents + (
        catalog[sku].price_for(quantity + 1, line.grams / quantity * (quantity + 1))
        - line.line_total_cents
    )
    with repo.engine.connect() as conn:
        final = conn.execute(
            text(
                "SELECT final_status, staff, final_subtotal_cents FROM checkout_final_status "
                "WHERE checkout_id = :c"
            ),
            {"c": checkout_id},
        ).one()
    assert tuple(final) == ("APPROVED", "alice", expected_subtotal)
    assert row.status == "NEEDS_REVIEW"  # the pipeline's row stays as it was
    records = [
        r
        for r, _ in read_topic(settings, settings.topics.checkout_decisions, idle_timeout_s=1)
        if r["checkout_id"] == checkout_id
    ]
    assert [(r["action"], r["final_status"], r["staff"]) for r in records] == [
        ("CORRECT", "CORRECTED", "alice"),
        ("APPROVE", "APPROVED", "alice"),
    ]
    assert records[0]["changes"] == [
        {"sku": sku, "quantity_before": quantity, "quantity_after": quantity + 1}
    ]
    assert records[1]["subtotal_cents"] == expected_subtotal
