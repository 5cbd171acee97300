"""The settings a command runs with, or a plain message naming each bad variable."""

from __future__ import annotations

import typer
from pydantic import ValidationError

from core.settings import Settings, get_settings


def settings_or_exit() -> Settings:
    """The environment's settings; a bad ZHIDA_* value ends the command with exit status
    2 and one line per variable (ZHIDA_API_PORT: …), not a traceback."""
    try:
        return get_settings()
    except ValidationError as exc:
        for error in exc.errors():
            name = "ZHIDA_" + "__".join(str(part) for part in error["loc"]).upper()
            typer.echo(f"{name}: {error['msg']} (got {error.get('input')!r})", err=True)
        raise typer.Exit(2) from None
