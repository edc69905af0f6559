"""The `cartstream` command line. Settings come from CARTSTREAM_* variables (see README)."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from cartstream.core.settings import load_settings
from cartstream.exceptions import CartstreamError
from cartstream.services.cli.context import cli_settings, console


@click.group()
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option("--bootstrap", default=None, help="Kafka bootstrap servers (overrides settings).")
@click.pass_context
def cli(ctx: click.Context, log_level: str, bootstrap: str | None) -> None:
    """cartstream: smart-cart frames and weights in, reconciled checkouts out."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    ctx.ensure_object(dict)
    settings = load_settings()
    if bootstrap:
        settings = settings.with_overrides(
            kafka={**settings.kafka.model_dump(), "bootstrap_servers": bootstrap}
        )
    ctx.obj["settings"] = settings
    ctx.obj["log_level"] = log_level


@cli.command()
@click.option("--port", type=int, default=9092, show_default=True)
def broker(port: int) -> None:
    """Run the embedded Kafka-protocol broker (Tansu, in-memory) in the foreground.

    SIGTERM, SIGINT (Ctrl-C) and SIGHUP stop it and the Tansu process with it."""
    from cartstream.services.kafka.broker import EmbeddedBroker

    b = EmbeddedBroker(port)
    console.print(f"[bold]Tansu broker on {b.bootstrap}[/] (in-memory; Ctrl-C stops it)")
    sys.exit(b.serve())


@cli.group()
def topics() -> None:
    """Kafka topics."""


@topics.command("create")
@click.pass_context
def topics_create(ctx: click.Context) -> None:
    """Create every cartstream topic with its configured partition count."""
    from cartstream.services.kafka.topics import ensure_topics

    counts = ensure_topics(cli_settings(ctx))
    for name, n in counts.items():
        click.echo(f"{name}\t{n} partitions")


@cli.command()
@click.option(
    "--roles",
    default="all",
    show_default=True,
    help="Comma-separated subset of detect,reason,reconcile,anomalies,persist.",
)
@click.option(
    "--web/--no-web",
    default=False,
    show_default=True,
    help="Serve Faust's web endpoints on CARTSTREAM_WEB_PORT.",
)
@click.pass_context
def worker(ctx: click.Context, roles: str, web: bool) -> None:
    """Run stream stages as a Faust worker until stopped."""
    from cartstream.services.cli.worker import run_worker
    from cartstream.streams.app import parse_roles

    level = ctx.obj["log_level"]
    run_worker(cli_settings(ctx), parse_roles(roles), loglevel=level, web=web)


@cli.group()
def carts() -> None:
    """Simulated carts."""


@carts.command("simulate")
@click.option("--carts", "n_carts", type=int, default=4, show_default=True)
@click.option("--sessions", type=int, default=5, show_default=True, help="Sessions per cart.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--truth",
    type=click.Path(path_type=Path),
    default=Path("cartstream-truth.jsonl"),
    show_default=True,
    help="Where the ground truth goes (never into the pipeline).",
)
@click.option(
    "--spool-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The cart client's on-disk spool (default: a fresh folder per run).",
)
@click.option("--run-id", default=None, help="Pins session ids (default: random per run).")
@click.option(
    "--screens",
    "console_url",
    default=None,
    help="A console's URL: each cart's screen follows its basket there (server-sent events) "
    "and the weight settle -> screen latency is printed at the end.",
)
@click.pass_context
def carts_simulate(
    ctx: click.Context,
    n_carts: int,
    sessions: int,
    seed: int,
    truth: Path,
    spool_dir: Path | None,
    run_id: str | None,
    console_url: str | None,
) -> None:
    """Publish simulated shopper sessions through the cart client."""
    from cartstream.models.catalog import Catalog
    from cartstream.services.carts.cart_client import CartClient
    from cartstream.services.carts.screen import follow_fleet, settle_to_screen
    from cartstream.services.carts.simulate import SimConfig, plan_carts, simulate

    settings = cli_settings(ctx)
    config = SimConfig(
        carts=n_carts, sessions=sessions, seed=seed, run_id=run_id or uuid.uuid4().hex[:8]
    )
    spool = spool_dir or Path(".cartstream") / "spool" / config.run_id
    client = CartClient(settings, spool)
    catalog = Catalog.load(settings.catalog_path)
    screens = []
    if console_url:
        carts = sorted({p.cart_id for p in plan_carts(config, catalog)})
        screens = follow_fleet(console_url, carts, settings)
    report = simulate(config, catalog, settings.topics, client, truth)
    drained = client.close(timeout_s=120)
    if screens:
        time.sleep(5)  # the last steps' pushes
        for screen in screens:
            screen.signal_stop()
        shown, p50, p99 = settle_to_screen(screens)
        click.echo(
            f"screens: {shown} basket changes shown; "
            f"weight settle -> screen p50 {p50} ms, p99 {p99} ms"
        )
    click.echo(
        f"{report.sessions} sessions ({report.checkouts_requested} checkouts requested), "
        f"{sum(report.events.values())} events in {report.seconds:.1f} s; "
        f"truth in {truth}" + ("" if drained else f"; {client.pending()} still spooled")
    )
    if not drained:
        sys.exit(1)


