"""`cartstream console ...`: the store's web app, and its staff logins."""

from __future__ import annotations

import os

import click

from cartstream.services.cli.context import cli_settings


@click.group(invoke_without_command=True)
@click.option("--host", default=None, help="Listen address (settings: console.host).")
@click.option("--port", type=int, default=None, help="Listen port (settings: console.port).")
@click.option(
    "--worker-url",
    "worker_urls",
    multiple=True,
    help="A worker's web server (`cartstream worker --web`), for live baskets; repeatable.",
)
@click.option("--replay", is_flag=True, help="Rebuild the store view from the topics' start.")
@click.pass_context
def console(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    worker_urls: tuple[str, ...],
    replay: bool,
) -> None:
    """Run the console: live baskets, alerts, the review queue and labelling, for store staff."""
    if ctx.invoked_subcommand is not None:
        return
    from cartstream.services.console.app import serve

    settings = cli_settings(ctx)
    current = settings.console.model_dump()
    changed = {
        "host": host or current["host"],
        "port": port if port is not None else current["port"],
        "worker_urls": list(worker_urls) or current["worker_urls"],
        "replay": replay or current["replay"],
    }
    serve(settings.with_overrides(console={**current, **changed}))


@console.command("add-user")
@click.argument("username")
@click.option("--store", default=None, help="The store this person sees (omit with --admin).")
@click.option("--admin", is_flag=True, help="Sees every store.")
@click.option(
    "--password-env",
    default="CARTSTREAM_CONSOLE_PASSWORD",
    show_default=True,
    help="The variable holding the password (never on the command line); else it is asked.",
)
@click.pass_context
def add_user(
    ctx: click.Context, username: str, store: str | None, admin: bool, password_env: str
) -> None:
    """Create a console login, or change its password and store."""
    from cartstream.services.storage.repository import make_engine
    from cartstream.services.storage.staff import StaffDirectory

    if admin == (store is not None):
        raise click.UsageError("give exactly one of --store STORE and --admin")
    password = os.environ.get(password_env) or click.prompt(
        "Password", hide_input=True, confirmation_prompt=True
    )
    engine = make_engine(cli_settings(ctx).database_url.get_secret_value())
    try:
        StaffDirectory(engine).set_user(username, password, None if admin else store)
    finally:
        engine.dispose()
    click.echo(f"{username}: {'admin, every store' if admin else 'store ' + str(store)}")
