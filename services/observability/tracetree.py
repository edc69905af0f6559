"""`cartstream trace`: a checkout's spans as a tree, with what it links to, in 80 columns.

The checkout's own trace runs from the cart's checkout request through reason, reconcile and
persist to the Postgres write. Its `send checkouts` span links to every basket change of the
session; each change's `send basket.changes` span lives in the trace of the weight packet that
completed its step and links to the frames it looked at and the step's other packets. The
rendering follows those links two levels deep, so every contributing frame and weight packet
shows up with where it came from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from cartstream.core.spanfile import SpanRecord

WIDTH = 80
NAME_WIDTH = 48
MAX_LINKED = 12  # linked frames/packets shown per basket change (the rest are counted)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class SpanIndex:
    spans: dict[tuple[str, str], SpanRecord] = field(default_factory=dict)
    traces: dict[str, list[SpanRecord]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def build(cls, spans: Iterable[SpanRecord]) -> SpanIndex:
        index = cls()
        for span in spans:
            key = (span.trace_id, span.span_id)
            if key in index.spans:  # the same span exported twice (a retried export)
                continue
            index.spans[key] = span
            index.traces[span.trace_id].append(span)
        for members in index.traces.values():
            members.sort(key=lambda s: s.start_ns)
            by_id = {s.span_id: s for s in members}
            for s in members:
                if s.parent_id in by_id:
                    by_id[s.parent_id].children.append(s)
        return index

    def get(self, trace_id: str, span_id: str) -> SpanRecord | None:
        return self.spans.get((trace_id, span_id))

    def checkout_span(self, checkout_id: str) -> SpanRecord | None:
        """The span that published the checkout (or, failing that, any span naming it)."""
        named = [
            s
            for s in self.spans.values()
            if s.attributes.get("cartstream.checkout_id") == checkout_id
        ]
        named.sort(key=lambda s: (s.name != "send checkouts", s.start_ns))
        return named[0] if named else None

    def checkouts_of_cart(self, cart_id: str) -> list[str]:
        """The cart's checkout ids, newest first."""
        seen: dict[str, int] = {}
        for s in self.spans.values():
            checkout = s.attributes.get("cartstream.checkout_id")
            if checkout and s.attributes.get("cartstream.cart_id") == cart_id:
                seen[str(checkout)] = max(seen.get(str(checkout), 0), s.start_ns)
        return sorted(seen, key=lambda c: -seen[c])

    def root_of(self, span: SpanRecord) -> SpanRecord:
        while span.parent_id is not None:
            parent = self.spans.get((span.trace_id, span.parent_id))
            if parent is None:  # its parent is in another process's file, or was not kept
                break
            span = parent
        return span


class TreeRenderer:
    def __init__(self, index: SpanIndex, origin_ns: int) -> None:
        self.index = index
        self.origin_ns = origin_ns
        self.lines: list[str] = []

    def row(self, prefix: str, label: str, span: SpanRecord | None) -> None:
        name = _short(prefix + label, NAME_WIDTH)
        if span is None:
            self.lines.append(name)
            return
        offset = (span.start_ns - self.origin_ns) / 1e9
        took = span.duration_ms
        took_text = f"{took:.1f}ms" if took < 1000 else f"{took / 1000:.2f}s"
        stage = _short(span.stage.removeprefix("cartstream-"), 9)
        self.lines.append(f"{name:<{NAME_WIDTH}} {stage:<9} {offset:>+9.3f}s {took_text:>9}")
        if span.failed:
            self.lines.append(
                _short(f"{' ' * len(prefix)}✗ {span.status_message or 'error'}", WIDTH)
            )

    def tree(self, span: SpanRecord, prefix: str = "", last: bool = True, top: bool = True) -> None:
        glyph = "" if top else ("└─ " if last else "├─ ")
        self.row(prefix + glyph, label(span), span)
        child_prefix = prefix + ("" if top else ("   " if last else "│  "))
        for i, child in enumerate(span.children):
            self.tree(child, child_prefix, i == len(span.children) - 1, top=False)


def label(span: SpanRecord) -> str:
    """A span's name, with what its record was when that says more than the name."""
    a = span.attributes
    text = span.name
    if span.name in ("send cart.frames", "send cart.weights"):
        text = f"{span.name} {origin(span)}"
    elif "cartstream.action" in a and span.kind == "PRODUCER":
        sku = a.get("cartstream.sku")
        text = f"{span.name} {a['cartstream.action']}" + (
            f" {sku} x{a.get('cartstream.quantity', 1)}" if sku else ""
        )
    elif "messaging.batch.message_count" in a:
        text = f"{span.name} (batch of {a['messaging.batch.message_count']})"
    if span.links:
        text += f" ⇢{len(span.links)}"
    return text


