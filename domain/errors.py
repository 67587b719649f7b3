"""The project's error tree. Every edge (ccxt, psycopg, redis, configuration) translates its own errors
into these once; everything above the edges only ever sees these.

::

    StrategyEngineError
    ├── TransientError            worth retrying with backoff (tasks retry these and only these)
    │   ├── ExchangeUnavailable   network down, timeout, 5xx, maintenance page
    │   ├── RateLimited           HTTP 429/418, DDoS protection; carries `retry_after_s` when the venue said
    │   └── SuspiciousEmptyPage   an empty answer inside a range the market covers: ask again before believing
    └── PermanentError            retrying cannot help; the message names the cause
        ├── ConfigurationError    missing or unsafe settings (no encryption key, malformed URL)
        ├── SchemaBehindError     the database is not at the migration head
        ├── BadSymbolError        the exchange does not list the symbol
        ├── AuthenticationFailed  credentials rejected or lacking permission
        ├── BadRequestError       the exchange refused the request as malformed
        ├── InvalidDataError      input that cannot be interpreted (wrong schema, unknown timeframe)
        └── DecryptionError       a stored secret does not decrypt under any configured key
"""

from __future__ import annotations


class StrategyEngineError(Exception):
    """Root of every error this project raises on purpose."""


class TransientError(StrategyEngineError):
    """A failure that may succeed when retried later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ExchangeUnavailable(TransientError):
    """The exchange did not answer usefully: network error, timeout, 5xx, maintenance."""


class RateLimited(TransientError):
    """The exchange throttled us (HTTP 429/418 or a rate-limit error code)."""


class SuspiciousEmptyPage(TransientError):
    """An empty OHLCV page inside a range the market should cover; asked again before recording it empty."""


class PermanentError(StrategyEngineError):
    """A failure that retrying cannot fix."""


class ConfigurationError(PermanentError):
    """Settings are missing or unsafe."""


class SchemaBehindError(PermanentError):
    """The database schema is older than this code's migration head."""


class BadSymbolError(PermanentError):
    """The exchange does not know the symbol."""


class AuthenticationFailed(PermanentError):
    """The exchange rejected the credentials or they lack a permission."""


class BadRequestError(PermanentError):
    """The exchange rejected a request as malformed."""


class InvalidDataError(PermanentError):
    """Input data that cannot be interpreted at all (not a per-row validation failure)."""


class DecryptionError(PermanentError):
    """A stored secret did not decrypt with any configured key."""


def is_retriable(error: BaseException) -> bool:
    """True only for errors a retry may fix."""
    return isinstance(error, TransientError)
