"""`cartstream review ...`: the labelling side of the review loop."""

from __future__ import annotations

from pathlib import Path

import click

from cartstream.services.cli.context import cli_settings


@click.group()
def review() -> None:
    """Alerts and unsure decisions, with their frames, for people to label."""


@review.command("export")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.option(
    "--min-confidence",
    type=float,
    default=0.8,
    show_default=True,
    help="Basket changes decided with less confidence than this are exported too.",
)
@click.option("--idle-timeout", type=float, default=2.0, show_default=True)
@click.pass_context
def export(ctx: click.Context, out: Path, min_confidence: float, idle_timeout: float) -> None:
    """Write DIR/images/*.jpg and DIR/labels.jsonl (pre-labelled, unverified)."""
    from cartstream.services.tools.review import export_review

    report = export_review(cli_settings(ctx), out, min_confidence, idle_timeout)
    click.echo(
        f"{report.images} frames from {report.items} review items written to {report.out}"
        + (
            f" ({report.missing_frames} frames no longer on the broker)"
            if report.missing_frames
            else ""
        )
    )


@review.command("labels")
@click.option("--out", type=click.Path(path_type=Path), required=True)
@click.pass_context
def labels(ctx: click.Context, out: Path) -> None:
    """Write the console's verified frame labels as DIR/images + DIR/labels.jsonl (for
    `cartstream models train-detector --extra DIR`)."""
    from cartstream.services.storage.repository import make_engine
    from cartstream.services.storage.reviews import ReviewStore
    from cartstream.services.tools.review import export_labels

    engine = make_engine(cli_settings(ctx).database_url.get_secret_value())
    try:
        report = export_labels(ReviewStore(engine), out)
    finally:
        engine.dispose()
    click.echo(
        f"{report.frames} verified frames written to {report.out}"
        + (f" ({report.unboxed} labels without a box left out)" if report.unboxed else "")
    )
