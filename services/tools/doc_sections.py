"""Benches that share one markdown file (docs/benchmarks.md) each own a marked section of it:
re-running one bench replaces its section and leaves the others as they are."""

from __future__ import annotations

from pathlib import Path

TITLE = "# Benchmarks\n"


def write_section(doc: Path, name: str, text: str) -> None:
    """Replaces section `name` of `doc` (or appends it); the file starts with `TITLE`."""
    begin, end = f"<!-- bench:{name}:begin -->", f"<!-- bench:{name}:end -->"
    block = f"{begin}\n{text.strip()}\n{end}\n"
    old = doc.read_text() if doc.exists() else TITLE
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :].lstrip("\n")
    elif "<!-- bench:" not in old:
        new = TITLE + "\n" + block  # an older whole-file report: this bench's section replaces it
    else:
        new = old.rstrip() + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(new)
