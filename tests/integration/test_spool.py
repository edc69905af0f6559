from __future__ import annotations

from pathlib import Path

from cartstream.services.carts.spool import Spool, SpoolRecord


def rec(i: int) -> SpoolRecord:
    return SpoolRecord("cart.weights", b"cart-%d" % (i % 3), b"v" * i, (("event-id", b"%d" % i),))


def test_survives_reopen_and_resumes_at_the_cursor(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(10):
        spool.append(rec(i))
    got = spool.read(4)
    assert [r for _, r in got] == [rec(i) for i in range(4)]
    spool.ack(got[-1][0])
    spool.close()
    again = Spool(tmp_path)
    assert again.pending() == 6
    assert [r for _, r in again.read(100)] == [rec(i) for i in range(4, 10)]


def test_torn_tail_is_cut(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(3):
        spool.append(rec(i))
    spool.close()
    segment = sorted(tmp_path.glob("seg-*.log"))[-1]
    with segment.open("ab") as fh:
        fh.write(b"\x40\x00\x00\x00\x00\x00\x00\x00half-written")
    reopened = Spool(tmp_path)
    assert reopened.pending() == 3
    reopened.append(rec(3))
    assert [r for _, r in reopened.read(10)] == [rec(i) for i in range(4)]


def test_acknowledged_segments_are_deleted(tmp_path: Path, monkeypatch: object) -> None:
    import cartstream.services.carts.spool as spool_module

    spool_module.SEGMENT_BYTES = 2048  # type: ignore[misc]
    try:
        spool = Spool(tmp_path)
        for _i in range(60):
            spool.append(rec(100))
        assert len(list(tmp_path.glob("seg-*.log"))) > 3
        spool.ack(59)
        assert len(list(tmp_path.glob("seg-*.log"))) == 1
        assert spool.pending() == 0
    finally:
        spool_module.SEGMENT_BYTES = 16 * 1024 * 1024  # type: ignore[misc]
