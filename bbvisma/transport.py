"""One place for the wire: timeouts, retries, rate limits, TLS and secret redaction.

Both API clients build on :class:`Transport`. It owns an ``httpx.Client`` (connection reuse), and
applies, in this order, for every call:

1. pacing -- a :class:`RateLimiter` (BuchhaltungsButler: 100 requests a minute, counted on our
   side because the API sends no headers) and/or a :class:`HeaderPacer` (Visma.net: waits when
   ``X-RateLimit-Remaining`` reaches zero until ``X-RateLimit-Reset``);
2. the request, with the timeouts of the integration;
3. error classification by the client's ``error_parser`` (each API has its own error body);
4. retry: only for :class:`~bbvisma.errors.TransientError`, only when the call is declared safe
   to repeat (reads; writes only when the request provably never reached the server, or was
   refused with 429), with exponential back-off and ``Retry-After`` honoured;
5. an :class:`Exchange` record for the activity log, with every secret redacted.

TLS verification is always on; ``verify`` may name a CA bundle but can never be ``False``.
Plain ``http://`` is accepted only for loopback addresses (the simulators).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from .errors import (
    ApiError,
    BBVismaError,
    ConfigError,
    ConnectionFailed,
    OutcomeUnknown,
    ProtocolError,
    RateLimited,
    RequestTimeout,
    ServerError,
)

_logger = logging.getLogger(__name__)

REDACTED = "***"
#: keys whose values are always redacted, whatever their content
SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "api_secret",
        "client_secret",
        "password",
        "secret",
        "access_token",
        "refresh_token",
        "token",
        "authorization",
        "proxy-authorization",
    }
)
#: a secret key as JSON text writes it (a key or a value: a value only costs the slow path)
_SECRET_KEY_PROBES = tuple(f'"{key}"' for key in sorted(SECRET_KEYS))
#: payload bodies kept in exchanges are cut to this size (the log keeps what matters)
MAX_BODY_CHARS = 20_000
#: lists in response bodies kept in exchanges are cut to this many entries: a list page's
#: first records show what it was; all of them would make a run's first record carry every
#: page of master data read while it was handled (and its log line too)
MAX_LOGGED_ITEMS = 20


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------
class Redactor:
    """Replaces every known secret value, and every value under a secret key, by ``***``.

    Secrets are registered once (credentials, then each bearer token as it is issued); any
    string, dict, list or exception text can then be passed through :meth:`redact`.
    """

    def __init__(self, secrets: Iterable[str | None] = ()):
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        #: what a secret looks like inside JSON text (itself, and escaped where JSON escapes)
        self._json_probes: tuple[str, ...] = ()
        self._lock = threading.Lock()
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        with self._lock:
            for secret in secrets:
                # very short values would redact innocent text; real secrets are long
                if secret and len(secret) >= 4:
                    self._secrets.add(secret)
            if self._secrets:
                ordered = sorted(self._secrets, key=len, reverse=True)
                self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
                self._json_probes = tuple(
                    {s for secret in ordered for s in (secret, _json_string_body(secret))}
                )

    def redact_text(self, text: str) -> str:
        if not text or self._pattern is None:
            return text
        return self._pattern.sub(REDACTED, text)

    def redact(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, dict):
            return {
                k: (REDACTED if str(k).lower() in SECRET_KEYS else self.redact(v))
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.redact(v) for v in value]
        return value

    def json_text(self, value: Any) -> str:
        """``value`` as compact JSON text, redacted exactly as :meth:`redact` would.

        The text is written once, and kept when nothing in it can need redacting: no secret
        (as JSON writes it) and no secret key occurs in it -- substring tests at C speed. Only
        otherwise is the value copied through :meth:`redact` and written again. The common
        case, a payload without any secret, thus costs one ``json.dumps`` instead of a copy of
        every nested dict and list in Python.
        """
        text = json.dumps(value, default=str, ensure_ascii=False)
        lowered = text.lower()
        if any(probe in text for probe in self._json_probes) or any(
            probe in lowered for probe in _SECRET_KEY_PROBES
        ):
            text = json.dumps(self.redact(value), default=str, ensure_ascii=False)
        return text

    def redact_headers(self, headers: Any) -> dict[str, str]:
        return {
            k: (REDACTED if k.lower() in SECRET_KEYS else self.redact_text(v))
            for k, v in dict(headers).items()
        }


def _json_string_body(text: str) -> str:
    """``text`` as it appears inside a JSON string (quotes, backslashes, control characters
    escaped)."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


