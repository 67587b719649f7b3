"""What every command shares: the console, settings, and turning our errors into clear exits."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import typer
from rich.console import Console

from config.settings import Settings, load_settings
from domain.errors import PermanentError, StrategyEngineError, TransientError

P = ParamSpec("P")
R = TypeVar("R")

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

EXIT_PERMANENT = 2
EXIT_TRANSIENT = 3


def settings() -> Settings:
    return load_settings()


def friendly_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Print our errors as one clear line (no traceback) and exit non-zero; let anything else raise."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except TransientError as exc:
            err_console.print(f"[red]temporary failure:[/red] {exc} (retry later)")
            raise typer.Exit(EXIT_TRANSIENT) from None
        except PermanentError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_PERMANENT) from None
        except StrategyEngineError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(EXIT_PERMANENT) from None

    return wrapper


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
