"""Exchange credentials at rest (Fernet-encrypted columns) and key rotation.

Nothing here returns or logs a decrypted value except `load_credentials`, whose result holds `SecretStr`s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert

from db.crypto import Ciphertext, Keyring, Location
from db.schema import ENCRYPTED_TABLES, exchange_credentials, metadata
from domain.errors import InvalidDataError


@dataclass(frozen=True, slots=True)
class ExchangeCredentials:
    """Decrypted credentials, in memory only. Every secret stays a SecretStr."""

    name: str
    exchange: str
    api_key: SecretStr
    secret: SecretStr
    password: SecretStr | None = None
    sandbox: bool = False
    extra: dict[str, Any] = field(default_factory=dict, repr=False)


@dataclass(frozen=True, slots=True)
class CredentialSummary:
    """What `credentials list` may show: never a secret, only which key wrote it."""

    id: int
    name: str
    exchange: str
    sandbox: bool
    key_id: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RotationReport:
    rotated: int
    already_current: int
    batches: int


def add_credentials(engine: Engine, keyring: Keyring, creds: ExchangeCredentials, *, replace: bool = False) -> int:
    """Store `creds` encrypted under the newest key. Refuses to overwrite unless `replace`."""
    if not creds.name.strip():
        raise InvalidDataError("credentials need a non-empty name")
    values = {
        "name": creds.name,
        "exchange": creds.exchange,
        "sandbox": creds.sandbox,
        "api_key": keyring.encrypt_str(creds.api_key.get_secret_value()),
        "api_secret": keyring.encrypt_str(creds.secret.get_secret_value()),
        "password": None if creds.password is None else keyring.encrypt_str(creds.password.get_secret_value()),
        "extra": keyring.encrypt_json(creds.extra) if creds.extra else None,
        "key_id": keyring.primary_id,
    }
    stmt = insert(exchange_credentials).values(**values)
    if replace:
        updatable = {k: stmt.excluded[k] for k in values if k != "name"}
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={**updatable, "updated_at": func.now()})
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=["name"])
    with engine.begin() as conn:
        row_id = conn.execute(stmt.returning(exchange_credentials.c.id)).scalar_one_or_none()
    if row_id is None:
        raise InvalidDataError(f"credentials named {creds.name!r} already exist: remove them first or use --replace")
    return int(row_id)


def list_credentials(engine: Engine) -> list[CredentialSummary]:
    t = exchange_credentials
    with engine.connect() as conn:
        rows = conn.execute(
            select(t.c.id, t.c.name, t.c.exchange, t.c.sandbox, t.c.key_id, t.c.updated_at).order_by(t.c.name)
        ).all()
    return [CredentialSummary(*row) for row in rows]


def remove_credentials(engine: Engine, name: str) -> bool:
    with engine.begin() as conn:
        return conn.execute(delete(exchange_credentials).where(exchange_credentials.c.name == name)).rowcount > 0


def load_credentials(engine: Engine, keyring: Keyring, name: str) -> ExchangeCredentials:
    """Decrypt one set of credentials (in memory only)."""
    t = exchange_credentials
    with engine.connect() as conn:
        row = conn.execute(select(t).where(t.c.name == name)).mappings().one_or_none()
    if row is None:
        raise InvalidDataError(f"no credentials named {name!r}: add them with `strategy-engine credentials add`")

    def where(column: str) -> Location:
        return Location("exchange_credentials", column, row["id"])

    password: Ciphertext | None = row["password"]
    extra: Ciphertext | None = row["extra"]
    return ExchangeCredentials(
        name=row["name"],
        exchange=row["exchange"],
        sandbox=row["sandbox"],
        api_key=keyring.decrypt_str(row["api_key"], where("api_key")),
        secret=keyring.decrypt_str(row["api_secret"], where("api_secret")),
        password=None if password is None else keyring.decrypt_str(password, where("password")),
        extra={} if extra is None else keyring.decrypt_json(extra, where("extra")),
    )


def count_stale_rows(engine: Engine, keyring: Keyring) -> dict[str, int]:
    """Per encrypted table, how many rows are not yet under the newest key."""
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        for table_name in ENCRYPTED_TABLES:
            table = metadata.tables[table_name]
            stmt = select(func.count()).select_from(table).where(table.c.key_id != keyring.primary_id)
            counts[table_name] = int(conn.execute(stmt).scalar_one())
    return counts


def rotate_keys(
    engine: Engine,
    keyring: Keyring,
    *,
    batch_size: int = 500,
    on_batch: Callable[[str, int], None] | None = None,
) -> RotationReport:
    """Re-encrypt every encrypted value under the newest key, one committed batch at a time.

    Rows record the key that wrote them (`key_id`), so an interrupted rotation resumes where it stopped:
    finished rows already carry the newest key id and are not selected again. `on_batch(table, rows)` is
    called after each committed batch (progress output).
    """
    if batch_size <= 0:
        raise InvalidDataError("batch_size must be positive")
    rotated = batches = 0
    already_current = sum(_count_current(engine, keyring, name) for name in ENCRYPTED_TABLES)
    for table_name, columns in ENCRYPTED_TABLES.items():
        table = metadata.tables[table_name]
        while True:
            with engine.begin() as conn:
                rows = (
                    conn.execute(
                        select(table.c.id, *(table.c[c] for c in columns))
                        .where(table.c.key_id != keyring.primary_id)
                        .order_by(table.c.id)
                        .limit(batch_size)
                        .with_for_update(skip_locked=True)
                    )
                    .mappings()
                    .all()
                )
                if not rows:
                    break
                params = []
                for row in rows:
                    new: dict[str, Any] = {"row_id": row["id"], "key_id": keyring.primary_id}
                    for column in columns:
                        value: Ciphertext | None = row[column]
                        where = Location(table_name, column, row["id"])
                        new[f"new_{column}"] = None if value is None else keyring.rotate(value, where)
                    params.append(new)
                stmt = (
                    update(table)
                    .where(table.c.id == bindparam("row_id"))
                    .values(
                        key_id=bindparam("key_id"),
                        updated_at=func.now(),
                        **{c: bindparam(f"new_{c}", type_=table.c[c].type) for c in columns},
                    )
                )
                conn.execute(stmt, params)
            rotated += len(rows)
            batches += 1
            if on_batch is not None:
                on_batch(table_name, len(rows))
    return RotationReport(rotated=rotated, already_current=already_current, batches=batches)


def _count_current(engine: Engine, keyring: Keyring, table_name: str) -> int:
    table = metadata.tables[table_name]
    with engine.connect() as conn:
        stmt = select(func.count()).select_from(table).where(table.c.key_id == keyring.primary_id)
        return int(conn.execute(stmt).scalar_one())
