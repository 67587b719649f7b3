"""The `strategy-engine` command."""

from __future__ import annotations

import typer

from cli import (
    backfill_command,
    backtest_command,
    blocks_commands,
    credentials_commands,
    data_commands,
    db_commands,
    keys_commands,
    run_command,
)
from cli.common import configure_logging

app = typer.Typer(
    name="strategy-engine",
    help="Market-data and signal pipeline: candles, gaps, backfill, signals, paper execution.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(db_commands.app, name="db")
app.add_typer(keys_commands.app, name="keys")
app.add_typer(credentials_commands.app, name="credentials")
app.add_typer(blocks_commands.app, name="blocks")
app.command("gaps")(data_commands.gaps_command)
app.command("jobs")(data_commands.jobs_command)
app.command("backfill")(backfill_command.backfill_command)
app.command("run")(run_command.run_command)
app.command("backtest")(backtest_command.backtest_command)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug output.")) -> None:
    """strategy-engine: keep candles complete and clean; turn them into scored, risk-checked signals."""
    configure_logging(verbose)
