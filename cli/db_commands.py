"""`strategy-engine db ...`: migrations and a status overview."""

from __future__ import annotations

import typer
from rich.table import Table

from cli.common import console, friendly_errors, settings
from db.engine import ensure_database, make_engine, safe_url
from db.migrate import current_revision, head_revision, upgrade
from db.status import database_status

app = typer.Typer(help="Database: migrations and status.", no_args_is_help=True)


@app.command("upgrade")
@friendly_errors
def upgrade_command() -> None:
    """Create the database when missing and migrate it to the newest schema."""
    url = settings().database_url.get_secret_value()
    if ensure_database(url):
        console.print(f"created database {safe_url(url)}")
    engine = make_engine(url)
    try:
        before = current_revision(engine)
        upgrade(engine)
        after = current_revision(engine)
    finally:
        engine.dispose()
    if before == after:
        console.print(f"database already at migration head [bold]{after}[/bold]")
    else:
        console.print(f"migrated {before or '(empty)'} -> [bold]{after}[/bold]")


@app.command("status")
@friendly_errors
def status_command() -> None:
    """Tables with row counts, migration revision vs head, and whether TimescaleDB is on."""
    url = settings().database_url.get_secret_value()
    engine = make_engine(url)
    try:
        status = database_status(engine)
    finally:
        engine.dispose()
    console.print(f"database:  {safe_url(url)}")
    behind = "" if status.revision == head_revision() else "  [red](behind: run `strategy-engine db upgrade`)[/red]"
    console.print(f"migration: {status.revision or '(empty)'} (head {head_revision()}){behind}")
    console.print(f"timescale: {'on' if status.timescale_on else 'off'}  {status.timescale_detail}")
    table = Table("table", "rows", "kind")
    for row in status.tables:
        table.add_row(row.name, f"{'~' if row.estimated else ''}{row.rows:,}", row.kind)
    console.print(table)
