"""Error classes shared by the clients, the flows and the Odoo layer.

The split that matters is *what to do next*, not where the error came from:

* :class:`TransientError` -- the other side could not answer now (timeout, 429, 5xx, a dropped
  connection). Retrying later is right; the transport retries reads itself.
* :class:`OutcomeUnknown` -- a *write* was sent and no answer came back. The write may have been
  committed. Never resend blindly: look the record up by its deterministic key first.
* :class:`AuthError` / :class:`ConfigError` -- a setup problem. Retrying cannot help; a human must
  fix credentials, tenant, company or settings. Shown at connection test.
* :class:`ApiError` -- the other side refused the request (4xx validation). Not retried.
* :class:`DataError` -- the *record* cannot be synced as it is (unknown SKU, unmapped VAT
  combination, unsupported e-invoice profile). The record is parked with its cause for a human;
  the run goes on with the next record.
* :class:`ProtocolError` -- the answer does not follow the contract (malformed JSON, missing
  envelope). Treated as transient for reads (a proxy may have mangled it), reported precisely.

Every message is redacted before it is stored on the exception (see
:class:`bbvisma.transport.Redactor`), so an exception text is always safe to log.
"""

from __future__ import annotations

from typing import Any


class BBVismaError(Exception):
    """Base class. ``system`` is ``"bb"``, ``"visma"`` or ``None`` (local)."""

    retryable = False
    #: a short, stable identifier used to group errors by cause (issue: monitoring)
    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        system: str | None = None,
        status: int | None = None,
        code: Any = None,
        details: Any = None,
    ):
        super().__init__(message)
        self.message = message
        self.system = system
        self.status = status
        self.code = code
        self.details = details

    def __str__(self) -> str:
        return self.message

    @property
    def cause_key(self) -> str:
        """Stable key for grouping the same problem across records."""
        return f"{self.kind}:{self.system or '-'}:{self.code if self.code is not None else '-'}"


class ConfigError(BBVismaError):
    """The integration is set up wrongly (bad base URL, missing setting)."""

    kind = "config"


class AuthError(BBVismaError):
    """Credentials, tenant or company are wrong or inactive. Not retried."""

    kind = "auth"


class ApiError(BBVismaError):
    """The API refused the request (4xx). Not retried."""

    kind = "api"


class NotFound(ApiError):
    kind = "not_found"


class Conflict(ApiError):
    kind = "conflict"


class PreconditionFailed(ApiError):
    """412: the ETag sent with If-Match is stale."""

    kind = "precondition"


class TransientError(BBVismaError):
    """Try again later."""

    retryable = True
    kind = "transient"


class RequestTimeout(TransientError):
    kind = "timeout"


class ServerError(TransientError):
    kind = "server"


class RateLimited(TransientError):
    """429 or quota exhausted. ``retry_after`` in seconds when the server said so."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ConnectionFailed(TransientError):
    """The request never reached the server (refused, DNS, TLS handshake). Safe to resend."""

    kind = "connection"


class OutcomeUnknown(TransientError):
    """A write was sent but the answer was lost. Look the record up before any resend."""

    kind = "outcome_unknown"


class ProtocolError(TransientError):
    """The answer does not follow the documented contract."""

    kind = "protocol"


class DataError(BBVismaError):
    """The record cannot be synced as it is; park it with this cause for a human."""

    kind = "data"

    def __init__(self, message: str, *, cause: str = "data", **kw):
        kw.setdefault("code", cause)
        super().__init__(message, **kw)
        self.cause = cause

    @property
    def cause_key(self) -> str:
        return f"data:{self.cause}"


class UnsupportedDocument(DataError):
    """An e-invoice file that cannot be read into lines (profile, syntax, type)."""

    kind = "unsupported_document"
