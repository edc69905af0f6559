"""Scoring a run against the simulator's ground truth.

- **cAcc** (checkout accuracy, as in the RPC benchmark): the share of requested checkouts whose
  every SKU quantity is exactly right. A checkout that never arrived counts as wrong.
- **ACD** (average count error per checkout): sum over SKUs of |predicted - true| units, averaged
  over requested checkouts (a missing checkout counts every true unit as an error).
- **precision / recall of basket changes**: a published ADD/REMOVE/UNKNOWN change is a true
  positive when it matches a true hand movement of the same session with the same action, SKU and
  quantity, starting within `MATCH_WINDOW_MS` of it (each movement matches once). Abandoned
  sessions count here too.
- **per scenario**: the same for the sessions that contain each hard case the simulator tags.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from cartstream.schemas.records import STEP_ACTIONS

SCENARIOS = ("lookalike", "equal_weight", "multi_item", "removal", "produce", "occlusion")
MATCH_WINDOW_MS = 1500
Basket = Mapping[str, int]


def count_error(predicted: Basket, true: Basket) -> int:
    return sum(abs(predicted.get(s, 0) - true.get(s, 0)) for s in set(predicted) | set(true))


def _checkout_scores(
    sessions: Iterable[str], truth: Mapping[str, Mapping[str, Any]], baskets: Mapping[str, Basket]
) -> dict[str, Any]:
    ids = [sid for sid in sessions if truth[sid]["outcome"] == "checkout"]
    correct = errors = 0
    for sid in ids:
        true = truth[sid]["basket"]
        got = baskets.get(sid)
        correct += got is not None and dict(got) == dict(true)
        errors += count_error(got or {}, true)
    n = len(ids)
    return {
        "checkouts": n,
        "cacc": round(correct / n, 4) if n else None,
        "acd": round(errors / n, 4) if n else None,
    }


def _match_changes(
    truth: Mapping[str, Mapping[str, Any]], changes: Iterable[Mapping[str, Any]]
) -> tuple[int, int, int]:
    """(true positives, predicted changes, true movements) over the sessions in `truth`."""
    open_actions: dict[str, list[dict[str, Any]]] = {
        sid: [{**a, "t_ms": t["start_ms"] + a["at_s"] * 1000.0} for a in t["actions"]]
        for sid, t in truth.items()
    }
    true_total = sum(len(v) for v in open_actions.values())
    predicted = hits = 0
    for c in changes:
        if c["action"] not in STEP_ACTIONS or c["session_id"] not in truth:
            continue
        predicted += 1
        pending = open_actions[c["session_id"]]
        for i, a in enumerate(pending):
            if (a["action"], a["sku"], a["quantity"]) == (
                c["action"],
                c["sku"],
                c["quantity"],
            ) and abs(a["t_ms"] - c["step_start_ms"]) <= MATCH_WINDOW_MS:
                hits += 1
                del pending[i]
                break
    return hits, predicted, true_total


def score_run(
    truth: Mapping[str, Mapping[str, Any]],
    baskets: Mapping[str, Basket],
    changes: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Every accuracy figure of a run: `baskets` maps session id -> checked-out SKU quantities."""
    overall = _checkout_scores(truth, truth, baskets)
    hits, predicted, true_total = _match_changes(truth, changes)
    by_tag: dict[str, list[str]] = defaultdict(list)
    for sid, t in truth.items():
        for tag in t.get("scenarios", []):
            by_tag[tag].append(sid)
        if not t.get("scenarios"):
            by_tag["plain"].append(sid)
    per_scenario = {}
    for tag in (*SCENARIOS, "plain"):
        sids = by_tag.get(tag, [])
        sub = {sid: truth[sid] for sid in sids}
        tag_hits, tag_pred, tag_true = _match_changes(sub, changes)
        per_scenario[tag] = {
            "sessions": len(sids),
            **_checkout_scores(sids, truth, baskets),
            "precision": round(tag_hits / tag_pred, 4) if tag_pred else None,
            "recall": round(tag_hits / tag_true, 4) if tag_true else None,
        }
    return {
        "sessions": len(truth),
        **overall,
        "precision": round(hits / predicted, 4) if predicted else None,
        "recall": round(hits / true_total, 4) if true_total else None,
        "changes_predicted": predicted,
        "changes_true": true_total,
        "per_scenario": per_scenario,
    }


def score_honest(
    truth: Mapping[str, Mapping[str, Any]], baskets: Mapping[str, Basket]
) -> dict[str, Any]:
    """cAcc and ACD over the sessions with nothing injected: what a shopper is billed for. (An
    injected case, a hidden item say, cannot be seen by design; it is scored as an alert.)"""
    return _checkout_scores(
        [sid for sid, t in truth.items() if not t.get("anomaly")], truth, baskets
    )


def score_anomalies(
    truth: Mapping[str, Mapping[str, Any]], anomalies: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """Per kind, at the session level: a session injected with kind K is a positive for K; a
    session with at least one K alert is predicted K. Alerts on sessions with nothing injected
    are false alarms (counted per 1 000 such sessions)."""
    raised: dict[str, set[str]] = defaultdict(set)  # kind -> sessions
    alerts_on_honest = 0
    honest = {sid for sid, t in truth.items() if not t.get("anomaly")}
    false_kinds: dict[str, int] = defaultdict(int)
    for a in anomalies:
        sid = a["session_id"]
        if sid not in truth:
            continue
        raised[a["kind"]].add(sid)
        if sid in honest:
            alerts_on_honest += 1
            false_kinds[a["kind"]] += 1
    labelled: dict[str, set[str]] = defaultdict(set)
    for sid, t in truth.items():
        if t.get("anomaly"):
            labelled[t["anomaly"]].add(sid)
    caught = sum(len(raised[kind] & sids) for kind, sids in labelled.items())
    per_kind = {}
    for kind in sorted(set(labelled) | set(raised)):
        hits = len(raised[kind] & labelled[kind])
        per_kind[kind] = {
            "support": len(labelled[kind]),
            "raised": len(raised[kind]),
            "precision": round(hits / len(raised[kind]), 4) if raised[kind] else None,
            "recall": round(hits / len(labelled[kind]), 4) if labelled[kind] else None,
        }
    return {
        "sessions": len(truth),
        "honest_sessions": len(honest),
        "injected": len(truth) - len(honest),  # sessions with a case injected
        "caught": caught,  # ... that raised an alert of the injected kind
        "per_kind": per_kind,
        "false_alarms": alerts_on_honest,
        "false_alarms_per_1000": round(1000 * alerts_on_honest / len(honest), 2)
        if honest
        else None,
        "false_alarms_by_kind": dict(sorted(false_kinds.items())),
    }
