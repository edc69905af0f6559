from pathlib import Path

from cartstream.services.tools.load.profile import inclusive, summarize


def test_samples_are_summed_by_self_and_inclusive_time(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "thread (0x1);main (w.py:1);handle (r.py:5);encode (c.py:9) 6\n"
        "thread (0x1);main (w.py:1);handle (r.py:5) 3\n"
        "thread (0x2);poll (k.py:2) 1\n"
        "garbage line\n"
    )
    hot = {h.function: h for h in summarize(raw)}
    assert hot["encode (c.py:9)"].self_share == 0.6
    assert hot["handle (r.py:5)"].self_share == 0.3 and hot["handle (r.py:5)"].total_share == 0.9
    assert "main (w.py:1)" not in hot  # never on top
    suspects = {"codec": ("c.py",), "io": ("k.py", "w.py"), "absent": ("zz",)}
    assert inclusive(raw, suspects) == {"codec": 0.6, "io": 1.0, "absent": 0.0}
