"""The console on the real broker and Postgres with two workers: live baskets routed to the
cart's owner, store isolation, CSRF, staff decisions through checkout.decisions into Postgres,
the cart screen's pushes, and the API checked against its OpenAPI schema (schemathesis)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from click.testing import CliRunner
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text

from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.models.shopper import ShopperProfile
from cartstream.services.carts.cart_client import CartClient
from cartstream.services.carts.screen import CartScreen, follow_fleet, settle_to_screen
from cartstream.services.carts.simulate import SimConfig, plan_carts, read_truth, simulate
from cartstream.services.cli.main import cli
from cartstream.services.kafka.tail import read_topic
from cartstream.services.storage.repository import Repository, make_engine
from tests.console_stack import PASSWORD, ConsoleStack, console_stack, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Run:
    stack: ConsoleStack
    repo: Repository
    requested: list[str]
    screens: dict[str, CartScreen]
    carts: dict[str, str]  # cart id -> store id


@pytest.fixture(scope="module")
def run(
    broker_settings: Callable[..., Settings],
    pg_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    catalog: Catalog,
) -> Iterator[Run]:
    tmp_path: Path = tmp_path_factory.mktemp("console")
    settings = broker_settings(database_url=pg_url)
    config = SimConfig(
        carts=4,
        sessions=2,
        seed=18,
        run_id=uuid.uuid4().hex[:6],
        profile=ShopperProfile(anomaly_rate=0.5, abandon_rate=0.0, mean_items=4.0),
    )
    carts = {p.cart_id: p.store_id for p in plan_carts(config, catalog)}
    with console_stack(settings, pg_url, tmp_path) as stack:
        screens = {s.cart_id: s for s in follow_fleet(stack.url, sorted(carts), settings)}
        for screen in screens.values():
            assert screen.connected.is_set()
        client = CartClient(settings, tmp_path / "spool")
        simulate(config, catalog, settings.topics, client, tmp_path / "truth.jsonl")
        assert client.close(60)
        truth = read_truth(tmp_path / "truth.jsonl")
        requested = [s for s, t in truth.items() if t["outcome"] == "checkout"]
        repo = Repository(make_engine(pg_url))
        wait_for(lambda: len(repo.checkouts(requested)) == len(requested), 120, "checkouts")
        yield Run(stack, repo, requested, screens, carts)
        for screen in screens.values():
            screen.signal_stop()
        for screen in screens.values():
            screen.stop(wait_s=8)  # a ping comes every 5 s
            assert not screen.following, f"{screen.cart_id}: the screen did not stop"


def test_the_live_basket_is_the_stream_state_from_any_worker(run: Run) -> None:
    """Each worker answers for every cart (Faust routes to the partition's owner), and the
    basket of a cart's last session equals its persisted checkout."""
    rows = {r.cart_id: r for r in run.repo.checkouts(run.requested)}
    for cart_id, row in rows.items():
        answers = [
            httpx.get(f"{url}/api/carts/{cart_id}/basket", timeout=10).json()
            for url in run.stack.worker_urls
        ]
        assert answers[0] == answers[1]
        live = answers[0]
        if live["session_id"] != row.session_id:
            continue  # the cart's last session was another one
        assert {i["sku"]: i["quantity"] for i in live["items"]} == {
            i.sku: i.quantity for i in row.items
        }
        assert live["status"] == "checked_out"
        assert all(0.0 <= c["confidence"] <= 1.0 for c in live["changes"])
    assert rows


def test_store_staff_see_only_their_store(run: Run) -> None:
    alice = run.stack.login("alice")  # store-001
    rows = run.repo.checkouts(run.requested)
    own = [r for r in rows if r.store_id == "store-001"]
    other = [r for r in rows if r.store_id == "store-002"]
    assert own and other
    for r in other:
        assert alice.get(f"/api/checkouts/{r.checkout_id}").status_code == 404
        assert alice.get(f"/api/carts/{r.cart_id}/basket").status_code == 404
        assert alice.get(f"/review/{r.checkout_id}").status_code == 404
        decision = {"decision_id": uuid.uuid4().hex, "action": "APPROVE"}
        answer = alice.post(f"/api/checkouts/{r.checkout_id}/decision", json=decision)
        assert answer.status_code == 404
    for r in own:
        assert alice.get(f"/api/checkouts/{r.checkout_id}").status_code == 200
        assert alice.get(f"/api/carts/{r.cart_id}/basket").status_code == 200
    assert {e["store_id"] for e in alice.get("/api/review").json()} <= {"store-001"}
    assert {c["store_id"] for c in alice.get("/api/carts").json()} == {"store-001"}
    page = alice.get("/review").text
    assert all(r.checkout_id[:8] not in page for r in other)
    admin = run.stack.login("root")
    assert {c["store_id"] for c in admin.get("/api/carts").json()} == {"store-001", "store-002"}


def test_without_a_login_or_csrf_token_nothing_is_read_or_changed(run: Run) -> None:
    row = run.repo.checkouts(run.requested)[0]
    anonymous = httpx.Client(base_url=run.stack.url)
    assert anonymous.get(f"/api/checkouts/{row.checkout_id}").status_code == 401
    page = anonymous.get("/review", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    client = run.stack.login("root")
    del client.headers["X-CSRFToken"]
    decision = {"decision_id": uuid.uuid4().hex, "action": "REJECT"}
    answer = client.post(f"/api/checkouts/{row.checkout_id}/decision", json=decision)
    assert answer.status_code == 403
    wrong = client.post(
        "/login", data={"username": "root", "password": "wrong"}, headers={"X-CSRFToken": "x"}
    )
    assert wrong.status_code == 403  # the token does not match the cookie


def decisions_on_topic(settings: Settings, decision_id: str) -> list[dict[str, Any]]:
    topic = settings.topics.checkout_decisions
    return [
        r
        for r, _ in read_topic(settings, topic, idle_timeout_s=1)
        if r["decision_id"] == decision_id
    ]


def test_a_correction_reaches_the_topic_and_postgres_with_its_audit_trail(
    run: Run, catalog: Catalog
) -> None:
    queue = run.stack.login("root").get("/api/review").json()
    assert queue, "the injected cases left nothing to review"
    entry = queue[0]
    store_user = "alice" if entry["store_id"] == "store-001" else "bob"
    client = run.stack.login(store_user)
    before = client.get(f"/api/checkouts/{entry['checkout_id']}").json()
    sku = next(s.sku for s in catalog.skus if not s.sold_by_weight)
    had = {i["sku"]: i["quantity"] for i in before["items"]}
    decision_id = uuid.uuid4().hex
    body = {
        "decision_id": decision_id,
        "action": "CORRECT",
        "quantities": {sku: had.get(sku, 0) + 1},
        "note": "one more found under the bag",
    }
    answer = client.post(f"/api/checkouts/{entry['checkout_id']}/decision", json=body)
    assert answer.status_code == 202, answer.text
    again = client.post(f"/api/checkouts/{entry['checkout_id']}/decision", json=body)
    assert again.status_code == 202  # a resubmitted form: the same decision
    wait_for(lambda: bool(decisions_on_topic(run.stack.settings, decision_id)), 30, "record")
    record = decisions_on_topic(run.stack.settings, decision_id)[0]
    assert record["final_status"] == "CORRECTED" and record["staff"] == store_user
    assert record["changes"] == [
        {"sku": sku, "quantity_before": had.get(sku, 0), "quantity_after": had.get(sku, 0) + 1}
    ]
    assert record["subtotal_cents"] == before["subtotal_cents"] + catalog[sku].price_cents
    after: dict[str, Any] = {}

    def persisted() -> bool:
        after.update(client.get(f"/api/checkouts/{entry['checkout_id']}").json())
        return after["final_status"] == "CORRECTED"

    wait_for(persisted, 60, "the decision in Postgres")
    assert [d["decision_id"] for d in after["decisions"]] == [decision_id]  # once
    assert after["decisions"][0]["staff"] == store_user
    assert after["status"] == "NEEDS_REVIEW"  # the pipeline's own row is never rewritten
    with run.repo.engine.connect() as conn:
        final = conn.execute(
            text(
                "SELECT final_status, final_subtotal_cents FROM checkout_final_status "
                "WHERE checkout_id = :c"
            ),
            {"c": entry["checkout_id"]},
        ).one()
    assert tuple(final) == ("CORRECTED", record["subtotal_cents"])
    assert entry["checkout_id"] not in {e["checkout_id"] for e in client.get("/api/review").json()}
    shown = CliRunner().invoke(
        cli,
        [
            "--bootstrap",
            run.stack.settings.kafka.bootstrap_servers,
            "checkouts",
            "tail",
            "--decisions",
            "--idle-timeout",
            "2",
        ],
    )
    assert shown.exit_code == 0, shown.output
    assert f"{entry['checkout_id']}" in shown.output and "CORRECT: NEEDS_REVIEW → CORRECTED" in (
        shown.output
    )


def test_each_cart_screen_got_its_own_basket_changes_pushed(run: Run) -> None:
    for cart_id, screen in run.screens.items():
        changes = screen.changes()
        assert changes, f"{cart_id}: nothing pushed"
        assert {u.data["cart_id"] for u in screen.updates} == {cart_id}
        assert all(u.latency_ms is not None for u in changes)
        assert any(u.event == "checkout" for u in screen.updates)
    shown, p50, p99 = settle_to_screen(list(run.screens.values()))
    assert shown > 0 and p50 is not None and p99 is not None and 0 < p50 <= p99


@pytest.fixture(scope="module")
def admin_session(run: Run) -> requests.Session:
    """requests (what schemathesis calls with) logged in as the admin, CSRF header set."""
    session = requests.Session()
    session.get(f"{run.stack.url}/login", timeout=10)
    session.headers["X-CSRFToken"] = session.cookies["csrftoken"]
    answer = session.post(
        f"{run.stack.url}/login",
        data={"username": "root", "password": PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303
    return session


def test_the_api_keeps_to_its_openapi_schema(run: Run, admin_session: requests.Session) -> None:
    """Schemathesis against the running console, logged in as the admin with the CSRF header:
    for generated requests to every operation, every answer has a documented status and a
    body of the documented shape, and no request makes the server fail (5xx)."""
    schema = schemathesis.openapi.from_url(f"{run.stack.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/api/carts/{cart_id}/basket",
        "/api/checkouts/{checkout_id}/decision",
        "/api/labels",
    }
    for op in operations:

        @given(case=op.as_strategy())
        @hypothesis_settings(
            max_examples=30, deadline=None, suppress_health_check=list(HealthCheck)
        )
        def check(case: Any) -> None:
            case.call_and_validate(session=admin_session)

        check()


def test_a_verified_label_is_what_train_detector_extra_reads(
    run: Run, catalog: Catalog, tmp_path: Path
) -> None:
    from cartstream.models.dataset import load_labelled
    from cartstream.services.storage.reviews import ReviewStore
    from cartstream.services.tools.review import export_labels

    gateway = run.stack.deps.gateway
    assert gateway is not None
    wait_for(lambda: bool(gateway.unsure_frames(None)), 30, "unsure frames")
    frames = gateway.unsure_frames(None)
    boxed = next(f for f in frames if f["boxes"])
    owner = "alice" if boxed["store_id"] == "store-001" else "bob"
    stranger = "bob" if owner == "alice" else "alice"
    body = {"frame_event_id": boxed["frame_event_id"], "verdict": "CONFIRMED"}
    assert run.stack.login(stranger).post("/api/labels", json=body).status_code == 404
    client = run.stack.login(owner)
    bad = client.post("/api/labels", json={**body, "verdict": "CORRECTED", "sku": "NOPE"})
    assert bad.status_code == 422
    saved = client.post("/api/labels", json=body)
    assert saved.status_code == 201, saved.text
    best = max(boxed["boxes"], key=lambda b: b["score"])["sku"]
    assert saved.json()["sku"] == best
    assert boxed["frame_event_id"] not in client.get("/labels").text  # labelled: off the queue
    report = export_labels(ReviewStore(run.repo.engine), tmp_path / "labels")
    assert report.frames == 1
    images, boxes = load_labelled(tmp_path / "labels", catalog)
    assert len(images) == 1 and [catalog.skus[b[0]].sku for b in boxes[0]] == [best]


def test_repeated_wrong_passwords_lock_the_name_out_for_a_while(run: Run) -> None:
    client = httpx.Client(base_url=run.stack.url)
    client.get("/login")
    client.headers["X-CSRFToken"] = client.cookies["csrftoken"]
    answers = [
        client.post("/login", data={"username": "bob", "password": f"guess {n}"}).status_code
        for n in range(6)
    ]
    assert answers == [401] * 5 + [429]
    right = client.post("/login", data={"username": "bob", "password": PASSWORD})
    assert right.status_code == 429  # the right password too, until the window moves on
    assert run.stack.login("alice")  # other names are not locked out
