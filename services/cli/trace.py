"""`cartstream trace CHECKOUT_ID` / `--cart CART_ID`: a checkout's span tree from the span file."""

from __future__ import annotations

from pathlib import Path

import click

from cartstream.core.settings import Settings
from cartstream.core.spanfile import read_spans, span_files
from cartstream.exceptions import CartstreamError
from cartstream.services.observability.tracetree import MAX_LINKED, SpanIndex, render_checkout


@click.command("trace")
@click.argument("checkout_id", required=False)
@click.option("--cart", "cart_id", default=None, help="Show the cart's latest checkouts.")
@click.option(
    "--spans",
    "span_paths",
    type=click.Path(path_type=Path, dir_okay=False),
    multiple=True,
    help="Span file (repeatable). Default: CARTSTREAM_OTEL_JSONL_PATH.",
)
@click.option("--last", type=int, default=1, show_default=True, help="With --cart: how many.")
@click.option(
    "--links",
    "max_linked",
    type=int,
    default=MAX_LINKED,
    show_default=True,
    help="Frames and packets shown per basket change.",
)
@click.pass_context
def trace(
    ctx: click.Context,
    checkout_id: str | None,
    cart_id: str | None,
    span_paths: tuple[Path, ...],
    last: int,
    max_linked: int,
) -> None:
    """Every span from the cart's frames and weight packets to a checkout's row."""
    if bool(checkout_id) == bool(cart_id):
        raise click.UsageError("give a CHECKOUT_ID or --cart CART_ID (one of them)")
    settings: Settings = ctx.obj["settings"]
    paths = [p for given in span_paths for p in span_files(given)] or span_files(
        settings.otel_jsonl_path
    )
    if not paths:
        where = ", ".join(map(str, span_paths)) or str(settings.otel_jsonl_path)
        raise CartstreamError(
            f"no span file at {where}: workers write one when no collector is configured "
            "(CARTSTREAM_OTEL_EXPORTER=auto or jsonl); point --spans at it"
        )
    index = SpanIndex.build(read_spans(paths))
    ids = [checkout_id] if checkout_id else index.checkouts_of_cart(str(cart_id))[:last]
    if not ids:
        raise CartstreamError(f"no checkout of cart {cart_id} in {', '.join(map(str, paths))}")
    for n, checkout in enumerate(ids):
        try:
            text = render_checkout(index, str(checkout), max_linked)
        except KeyError:
            raise CartstreamError(
                f"checkout {checkout} is not in {', '.join(map(str, paths))} (spans are written "
                "about a second after they end; a sampled-out trace has none)"
            ) from None
        click.echo(("\n" if n else "") + text)
