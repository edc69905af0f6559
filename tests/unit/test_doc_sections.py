from pathlib import Path

from cartstream.services.tools.doc_sections import TITLE, write_section


def test_each_bench_replaces_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\nan old whole-file report\n")
    write_section(doc, "detector", "## Detector\n\nv1")
    write_section(doc, "pipeline", "## Pipeline\n\np1")
    write_section(doc, "detector", "## Detector\n\nv2")
    text = doc.read_text()
    assert text.startswith(TITLE) and "old whole-file" not in text
    assert "v2" in text and "v1" not in text and "p1" in text
    assert text.index("## Detector") < text.index("## Pipeline")
    assert text.count("<!-- bench:detector:begin -->") == 1
