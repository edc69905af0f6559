"""The chaos verifier's judgement: what it counts as lost, different, re-published, and when
lag recovered."""

from __future__ import annotations

from cartstream.services.tools.chaos.schedule import Fault, Shape
from cartstream.services.tools.chaos.verify import Outcome, Sample, against_targets, verify


def outcome(checkouts: dict[str, tuple[dict[str, int], str]], published: int = 1) -> Outcome:
    return Outcome(
        checkouts=checkouts,
        rows_per_session={sid: 1 for sid in checkouts},
        published={f"co-{sid}": published for sid in checkouts},
        checkout_ids={sid: f"co-{sid}" for sid in checkouts},
    )


REFERENCE = outcome({"s1": ({"A": 2}, "APPROVED"), "s2": ({"B": 1}, "APPROVED")})
KILL = Fault("kill", at_s=10.0, duration_s=2.0)


def samples(*lags: int) -> list[Sample]:
    return [Sample(t_s=11.0 + i, lag=lag, committed=0, persisted=0) for i, lag in enumerate(lags)]


def test_equal_to_the_reference_with_lag_back_to_zero_passes() -> None:
    verdict = verify(["s1", "s2"], REFERENCE, REFERENCE, [KILL], samples(50, 3, 0), [])
    assert verdict.passed and verdict.identical_share == 1.0
    assert verdict.lag_recovery_s[0]["recovered_after_s"] == 1.0  # 0 at 13 s; the kill ended at 12


def test_lag_that_never_returns_to_zero_fails_even_with_every_checkout() -> None:
    verdict = verify(["s1", "s2"], REFERENCE, REFERENCE, [KILL], samples(50, 14_084, 14_084), [])
    assert not verdict.lost and not verdict.lag_recovered and not verdict.passed


def test_a_lost_or_different_checkout_is_counted_and_explained() -> None:
    chaos = outcome({"s1": ({"A": 1, "C": 1}, "APPROVED")}, published=2)
    verdict = verify(["s1", "s2"], REFERENCE, chaos, [KILL], samples(0), [])
    assert verdict.lost == ["s2"] and not verdict.passed
    (difference,) = verdict.differences
    assert difference["missing"] == {"A": 1} and difference["extra"] == {"C": 1}
    assert verdict.republication_rate == 1.0  # at-least-once: published twice


def test_the_targets_table_says_which_bound_a_passing_run_missed() -> None:
    late = [Sample(t_s=t, lag=lag, committed=0, persisted=0) for t, lag in ((20, 9), (90, 0))]
    verdict = verify(["s1", "s2"], REFERENCE, REFERENCE, [KILL], late, [])
    assert verdict.passed  # nothing lost, lag back to 0 in the end ...
    shape = Shape(kills=20, broker_restarts=0)
    rows = {
        target: (measured, met)
        for target, measured, met in against_targets(verdict, 210, shape, 100_000)
    }
    assert rows["lag back to 0 within 60 s of each fault"] == (
        "0 of 1 faults (slowest: 78.0 s)",
        False,
    )
    assert rows["1 000 sessions"] == ("210", False) and rows["one broker restart"][1] is False
    assert rows["≥ 20 worker kills"][1] and rows["0 checkouts lost"][1]
    assert rows["≥ 99.5 % of baskets identical"] == ("100.00%", True)


def test_a_new_report_keeps_the_hand_written_sections_below_it() -> None:
    from cartstream.services.tools.chaos.report import hand_written

    page = "# Reliability\n\n| a | b |\n\n## Faults\n\nx\n\n## Split (hand-written, 2026)\n\ny\n"
    assert hand_written(page) == "## Split (hand-written, 2026)\n\ny\n"
    assert hand_written("# Reliability\n\n## Faults\n") == ""


def test_a_new_report_keeps_the_status_quote_under_the_title() -> None:
    from cartstream.services.tools.chaos.report import status_note

    page = "# Reliability\n\n> **Status (today).** It passed,\n> mostly.\n\nProduced by x\n"
    assert status_note(page) == "> **Status (today).** It passed,\n> mostly.\n"
    assert status_note("# Reliability\n\n> a quote\n\nProduced by x\n") == ""