def origin(span: SpanRecord) -> str:
    """What a cart's produce span sent, in a few words."""
    a = span.attributes
    if span.name == "send cart.frames":
        return f"cam {a.get('cartstream.camera_id', '?')} #{a.get('cartstream.sequence', '?')}"
    if span.name == "send cart.weights":
        return f"#{a.get('cartstream.sequence', '?')}"
    return span.name


def _linked_summary(index: SpanIndex, span: SpanRecord) -> str:
    """One line for a frame or packet a change links to: its origin at the cart and path."""
    text = "frame " + origin(index.root_of(span)) + ", detected"
    for t, s in span.links:
        batch = index.get(t, s)
        if batch is not None:
            size = batch.attributes.get("messaging.batch.message_count", "?")
            text += f" in a batch of {size}"
            break
    return text


def render_checkout(index: SpanIndex, checkout_id: str, max_linked: int = MAX_LINKED) -> str:
    found = index.checkout_span(checkout_id)
    if found is None:
        raise KeyError(checkout_id)
    root = index.root_of(found)
    r = TreeRenderer(index, root.start_ns)
    a = found.attributes
    members = index.traces[found.trace_id]
    end = max(s.end_ns for s in members)
    r.lines += [
        _short(
            f"checkout {checkout_id}  cart {a.get('cartstream.cart_id', '?')}"
            f"  {a.get('cartstream.status', '')}",
            WIDTH,
        ),
        _short(
            f"trace {found.trace_id}  {len(members)} spans, "
            f"{(end - root.start_ns) / 1e9:.3f} s end to end",
            WIDTH,
        ),
        "",
        f"{'span':<{NAME_WIDTH}} {'stage':<9} {'start':>10} {'took':>9}",
    ]
    r.tree(root)
    for source in members:
        if not source.links:
            continue
        r.lines += ["", _short(f"⇢ {source.name} links {len(source.links)} spans:", WIDTH)]
        for n, (trace_id, span_id) in enumerate(source.links, 1):
            linked = index.get(trace_id, span_id)
            if linked is None:
                r.lines.append(f"[{n}] (not in the span file: trace {trace_id[:16]}…)")
            elif trace_id == found.trace_id:
                r.lines.append(_short(f"[{n}] {label(linked)} (in the tree above)", WIDTH))
            else:
                r.lines.append(f"[{n}]")
                r.tree(index.root_of(linked))
                _render_second_level(r, index, linked, max_linked)
    errors = [s for s in index.spans.values() if s.failed and s.trace_id == found.trace_id]
    r.lines += ["", f"errors: {len(errors)}" if errors else "errors: none"]
    return "\n".join(r.lines)


def _packet_range(roots: list[SpanRecord]) -> str:
    seqs = sorted(int(r.attributes.get("cartstream.sequence", -1)) for r in roots)
    runs: list[str] = []
    first = prev = seqs[0]
    for n in [*seqs[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        runs.append(f"#{first}" if first == prev else f"#{first}-{prev}")
        if n is not None:
            first = prev = n
    return ", ".join(runs)


def _render_second_level(
    r: TreeRenderer, index: SpanIndex, linked: SpanRecord, max_linked: int
) -> None:
    """What a basket change links to: its step's other weight packets (one line) and each
    frame it looked at, from the cart through its detection batch."""
    packets: list[SpanRecord] = []
    frames: list[SpanRecord] = []
    missing = 0
    for trace_id, span_id in linked.links:
        target = index.get(trace_id, span_id)
        if target is None:
            missing += 1
        elif index.root_of(target).name == "send cart.weights":
            packets.append(index.root_of(target))
        else:
            frames.append(target)
    if packets:
        packets.sort(key=lambda s: s.start_ns)
        text = f"send cart.weights {_packet_range(packets)} ({len(packets)} more packets)"
        r.row("    ⇢ ", text, packets[0])
    for target in frames[:max_linked]:
        r.row("    ⇢ ", _linked_summary(index, target), index.root_of(target))
    if len(frames) > max_linked:
        r.row("    ⇢ ", f"… and {len(frames) - max_linked} more frames", None)
    if missing:
        r.row("    ⇢ ", f"{missing} linked spans not in the span file", None)