@carts.command("key")
@click.argument("cart_id")
@click.option("--key-id", default=None, help="Default: the active signing key id.")
@click.pass_context
def carts_key(ctx: click.Context, cart_id: str, key_id: str | None) -> None:
    """Print a cart's own signing key (hex), derived from the store's master key, to provision
    the cart with (CARTSTREAM_CART_AUTH__CART_ID, __CART_KEY, __SIGNING_KEY_ID)."""
    from cartstream.core.cart_auth import Keyring

    auth = cli_settings(ctx).cart_auth
    key_id = key_id or auth.active_key_id
    if key_id is None:
        raise click.UsageError("no master keys configured (CARTSTREAM_CART_AUTH__MASTER_KEYS)")
    keyring = Keyring(auth.master_key_bytes(), auth.revoked_key_ids)
    click.echo(keyring.cart_key(key_id, cart_id).hex())


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--database-url", default=None)
@click.pass_context
def db_upgrade(ctx: click.Context, database_url: str | None) -> None:
    """Apply Alembic migrations up to head."""
    from cartstream.services.storage.migrate import current, upgrade

    url = database_url or cli_settings(ctx).database_url.get_secret_value()
    upgrade(url)
    click.echo(f"database at revision {current(url)}")


@db.command("roles")
@click.option(
    "--admin-url",
    envvar="CARTSTREAM_DB_ADMIN_URL",
    required=True,
    help="libpq URL of a role that may create roles (env CARTSTREAM_DB_ADMIN_URL).",
)
@click.option("--database", required=True, help="The cartstream database to grant on.")
@click.option("--owner", default="cartstream_owner", show_default=True)
@click.option("--writer", default="cartstream_writer", show_default=True)
@click.option("--reader", default="cartstream_reader", show_default=True)
def db_roles(admin_url: str, database: str, owner: str, writer: str, reader: str) -> None:
    """Create the owner (migrations), writer (workers) and reader (reporting) roles.

    Passwords come from CARTSTREAM_DB_OWNER_PASSWORD, CARTSTREAM_DB_WRITER_PASSWORD and
    CARTSTREAM_DB_READER_PASSWORD (a role without one cannot log in)."""
    import os

    from cartstream.services.storage.roles import Roles, create_roles

    roles = Roles(owner, writer, reader)
    passwords = {
        name: os.environ[f"CARTSTREAM_DB_{part}_PASSWORD"]
        for name, part in zip(roles.names(), ("OWNER", "WRITER", "READER"), strict=True)
        if os.environ.get(f"CARTSTREAM_DB_{part}_PASSWORD")
    }
    create_roles(admin_url, database, roles, passwords)
    for name, use in zip(
        roles.names(), ("migrations", "workers (SELECT, INSERT)", "reporting (SELECT)"), strict=True
    ):
        login = "can log in" if name in passwords else "NOLOGIN (no password given)"
        click.echo(f"{name:<24} {use:<28} {login}")


@cli.group()
def schemas() -> None:
    """Avro schemas."""


@schemas.command("check")
@click.option("--dir", "folder", type=click.Path(path_type=Path, exists=True), default=None)
def schemas_check(folder: Path | None) -> None:
    """Check each schema version is BACKWARD compatible with the one before."""
    from cartstream.schemas.compat import check_backward
    from cartstream.schemas.registry import SchemaRegistry, bundled_schema_dir

    results = check_backward(SchemaRegistry(folder or bundled_schema_dir()))
    table = Table("schema", "version", "against", "result")
    for r in results:
        against = "-" if r.writer_version is None else f"v{r.writer_version}"
        colour = "green" if r.compatible else "red"
        table.add_row(r.name, f"v{r.reader_version}", against, f"[{colour}]{r.detail}[/]")
    Console().print(table)
    if not all(r.compatible for r in results):
        sys.exit(1)