# --------------------------------------------------------------------------------------------
# URL and TLS policy
# --------------------------------------------------------------------------------------------
def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def validate_base_url(url: str, *, what: str = "base URL") -> str:
    """Return ``url`` without trailing slash, or raise :class:`ConfigError`.

    ``https`` is required; ``http`` is allowed only for loopback hosts (the simulators).
    """
    if not url:
        raise ConfigError(f"The {what} is empty.")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"The {what} {url!r} is not an absolute http(s) URL.")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigError(
            f"The {what} {url!r} uses plain http: only https is allowed "
            "(plain http is accepted for loopback simulators only)."
        )
    if parts.username or parts.password:
        raise ConfigError(f"The {what} must not carry credentials.")
    return url.strip().rstrip("/")


def check_verify(verify: bool | str | ssl.SSLContext) -> bool | str | ssl.SSLContext:
    """``verify`` if it keeps TLS certificate verification on, else :class:`ConfigError`.

    Accepted: ``True``, a CA bundle path, or an ``ssl.SSLContext`` that verifies certificates
    and host names. Everything else -- ``False``, ``None``, ``0``, ``""``, ``"false"``, a
    context with ``CERT_NONE`` or without host name checking -- would switch verification off
    (or leave it to chance), so it is refused rather than ignored.
    """
    if verify is True:
        return verify
    if isinstance(verify, str) and verify.strip().lower() not in ("", "0", "false", "no", "off"):
        return verify  # a CA bundle
    if (
        isinstance(verify, ssl.SSLContext)
        and verify.verify_mode == ssl.CERT_REQUIRED
        and verify.check_hostname
    ):
        return verify
    raise ConfigError("TLS certificate verification cannot be turned off.")


