"""What every command shares: the settings the root command read (with its --bootstrap), and
the console errors and progress go to."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from cartstream.core.settings import Settings

console = Console(stderr=True)


def cli_settings(ctx: click.Context, **overrides: Any) -> Settings:
    """The root command's settings, with the given (non-None) fields replaced and validated."""
    base: Settings = ctx.find_root().obj["settings"]
    clean = {k: v for k, v in overrides.items() if v is not None}
    return base.with_overrides(**clean) if clean else base
