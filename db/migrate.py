"""Migrations: upgrade/downgrade, and the head check every flow and CLI command runs before touching data."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from domain.errors import SchemaBehindError

_SCRIPT_LOCATION = str(Path(__file__).resolve().parent / "migrations")


def _config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    config.attributes["engine"] = engine
    return config


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory(_SCRIPT_LOCATION).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database forward to `revision` (idempotent)."""
    with engine.begin() as conn:
        config = _config(engine)
        config.attributes["connection"] = conn
        command.upgrade(config, revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Migrate the database back to `revision`."""
    with engine.begin() as conn:
        config = _config(engine)
        config.attributes["connection"] = conn
        command.downgrade(config, revision)


def require_head(engine: Engine) -> None:
    """Stop with a clear message unless the database is at this code's migration head."""
    current = current_revision(engine)
    head = head_revision()
    if current != head:
        url = engine.url.render_as_string(hide_password=True)
        raise SchemaBehindError(
            f"database {url} is at migration {current or '(empty)'} but this code needs {head}: "
            "run `strategy-engine db upgrade`"
        )
