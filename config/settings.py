"""The one typed settings object. Built on demand with `load_settings()`; never a module-level instance.

Environment: `SE_*` for everything, plus the conventional `DATABASE_URL` and `REDIS_URL`.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import ConfigurationError

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/strategy_engine"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
_DB_SCHEMES = {"postgresql", "postgresql+psycopg"}
_REDIS_SCHEMES = {"redis", "rediss", "unix"}


def _check_url(value: str, *, schemes: set[str], what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(
            f"{what} must start with one of {', '.join(sorted(s + '://' for s in schemes))}; "
            f"got scheme {parts.scheme or '(none)'!r}"
        )
    if parts.scheme != "unix" and not parts.hostname and "host=" not in parts.query:
        raise ValueError(f"{what} names no host")
    return value


class Settings(BaseSettings):
    """Runtime configuration. Secrets are `SecretStr`: they never show in repr, logs or errors."""

    model_config = SettingsConfigDict(env_prefix="SE_", extra="ignore", frozen=True)

    database_url: SecretStr = Field(
        default=SecretStr(DEFAULT_DATABASE_URL),
        validation_alias=AliasChoices("SE_DATABASE_URL", "DATABASE_URL"),
        description="SQLAlchemy URL of PostgreSQL/TimescaleDB (postgresql+psycopg://...).",
    )
    redis_url: SecretStr = Field(
        default=SecretStr(DEFAULT_REDIS_URL),
        validation_alias=AliasChoices("SE_REDIS_URL", "REDIS_URL"),
        description="Redis URL for the market-data cache.",
    )
    encryption_keys: SecretStr | None = Field(
        default=None,
        description="Comma-separated Fernet keys, newest first (MultiFernet). Usually kept in the "
        "EncryptionKeys Prefect block instead; this overrides it.",
    )
    exchange: str = Field(default="replay", description="ccxt exchange id, or 'replay' for the offline exchange.")
    symbols: str = Field(
        default="BTC/USDT,ETH/USDT,SOL/USDT,BNB/USDT,XRP/USDT",
        description="Comma-separated symbols the pipeline follows.",
    )
    timeframe: str = Field(default="1m", description="Base candle timeframe that is ingested.")
    signal_timeframe: str = Field(default="15m", description="Timeframe the signal engine evaluates.")
    history_days: int = Field(default=30, ge=1, le=3650, description="Days of history backfill keeps complete.")
    block_prefix: str = Field(default="default", description="Name of the Prefect block documents to use.")

    @field_validator("database_url")
    @classmethod
    def _database_url_ok(cls, value: SecretStr) -> SecretStr:
        _check_url(value.get_secret_value(), schemes=_DB_SCHEMES, what="DATABASE_URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_ok(cls, value: SecretStr) -> SecretStr:
        _check_url(value.get_secret_value(), schemes=_REDIS_SCHEMES, what="REDIS_URL")
        return value

    @field_validator("encryption_keys")
    @classmethod
    def _keys_ok(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for position, key in enumerate(split_keys(value), start=1):
            try:
                Fernet(key.get_secret_value())
            except ValueError:
                raise ValueError(
                    f"SE_ENCRYPTION_KEYS entry {position} is not a Fernet key (32 url-safe base64 bytes); "
                    "create one with `strategy-engine keys generate`"
                ) from None
        return value

    @property
    def symbol_list(self) -> list[str]:
        return [s.strip() for s in self.symbols.split(",") if s.strip()]

    def require_encryption_keys(self) -> list[SecretStr]:
        """The configured keys, newest first, or a ConfigurationError saying how to configure one."""
        if self.encryption_keys is None:
            raise ConfigurationError(
                "no encryption key configured: run `strategy-engine keys generate` (stores it in the "
                "EncryptionKeys block) or set SE_ENCRYPTION_KEYS"
            )
        return split_keys(self.encryption_keys)


def split_keys(value: SecretStr) -> list[SecretStr]:
    return [SecretStr(k.strip()) for k in value.get_secret_value().split(",") if k.strip()]


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; invalid values raise ConfigurationError naming the field."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None
