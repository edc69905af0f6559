"""The evaluator's arithmetic on hand-built runs."""

from __future__ import annotations

from typing import Any

from cartstream.services.tools.scoring import score_run


def truth(sid: str, basket: dict[str, int], actions: list[Any], outcome: str = "checkout") -> Any:
    return {
        "session_id": sid,
        "start_ms": 0,
        "outcome": outcome,
        "basket": basket,
        "scenarios": ["removal"] if any(a[0] == "REMOVE" for a in actions) else [],
        "actions": [
            {"at_s": t, "action": a, "sku": s, "quantity": q, "grams": 1.0}
            for a, s, q, t in actions
        ],
    }


def change(sid: str, action: str, sku: str | None, q: int, at_ms: int) -> dict[str, Any]:
    return {"session_id": sid, "action": action, "sku": sku, "quantity": q, "step_start_ms": at_ms}


def test_scores_a_small_run() -> None:
    runs = {
        "a": truth("a", {"X": 2}, [("ADD", "X", 2, 1.0)]),
        "b": truth(
            "b", {"Y": 1}, [("ADD", "Y", 1, 1.0), ("ADD", "Z", 1, 5.0), ("REMOVE", "Z", 1, 9.0)]
        ),
        "c": truth("c", {}, [("ADD", "X", 1, 1.0)], outcome="abandoned"),
    }
    changes = [
        change("a", "ADD", "X", 2, 1100),
        change("b", "ADD", "Y", 1, 900),
        change("b", "ADD", "W", 1, 5000),  # wrong SKU
        change("b", "REMOVE", "Z", 1, 9000),  # right movement, wrong basket anyway
        change("b", "ADD", "Y", 1, 30_000),  # no such movement
        change("c", "ADD", "X", 1, 1000),
        change("c", "CHECKOUT_REQUESTED", None, 0, 2000),  # markers are not changes
    ]
    baskets = {"a": {"X": 2}, "b": {"Y": 2, "W": 1}}
    s = score_run(runs, baskets, changes)
    assert (s["sessions"], s["checkouts"]) == (3, 2)
    assert s["cacc"] == 0.5
    assert s["acd"] == (0 + 2) / 2  # b: one Y too many, one W that is not there
    assert s["precision"] == round(4 / 6, 4)
    assert s["recall"] == round(4 / 5, 4)
    assert s["per_scenario"]["removal"]["cacc"] == 0.0
    assert s["per_scenario"]["plain"]["cacc"] == 1.0


def test_a_missing_checkout_counts_every_unit_wrong() -> None:
    runs = {"a": truth("a", {"X": 3}, [("ADD", "X", 3, 1.0)])}
    s = score_run(runs, {}, [])
    assert (s["cacc"], s["acd"], s["precision"], s["recall"]) == (0.0, 3.0, None, 0.0)
