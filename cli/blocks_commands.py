"""`strategy-engine blocks ...`: Prefect block types and default documents."""

from __future__ import annotations

import typer

from blocks.registration import ensure_default_documents, register_block_types
from cli.common import console, friendly_errors, settings

app = typer.Typer(help="Prefect blocks: register types, create default documents.", no_args_is_help=True)


@app.command("register")
@friendly_errors
def register_command() -> None:
    """Register the block types and create the default documents from settings when absent."""
    cfg = settings()
    for slug in register_block_types():
        console.print(f"registered block type {slug}")
    for doc in ensure_default_documents(cfg):
        state = "created" if doc.created else "exists, left unchanged"
        console.print(f"{doc.block_type}/{doc.name}: {state}")