# --------------------------------------------------------------------------------------------
# Pacing
# --------------------------------------------------------------------------------------------
class RateLimiter:
    """Sliding window: at most ``max_calls`` in any ``period`` seconds (thread-safe).

    ``clock`` and ``sleep`` are injectable so tests and benchmarks can use a virtual clock.
    """

    def __init__(
        self,
        max_calls: int,
        period: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if max_calls < 1 or period <= 0:
            raise ValueError("max_calls must be >= 1 and period > 0")
        self.max_calls = max_calls
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._calls: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited = 0.0

    def acquire(self) -> float:
        """Block until a call is allowed; return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                while self._calls and now - self._calls[0] >= self.period:
                    self._calls.popleft()
                if len(self._calls) < self.max_calls:
                    self._calls.append(now)
                    self.waited += waited
                    return waited
                delay = self.period - (now - self._calls[0])
            delay = max(delay, 0.001)
            self._sleep(delay)
            waited += delay


class HeaderPacer:
    """Paces on the ``X-RateLimit-*`` headers the server announces (Visma.net).

    When the announced remaining quota reaches ``reserve``, the next call waits until the window
    resets, so a run finishes as early as the quota allows without provoking 429s.
    ``X-RateLimit-Reset`` is read as seconds until reset when small, or as an epoch time.
    """

    def __init__(
        self,
        *,
        reserve: int = 0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        max_wait: float = 3600.0,
    ):
        self.reserve = reserve
        self._clock = clock
        self._sleep = sleep
        self.max_wait = max_wait
        self._remaining: int | None = None
        self._reset_at: float | None = None
        self._lock = threading.Lock()
        self.waited = 0.0
        self.limit: int | None = None

    def before(self) -> float:
        with self._lock:
            remaining, reset_at = self._remaining, self._reset_at
        if remaining is None or reset_at is None or remaining > self.reserve:
            return 0.0
        delay = min(reset_at - self._clock(), self.max_wait)
        if delay <= 0:
            return 0.0
        self._sleep(delay)
        with self._lock:
            self.waited += delay
            self._remaining = None
        return delay

    def after(self, response: httpx.Response) -> None:
        headers = response.headers
        try:
            remaining = int(headers["X-RateLimit-Remaining"])
            reset = float(headers["X-RateLimit-Reset"])
        except (KeyError, ValueError):
            return
        now = self._clock()
        reset_at = reset if reset > 1e9 else now + reset
        with self._lock:
            self._remaining = remaining
            self._reset_at = reset_at
            with contextlib.suppress(ValueError):
                self.limit = int(headers.get("X-RateLimit-Limit", ""))

    def note_retry_after(self, seconds: float) -> None:
        with self._lock:
            self._remaining = 0
            self._reset_at = self._clock() + seconds


# --------------------------------------------------------------------------------------------
# Exchanges (what the activity log shows)
# --------------------------------------------------------------------------------------------
@dataclass
class Exchange:
    """One HTTP round trip, redacted, ready for the activity log."""

    system: str
    method: str
    path: str
    status: int | None
    request_body: Any = None
    response_body: Any = None
    duration_ms: float = 0.0
    attempt: int = 1
    error: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "request": self.request_body,
            "response": self.response_body,
            "duration_ms": round(self.duration_ms, 1),
            "attempt": self.attempt,
            "error": self.error,
        }


def _body_for_log(content: bytes, content_type: str) -> Any:
    if not content:
        return None
    if "json" in content_type:
        try:
            return json.loads(content)
        except ValueError:
            pass
    text = content[:MAX_BODY_CHARS].decode("utf-8", "replace")
    return text


def _shrink(value: Any, limit: int = 2_000, items: int | None = None) -> Any:
    """Keep payloads readable in a log: long strings (base64 files) are cut, and with
    ``items`` so are long lists (a list page of 500 records), to their first ``items`` and a
    note of how many more there were."""
    if isinstance(value, str) and len(value) > limit:
        return value[:200] + f"... [{len(value)} characters]"
    if isinstance(value, dict):
        return {k: _shrink(v, limit, items) for k, v in value.items()}
    if isinstance(value, list):
        kept = [_shrink(v, limit, items) for v in value[:items]]
        if items is not None and len(value) > items:
            kept.append(f"... [{len(value) - items} more]")
        return kept
    return value


# --------------------------------------------------------------------------------------------
# Transport
# --------------------------------------------------------------------------------------------
ErrorParser = Callable[[httpx.Response], BBVismaError | None]


class Transport:
    """HTTP transport with the policies above. One per client, thread-safe.

    :param system: ``"bb"`` or ``"visma"``, named in every error and exchange.
    :param error_parser: turns a non-success response into the API's typed error
        (return ``None`` to accept the response).
    :param on_exchange: called with each redacted :class:`Exchange` (activity log).
    :param http_client: an ``httpx.Client`` to use instead of a new one (tests may pass one with
        ``transport=httpx.WSGITransport(app)`` to talk to a simulator in-process).
    """

    def __init__(
        self,
        base_url: str,
        *,
        system: str,
        error_parser: ErrorParser,
        redactor: Redactor | None = None,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        verify: bool | str = True,
        max_attempts: int = 4,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        limiter: RateLimiter | None = None,
        pacer: HeaderPacer | None = None,
        on_exchange: Callable[[Exchange], None] | None = None,
        http_client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        user_agent: str = "apicenter-bb-visma/19.0",
    ):
        self.base_url = validate_base_url(base_url, what=f"{system} base URL")
        # checked whether or not a client is passed in: switching TLS verification off must
        # fail loudly, never be ignored because an http_client happened to be given
        verify = check_verify(verify)
        self.system = system
        self.error_parser = error_parser
        self.redactor = redactor or Redactor()
        self.max_attempts = max(1, max_attempts)
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        # exponential back-off with jitter (initial, 2x, 4x ... capped); the jitter spreads the
        # retries of parallel workers so they do not hit a recovering server in lock-step
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial, max=backoff_max, jitter=backoff_initial
        )
        self.limiter = limiter
        self.pacer = pacer
        self.on_exchange = on_exchange
        self._sleep = sleep
        self.calls = 0
        self.calls_by_method: dict[str, int] = {}
        self._count_lock = threading.Lock()
        if http_client is None:
            http_client = httpx.Client(
                timeout=httpx.Timeout(timeout, connect=connect_timeout),
                verify=check_verify(verify),
                headers={"User-Agent": user_agent},
                follow_redirects=False,
            )
        self.client = http_client

    # -- lifecycle ----------------------------------------------------------------------------
    def close(self) -> None:
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- public -------------------------------------------------------------------------------
    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        form: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
        idempotent: bool | None = None,
        log_body: Any = None,
        files: Any = None,
    ) -> httpx.Response:
        """Send one request with pacing, classification and retry.

        ``idempotent`` defaults to ``True`` for GET/HEAD and ``False`` otherwise. A
        non-idempotent request is retried only when it cannot have been processed (connection
        refused, 429); a lost answer raises :class:`OutcomeUnknown` instead.
        ``log_body`` replaces the request body in the exchange log (e.g. a file upload).
        ``files`` is passed to httpx as a multipart upload (Visma.net attachments).
        """
        method = method.upper()
        if idempotent is None:
            idempotent = method in ("GET", "HEAD")

        def should_retry(exc: BaseException) -> bool:
            if not isinstance(exc, BBVismaError) or not exc.retryable:
                return False
            if idempotent:
                return True
            return isinstance(exc, (ConnectionFailed, RateLimited))

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, RateLimited) and exc.retry_after is not None:
                return min(exc.retry_after, self.max_retry_after)
            return self._backoff(state)

        retrying = Retrying(
            retry=retry_if_exception(should_retry),
            stop=stop_after_attempt(self.max_attempts),
            wait=wait,
            sleep=self._sleep,
            reraise=True,
        )
        attempt = 0
        for attempt_ctx in retrying:
            with attempt_ctx:
                attempt += 1
                return self._once(
                    method,
                    path,
                    json_body,
                    form,
                    params,
                    headers,
                    auth,
                    attempt,
                    log_body,
                    files,
                    idempotent=idempotent,
                )
        raise AssertionError("unreachable")  # pragma: no cover

    # -- internals ----------------------------------------------------------------------------
    def _once(
        self,
        method,
        path,
        json_body,
        form,
        params,
        headers,
        auth,
        attempt,
        log_body,
        files=None,
        idempotent=None,
    ):
        # a lost answer to an idempotent request (GET, or a POST read such as BuchhaltungsButler's)
        # is a plain timeout / broken connection, not an unknown write outcome
        is_read = idempotent if idempotent is not None else method in ("GET", "HEAD")
        if self.limiter is not None:
            self.limiter.acquire()
        if self.pacer is not None:
            self.pacer.before()
        with self._count_lock:
            self.calls += 1
            self.calls_by_method[method] = self.calls_by_method.get(method, 0) + 1
        started = time.perf_counter()
        logged_request = self.redactor.redact(
            _shrink(log_body if log_body is not None else (json_body if form is None else form))
        )
        exchange = Exchange(
            system=self.system,
            method=method,
            path=self.redactor.redact_text(path),
            status=None,
            request_body=logged_request,
            attempt=attempt,
        )
        try:
            response = self.client.request(
                method,
                self.url(path),
                json=json_body,
                data=form,
                files=files,
                params=params,
                headers=headers,
                auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.ConnectError as exc:
            error = ConnectionFailed(
                self._say(f"cannot connect to {self._host()}: {exc}"), system=self.system
            )
            self._emit(exchange, started, error=error)
            raise error from None
        except httpx.TimeoutException as exc:
            sent = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            if sent and not is_read:
                error = OutcomeUnknown(
                    self._say(
                        f"{method} {path}: no answer within the timeout; the write may have been "
                        "committed"
                    ),
                    system=self.system,
                )
            else:
                error = RequestTimeout(
                    self._say(f"{method} {path}: timed out ({type(exc).__name__})"),
                    system=self.system,
                )
            self._emit(exchange, started, error=error)
            raise error from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            if is_read:
                error = ProtocolError(
                    self._say(f"{method} {path}: connection broken ({exc})"), system=self.system
                )
            else:
                error = OutcomeUnknown(
                    self._say(
                        f"{method} {path}: connection dropped before the answer ({exc}); the "
                        "write may have been committed"
                    ),
                    system=self.system,
                )
            self._emit(exchange, started, error=error)
            raise error from None

        _release_stream(response)
        if self.pacer is not None:
            self.pacer.after(response)
        exchange.status = response.status_code
        exchange.response_body = self.redactor.redact(
            _shrink(
                _body_for_log(response.content, response.headers.get("content-type", "")),
                items=MAX_LOGGED_ITEMS,
            )
        )
        exchange.headers = self.redactor.redact_headers(
            {k: v for k, v in response.headers.items() if k.lower() in ("location", "etag")}
        )
        error = self.error_parser(response)
        if error is not None:
            error.message = self._say(error.message)
            error.args = (error.message,)
            if isinstance(error, RateLimited) and error.retry_after and self.pacer is not None:
                self.pacer.note_retry_after(error.retry_after)
            self._emit(exchange, started, error=error)
            raise error
        self._emit(exchange, started)
        return response

    def _emit(self, exchange: Exchange, started: float, *, error: BBVismaError | None = None):
        exchange.duration_ms = (time.perf_counter() - started) * 1000.0
        if error is not None:
            exchange.error = f"{type(error).__name__}: {error.message}"
            _logger.info(
                "%s %s %s -> %s", self.system, exchange.method, exchange.path, exchange.error
            )
        if self.on_exchange is not None:
            self.on_exchange(exchange)

    def _host(self) -> str:
        return urlsplit(self.base_url).netloc

    def _say(self, text: str) -> str:
        return self.redactor.redact_text(text)


def _release_stream(response: httpx.Response) -> None:
    """Break httpx's reference cycle between a read response and its stream.

    httpx 0.28 binds each response's stream to the response (``BoundSyncStream._response``,
    to set ``elapsed`` on close), so every response is garbage in a cycle once it is dropped:
    freed only by the cyclic collector, whose full collections come rarer the more objects a
    process keeps -- a worker that reads thousands of pages keeps many of them (and their
    bodies, up to a few hundred KiB a page) alive for no reason, more the larger it is
    (encode/httpx#3733). The body was read and the stream closed when ``request`` returned;
    giving the response a plain stream over that body drops the bound one, and the response
    is freed as soon as the last reference to it goes."""
    if not response.is_closed:
        return
    response.stream = httpx.ByteStream(response.content)


# --------------------------------------------------------------------------------------------
# Helpers for error parsers
# --------------------------------------------------------------------------------------------
def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def generic_status_error(response: httpx.Response, system: str, message: str) -> BBVismaError:
    """Classify by status code alone, for bodies the API contract does not describe."""
    status = response.status_code
    if status == 429:
        return RateLimited(
            message,
            system=system,
            status=status,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )
    if status == 504:
        return RequestTimeout(message, system=system, status=status)
    if status >= 500:
        return ServerError(message, system=system, status=status)
    return ApiError(message, system=system, status=status)


def decode_json(response: httpx.Response, system: str) -> Any:
    """Parse a JSON body or raise :class:`ProtocolError` naming what came instead."""
    try:
        return response.json()
    except ValueError:
        snippet = response.text[:120].replace("\n", " ")
        raise ProtocolError(
            f"{system}: {response.request.method} {response.request.url.path} answered "
            f"{response.status_code} with a body that is not JSON: {snippet!r}",
            system=system,
            status=response.status_code,
        ) from None
