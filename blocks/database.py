"""Where the candles and signals live."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from sqlalchemy import Engine

from blocks.keys import DOCS_URL
from db.engine import make_engine
from db.migrate import require_head


class TimescaleDatabase(Block):
    """PostgreSQL/TimescaleDB connection for the pipeline's tables."""

    _block_type_name = "Strategy Engine Timescale Database"
    _block_type_slug = "se-timescale-database"
    _description = "PostgreSQL/TimescaleDB that stores candles, quarantine, backfill jobs, signals and trades."
    _documentation_url = DOCS_URL  # type: ignore[assignment]
    _code_example = """```python
from blocks import TimescaleDatabase

database = TimescaleDatabase.load("BLOCK_NAME")
engine = database.engine()
```"""

    url: SecretStr = Field(
        ...,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:password@host:5432/strategy_engine.",
        examples=["postgresql+psycopg://postgres@127.0.0.1:5432/strategy_engine"],
    )
    pool_size: int = Field(default=5, ge=1, le=100, description="Connections kept open per process.")

    def engine(self, *, check_schema: bool = True) -> Engine:
        """A new engine (the caller disposes it). Checks the migration head unless told not to."""
        engine = make_engine(self.url.get_secret_value(), pool_size=self.pool_size)
        if check_schema:
            try:
                require_head(engine)
            except Exception:
                engine.dispose()
                raise
        return engine
