"""`strategy-engine keys ...`: encryption keys (kept in the EncryptionKeys block) and rotation."""

from __future__ import annotations

import typer

from blocks.keys import EncryptionKeys
from blocks.registration import load_block, resolve_keyring
from cli.common import console, friendly_errors, settings
from db.crypto import generate_key, key_fingerprint
from db.engine import make_engine
from db.migrate import require_head
from db.secrets import count_stale_rows, rotate_keys
from domain.errors import ConfigurationError

app = typer.Typer(help="Encryption keys for secrets stored in the database.", no_args_is_help=True)


@app.command("generate")
@friendly_errors
def generate_command() -> None:
    """Add a new Fernet key in front of the EncryptionKeys block (creating it); new secrets use it.

    Existing ciphertexts stay readable with the older keys; run `keys rotate` to re-encrypt them.
    The key itself is never printed, only its fingerprint.
    """
    cfg = settings()
    block = load_block(EncryptionKeys, cfg.block_prefix)
    updated = EncryptionKeys(keys=[generate_key()]) if block is None else block.with_new_key()
    updated.save(cfg.block_prefix, overwrite=True)
    fingerprints = [key_fingerprint(k) for k in updated.keys]
    console.print(
        f"EncryptionKeys/{cfg.block_prefix}: {len(fingerprints)} key(s), newest first: {', '.join(fingerprints)}"
    )
    if cfg.encryption_keys is not None:
        console.print("[yellow]note:[/yellow] SE_ENCRYPTION_KEYS is set and takes precedence over the block")


@app.command("rotate")
@friendly_errors
def rotate_command(
    batch_size: int = typer.Option(500, min=1, help="Rows re-encrypted per committed batch."),
    drop_old: bool = typer.Option(
        False, "--drop-old", help="After a complete rotation, remove the older keys from the block."
    ),
) -> None:
    """Re-encrypt every stored secret under the newest key, in batches; safe to interrupt and re-run."""
    cfg = settings()
    keyring = resolve_keyring(cfg)
    engine = make_engine(cfg.database_url.get_secret_value())
    try:
        require_head(engine)
        stale = count_stale_rows(engine, keyring)
        console.print(f"rows to re-encrypt under key {keyring.primary_id}: {sum(stale.values()):,}")
        report = rotate_keys(
            engine,
            keyring,
            batch_size=batch_size,
            on_batch=lambda table, rows: console.print(f"  {table}: {rows:,} rows re-encrypted"),
        )
        remaining = sum(count_stale_rows(engine, keyring).values())
    finally:
        engine.dispose()
    console.print(
        f"rotated {report.rotated:,} rows in {report.batches} batch(es); "
        f"{report.already_current:,} were already current; {remaining:,} remain"
    )
    if drop_old:
        if remaining:
            raise ConfigurationError(f"{remaining} rows still use an older key; not dropping keys")
        block = load_block(EncryptionKeys, cfg.block_prefix)
        if block is None:
            raise ConfigurationError("keys come from SE_ENCRYPTION_KEYS: remove the older keys there yourself")
        block.newest_only().save(cfg.block_prefix, overwrite=True)
        console.print(f"kept only key {keyring.primary_id} in EncryptionKeys/{cfg.block_prefix}")