@cli.group()
def checkouts() -> None:
    """The retailer-facing checkouts topic."""


@checkouts.command("tail")
@click.option("--max", "max_records", type=int, default=None, help="Stop after N checkouts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--from-end", is_flag=True, help="Only checkouts published from now on.")
@click.option(
    "--decisions",
    is_flag=True,
    help="Staff decisions on checkouts (checkout.decisions) instead of the checkouts.",
)
@click.option(
    "--idle-timeout",
    type=float,
    default=None,
    help="Stop after this many seconds without a checkout (default: never).",
)
@click.pass_context
def checkouts_tail(
    ctx: click.Context,
    max_records: int | None,
    as_json: bool,
    from_end: bool,
    decisions: bool,
    idle_timeout: float | None,
) -> None:
    """Print decoded checkouts (or staff decisions on them) as a retailer's consumer sees them."""
    from cartstream.services.kafka.tail import (
        format_checkout,
        format_decision,
        read_topic,
        to_json,
    )

    settings = cli_settings(ctx)
    topic = settings.topics.checkout_decisions if decisions else settings.topics.checkouts
    show = format_decision if decisions else format_checkout
    for record, _msg in read_topic(settings, topic, not from_end, idle_timeout, max_records):
        click.echo(to_json(record) if as_json else show(record))


@cli.command()
@click.option("--carts", "n_carts", type=int, default=4, show_default=True)
@click.option("--sessions", type=int, default=5, show_default=True, help="Sessions per cart.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--database-url", default=None, help="Default: an embedded SQLite file in the run folder."
)
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the run keeps its database, spool, truth and logs.",
)
@click.option("--summary-json", type=click.Path(path_type=Path), default=None)
@click.option("--timeout", type=float, default=300.0, show_default=True)
@click.option(
    "--speed",
    type=float,
    default=10.0,
    show_default=True,
    help="Carts publish at this multiple of real time; 0: as fast as possible.",
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write a markdown report with plots (latency, throughput, anomalies) here.",
)
@click.option(
    "--console",
    "open_console",
    is_flag=True,
    help="Open cartstream console on the run (live baskets, review queue); Ctrl-C ends it.",
)
@click.option("--console-port", type=int, default=8080, show_default=True)
@click.pass_context
def demo(
    ctx: click.Context,
    n_carts: int,
    sessions: int,
    seed: int,
    database_url: str | None,
    run_dir: Path | None,
    summary_json: Path | None,
    timeout: float,
    speed: float,
    report_dir: Path | None,
    open_console: bool,
    console_port: int,
) -> None:
    """Broker, worker and simulated carts in one command; prints how well it went."""
    from cartstream.services.tools.demo import DemoConfig, run_demo

    bootstrap = ctx.find_root().params.get("bootstrap")
    config = DemoConfig(
        carts=n_carts,
        sessions=sessions,
        seed=seed,
        database_url=database_url,
        run_dir=run_dir,
        summary_json=summary_json,
        timeout_s=timeout,
        bootstrap=bootstrap,
        speed=speed,
        report_dir=report_dir,
        console_port=console_port if open_console else None,
    )
    summary = run_demo(config, cli_settings(ctx), console)
    if not summary.complete:
        sys.exit(1)


def _register_model_commands() -> None:
    from cartstream.services.cli.bench import bench
    from cartstream.services.cli.chaos import chaos
    from cartstream.services.cli.console import console as console_command
    from cartstream.services.cli.drift import COMMANDS as DRIFT_COMMANDS
    from cartstream.services.cli.eval import evaluate
    from cartstream.services.cli.models import models
    from cartstream.services.cli.registry import COMMANDS as REGISTRY_COMMANDS
    from cartstream.services.cli.review import review
    from cartstream.services.cli.serve import serve
    from cartstream.services.cli.trace import trace

    cli.add_command(review)
    cli.add_command(trace)
    for command in (*REGISTRY_COMMANDS, *DRIFT_COMMANDS):
        models.add_command(command)
    cli.add_command(models)
    cli.add_command(bench)
    cli.add_command(evaluate)
    cli.add_command(chaos)
    cli.add_command(serve)
    cli.add_command(console_command)


_register_model_commands()


def main() -> None:
    try:
        cli(obj={})
    except CartstreamError as exc:
        console.print(f"[red]error:[/] {exc}")
        sys.exit(2)
