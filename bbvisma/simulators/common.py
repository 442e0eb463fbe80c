"""Shared machinery of the API simulators: time, faults, request log, WSGI plumbing, serving.

Both simulators (BuchhaltungsButler, Visma.net) are plain WSGI callables so they run two ways:

* **in-process** -- ``sim_http_client(app, base_url)`` gives an ``httpx.Client`` whose transport
  calls the app directly (no sockets, milliseconds per call): the pure test suite uses this;
* **over real loopback HTTP** -- :func:`serve` starts threaded HTTP servers on 127.0.0.1 so the
  clients are exercised with real sockets, real timeouts and real dropped connections; the
  ``python -m bbvisma.simulators serve`` command uses the same function.

Time goes through a :class:`Clock` so quotas and latencies can be tested with a
:class:`FakeClock` without sleeping. Faults are scripted with :class:`Faults`; every API request
is recorded in a :class:`RequestLog`.

:class:`SimulatorBase` implements the parts both simulators share (fault application, request
log, the ``/_sim/*`` control API, thread safety); a simulator subclasses it and implements
:meth:`SimulatorBase.handle` with the API's own paths, errors and envelope. Nothing here knows
about either API.

Fault kinds (``Faults.add(kind, ...)``):

``latency``           ``seconds``: wait (on the simulator's clock) then answer normally.
``timeout``           ``seconds``: process the request, then hold the answer for ``seconds`` of
                      wall-clock time (served) -- a client with a shorter timeout gives up after
                      the state change was committed. In-process the client's read timeout is
                      known, so the wait is skipped and ``httpx.ReadTimeout`` is raised when
                      ``seconds`` exceeds it.
``status``            ``status`` (default 503), optional ``body`` (JSON value or text): answer
                      with it *without* processing the request. Without ``body`` the simulator's
                      own error shape for that status is used.
``rate_limit``        optional ``retry_after``: answer the simulator's 429 without processing.
``malformed``         process the request, then answer 200 with a body that is not valid JSON.
``drop_after_commit`` process the request and commit it, then close the connection without
                      sending a single response byte.
``drop``              close the connection without processing the request (lost on the way in):
                      to the client it looks exactly like ``drop_after_commit``.
"""

from __future__ import annotations

import contextlib
import http
import io
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

import httpx

_logger = logging.getLogger(__name__)

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]

#: environ keys set by the in-process transport (absent when served over real HTTP)
INPROCESS_KEY = "bbvisma.sim.inprocess"
READ_TIMEOUT_KEY = "bbvisma.sim.read_timeout"

FAULT_KINDS = frozenset(
    {"latency", "timeout", "status", "rate_limit", "malformed", "drop_after_commit", "drop"}
)


# --------------------------------------------------------------------------------------------
# Time
# --------------------------------------------------------------------------------------------
class Clock:
    """Real time: :meth:`now` is epoch seconds, :meth:`sleep` really sleeps."""

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def monotonic(self) -> float:
        """For client-side limiters sharing this clock (``RateLimiter(clock=clock.monotonic)``)."""
        return time.monotonic()


class FakeClock(Clock):
    """Virtual time for tests: :meth:`sleep` advances the clock instead of waiting.

    Share one instance between a client's rate limiter (``clock=fake.now, sleep=fake.sleep``)
    and a simulator (``clock=fake``) to test quotas over "minutes" in milliseconds.
    """

    #: 2025-06-02 12:00:00 UTC, an arbitrary but fixed start so test output is reproducible
    DEFAULT_START = 1_748_865_600.0

    def __init__(self, start: float = DEFAULT_START):
        self._now = float(start)
        self._lock = threading.Lock()
        self.slept = 0.0

    def now(self) -> float:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        return self.now()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self._now += seconds
                self.slept += seconds


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------
@dataclass
class FaultRule:
    """One scripted fault. ``times=None`` means every matching request after ``after``."""

    kind: str
    method: str | None = None
    path_regex: str = ".*"
    times: int | None = 1
    after: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    #: matching requests seen so far / requests this rule has faulted so far
    seen: int = 0
    used: int = 0

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault kind {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}"
            )
        self.method = self.method.upper() if self.method else None
        self._compiled = re.compile(self.path_regex)

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method.upper():
            return False
        return self._compiled.search(path) is not None

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.used >= self.times

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "method": self.method,
            "path": self.path_regex,
            "times": self.times,
            "after": self.after,
            "params": dict(self.params),
            "seen": self.seen,
            "used": self.used,
        }


class Faults:
    """An ordered list of :class:`FaultRule`; the first applicable rule wins (thread-safe)."""

    def __init__(self):
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(
        self,
        kind: str,
        *,
        path: str = ".*",
        method: str | None = None,
        times: int | None = 1,
        after: int = 0,
        **params: Any,
    ) -> FaultRule:
        rule = FaultRule(
            kind=kind, method=method, path_regex=path, times=times, after=after, params=params
        )
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def replace(self, specs: Iterable[Mapping[str, Any]]) -> list[FaultRule]:
        """Replace all rules by ``specs`` (the JSON the ``/_sim/faults`` endpoint receives).

        Each spec: ``{"kind", "path"?, "method"?, "times"?, "after"?, "params"?: {...}}``; any
        other key is taken as a parameter too (``{"kind": "status", "status": 500}``).
        Raises ``ValueError`` on a malformed spec, leaving the current rules untouched.
        """
        rules = []
        for spec in specs:
            if not isinstance(spec, Mapping) or "kind" not in spec:
                raise ValueError(f"a fault rule must be an object with a 'kind': {spec!r}")
            spec = dict(spec)
            params = dict(spec.pop("params", None) or {})
            kind = spec.pop("kind")
            path = spec.pop("path", spec.pop("path_regex", ".*"))
            method = spec.pop("method", None)
            times = spec.pop("times", 1)
            after = spec.pop("after", 0)
            params.update(spec)
            rules.append(
                FaultRule(
                    kind=kind,
                    method=method,
                    path_regex=path,
                    times=times,
                    after=int(after),
                    params=params,
                )
            )
        with self._lock:
            self._rules = rules
        return rules

    def match(self, method: str, path: str) -> FaultRule | None:
        """The rule to apply to this request, consuming one of its uses (or ``None``)."""
        with self._lock:
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after or rule.exhausted:
                    continue
                rule.used += 1
                return rule
        return None

    @property
    def rules(self) -> list[FaultRule]:
        with self._lock:
            return list(self._rules)

    def as_list(self) -> list[dict[str, Any]]:
        return [rule.as_dict() for rule in self.rules]


# --------------------------------------------------------------------------------------------
# Request log
# --------------------------------------------------------------------------------------------
class RequestLog:
    """Every API request in arrival order: ``{"seq", "method", "path", "status", "fault"}``.

    ``status`` is ``None`` for a request whose connection was dropped. Extra keys a simulator
    passes (e.g. the company a request addressed) are kept too.
    """

    def __init__(self):
        self._entries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._seq = 0

    def add(
        self, method: str, path: str, status: int | None, fault: str | None = None, **extra: Any
    ) -> dict[str, Any]:
        with self._lock:
            self._seq += 1
            entry = {
                "seq": self._seq,
                "method": method,
                "path": path,
                "status": status,
                "fault": fault,
                **extra,
            }
            self._entries.append(entry)
            return entry

    @property
    def entries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._entries]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# --------------------------------------------------------------------------------------------
# Requests and responses
# --------------------------------------------------------------------------------------------
class DroppedConnection(Exception):
    """Raised by a simulator to close the connection without an answer (drop_after_commit)."""


class SimulatedTimeout(Exception):
    """In-process only: the answer would come later than the client's read timeout."""


@dataclass
class SimRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    environ: dict[str, Any]

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> SimRequest:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        stream = environ.get("wsgi.input")
        body = stream.read(length) if (stream is not None and length > 0) else b""
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        path = environ.get("PATH_INFO") or "/"
        # WSGI hands the path over latin-1 decoded; recover the UTF-8 the client sent
        with contextlib.suppress(UnicodeError):
            path = path.encode("latin-1").decode("utf-8")
        return cls(
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            path=path,
            query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            headers=headers,
            body=body,
            environ=environ,
        )

    def json(self) -> Any:
        """The body parsed as JSON (``ValueError`` if it is not JSON)."""
        if not self.body:
            raise ValueError("empty body")
        return json.loads(self.body.decode("utf-8"))

    @property
    def in_process(self) -> bool:
        return bool(self.environ.get(INPROCESS_KEY))


@dataclass
class SimResponse:
    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def send(self, start_response: Callable) -> list[bytes]:
        headers = [h for h in self.headers if h[0].lower() != "content-length"]
        headers.append(("Content-Length", str(len(self.body))))
        start_response(f"{self.status} {_reason(self.status)}", headers)
        return [self.body]


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def json_response(
    status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()
) -> SimResponse:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return SimResponse(
        status, body, [("Content-Type", "application/json; charset=utf-8"), *headers]
    )


def text_response(
    status: int, text: str, content_type: str = "text/plain; charset=utf-8"
) -> SimResponse:
    return SimResponse(status, text.encode("utf-8"), [("Content-Type", content_type)])


# --------------------------------------------------------------------------------------------
# Base class of the simulators
# --------------------------------------------------------------------------------------------
class SimulatorBase:
    """WSGI app skeleton: faults, request log, ``/_sim/*`` control API, one state lock.

    Subclasses implement :meth:`handle` (the API itself), :meth:`load_seed`,
    :meth:`dump_state`, :meth:`reset_state`, and may override the hooks
    :meth:`fault_status_response`, :meth:`rate_limit_response`, :meth:`handle_sim` and
    :meth:`internal_error_response` to speak the API's own error shapes.

    Control API (outside the API's namespace):
    ``GET /_sim/state`` -> ``{"state": dump_state(), "requests": [...], "faults": [...]}``;
    ``POST /_sim/faults`` (JSON list of rules, replaces the current ones; ``GET`` lists them);
    ``POST /_sim/reset`` (state back to the last loaded seed, faults and request log cleared).
    """

    SIM_PREFIX = "/_sim/"

    def __init__(self, *, clock: Clock | None = None, faults: Faults | None = None):
        self.clock = clock or Clock()
        self.faults = faults if faults is not None else Faults()
        self.requests = RequestLog()
        #: guards all simulator state; handle() always runs under it
        self.lock = threading.RLock()
        self._seed: dict[str, Any] | None = None

    # -- to implement -------------------------------------------------------------------------
    def handle(self, request: SimRequest) -> SimResponse:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_seed(self, section: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def dump_state(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset_state(self) -> None:
        """Forget all data (before a seed is loaded again)."""
        raise NotImplementedError  # pragma: no cover - abstract

    # -- hooks --------------------------------------------------------------------------------
    def fault_status_response(self, status: int, body: Any = None) -> SimResponse:
        if body is None:
            body = {"error": _reason(status), "simulated": True}
        if isinstance(body, (dict, list)):
            return json_response(status, body)
        return text_response(status, str(body))

    def rate_limit_response(self, retry_after: float | None) -> SimResponse:
        headers = [("Retry-After", str(int(retry_after)))] if retry_after is not None else []
        return json_response(429, {"error": "Too Many Requests", "simulated": True}, headers)

    def internal_error_response(self, exc: Exception) -> SimResponse:
        return json_response(500, {"error": f"simulator bug: {type(exc).__name__}: {exc}"})

    def handle_sim(self, request: SimRequest, name: str) -> SimResponse | None:
        """Simulator-specific control endpoints under ``/_sim/<name>``; ``None`` = unknown."""
        return None

    def log_extra(self, request: SimRequest) -> dict[str, Any]:
        """Extra keys for the request log entry of ``request`` (computed on arrival)."""
        return {}

    # -- seed / reset -------------------------------------------------------------------------
    def remember_seed(self, section: dict[str, Any]) -> None:
        """Subclasses call this from load_seed so ``/_sim/reset`` can restore it."""
        self._seed = json.loads(json.dumps(section))

    def reset(self) -> None:
        with self.lock:
            self.reset_state()
            self.faults.clear()
            self.requests.clear()
            if self._seed is not None:
                self.load_seed(json.loads(json.dumps(self._seed)))

    # -- WSGI ---------------------------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        request = SimRequest.from_environ(environ)
        if request.path.startswith(self.SIM_PREFIX):
            return self._control(request).send(start_response)
        rule = self.faults.match(request.method, request.path)
        fault = rule.kind if rule else None
        extra = self.log_extra(request)  # taken on arrival
        try:
            response = self._serve_with_fault(rule, request)
        except (DroppedConnection, SimulatedTimeout) as exc:
            status = None if isinstance(exc, DroppedConnection) else 200
            self.requests.add(request.method, request.path, status, fault, **extra)
            raise
        self.requests.add(request.method, request.path, response.status, fault, **extra)
        if rule is not None and rule.kind == "timeout" and not request.in_process:
            # served: hold the (logged, committed) answer back; wall-clock on purpose, the
            # client's timeout is wall-clock
            time.sleep(float(rule.params.get("seconds", 30.0)))
        return response.send(start_response)

    def _process(self, request: SimRequest) -> SimResponse:
        with self.lock:
            try:
                return self.handle(request)
            except (DroppedConnection, SimulatedTimeout):
                raise
            except Exception as exc:  # a simulator bug must be visible, not a hung request
                _logger.exception("simulator error on %s %s", request.method, request.path)
                return self.internal_error_response(exc)

    def _serve_with_fault(self, rule: FaultRule | None, request: SimRequest) -> SimResponse:
        if rule is None:
            return self._process(request)
        params = rule.params
        if rule.kind == "latency":
            self.clock.sleep(float(params.get("seconds", 1.0)))
            return self._process(request)
        if rule.kind == "status":
            return self.fault_status_response(int(params.get("status", 503)), params.get("body"))
        if rule.kind == "drop":
            raise DroppedConnection(f"{request.method} {request.path} (not processed)")
        if rule.kind == "rate_limit":
            retry_after = params.get("retry_after")
            return self.rate_limit_response(None if retry_after is None else float(retry_after))
        response = self._process(request)
        if rule.kind == "malformed":
            return SimResponse(
                200, b'{"success": true, "data": [', [("Content-Type", "application/json")]
            )
        if rule.kind == "drop_after_commit":
            raise DroppedConnection(f"{request.method} {request.path}")
        if rule.kind == "timeout":
            seconds = float(params.get("seconds", 30.0))
            read_timeout = request.environ.get(READ_TIMEOUT_KEY)
            if request.in_process and read_timeout is not None and seconds >= read_timeout:
                raise SimulatedTimeout(f"{request.method} {request.path}")
            return response  # served: __call__ holds the answer back after logging it
        raise AssertionError(f"unhandled fault kind {rule.kind}")  # pragma: no cover

    def _control(self, request: SimRequest) -> SimResponse:
        name = request.path[len(self.SIM_PREFIX) :].strip("/")
        if name == "state" and request.method == "GET":
            with self.lock:
                state = self.dump_state()
            payload = {
                "state": state,
                "requests": self.requests.entries,
                "faults": self.faults.as_list(),
            }
            return json_response(200, payload)
        if name == "faults" and request.method == "GET":
            return json_response(200, self.faults.as_list())
        if name == "faults" and request.method == "POST":
            try:
                specs = request.json() if request.body else []
                if not isinstance(specs, list):
                    raise ValueError("expected a JSON list of fault rules")
                self.faults.replace(specs)
            except (ValueError, TypeError, re.error) as exc:
                return json_response(400, {"error": f"invalid fault rules: {exc}"})
            return json_response(200, self.faults.as_list())
        if name == "reset" and request.method == "POST":
            self.reset()
            return json_response(200, {"reset": True})
        with self.lock:
            response = self.handle_sim(request, name)
        if response is not None:
            return response
        return json_response(404, {"error": f"unknown simulator control {request.method} {name}"})


# --------------------------------------------------------------------------------------------
# In-process client
# --------------------------------------------------------------------------------------------
class SimWSGITransport(httpx.WSGITransport):
    """``httpx.WSGITransport`` that behaves like a network for the fault kinds.

    :class:`DroppedConnection` becomes ``httpx.RemoteProtocolError`` (what httpx raises when a
    server closes the connection without an answer) and :class:`SimulatedTimeout` becomes
    ``httpx.ReadTimeout``; the client's read timeout is passed to the app in the environ.
    """

    def __init__(self, app: WSGIApp, **kw: Any):
        self._target = app
        self._local = threading.local()
        super().__init__(app=self._wrapped, **kw)

    def _wrapped(self, environ: dict[str, Any], start_response: Callable):
        environ[INPROCESS_KEY] = True
        environ[READ_TIMEOUT_KEY] = getattr(self._local, "read_timeout", None)
        return self._target(environ, start_response)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self._local.read_timeout = (request.extensions.get("timeout") or {}).get("read")
        try:
            return super().handle_request(request)
        except DroppedConnection:
            raise httpx.RemoteProtocolError(
                "Server disconnected without sending a response.", request=request
            ) from None
        except SimulatedTimeout:
            raise httpx.ReadTimeout("The read operation timed out", request=request) from None


def sim_http_client(app: WSGIApp, base_url: str = "http://127.0.0.1", **kw: Any) -> httpx.Client:
    """An ``httpx.Client`` talking to ``app`` in-process (pass it as a client's http_client)."""
    kw.setdefault("timeout", 30.0)
    return httpx.Client(transport=SimWSGITransport(app), base_url=base_url, **kw)


# --------------------------------------------------------------------------------------------
# Serving over real loopback HTTP
# --------------------------------------------------------------------------------------------
class _WSGIRequestHandler(BaseHTTPRequestHandler):
    """A small HTTP/1.1 WSGI bridge that can drop a connection without answering.

    (``wsgiref`` would turn an exception into a 500 answer, which is exactly what
    ``drop_after_commit`` must not do.)
    """

    protocol_version = "HTTP/1.1"
    #: TCP_NODELAY: headers and body go out as two writes; with Nagle's algorithm the body
    #: waits for the client's delayed ACK (~40 ms per call on loopback)
    disable_nagle_algorithm = True
    app: WSGIApp  # set on a per-server subclass

    def _run(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        raw_path, _, query = self.path.partition("?")
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(raw_path, encoding="latin-1"),
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "SERVER_NAME": self.server.server_address[0],
            "SERVER_PORT": str(self.server.server_address[1]),
            "SERVER_PROTOCOL": self.request_version,
            "REMOTE_ADDR": self.client_address[0],
        }
        for key, value in self.headers.items():
            name = key.upper().replace("-", "_")
            if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                environ["HTTP_" + name] = value
        captured: dict[str, Any] = {}

        def start_response(status, headers, exc_info=None):
            captured["status"] = status
            captured["headers"] = headers
            return lambda _data: None

        try:
            result = self.app(environ, start_response)
            try:
                payload = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except DroppedConnection:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        except Exception:
            _logger.exception("simulator app failed on %s %s", self.command, self.path)
            payload = b"simulator failure"
            captured = {"status": "500 Internal Server Error", "headers": []}
        code, _, reason = captured["status"].partition(" ")
        try:
            self.send_response(int(code), reason or None)
            for key, value in captured["headers"]:
                if key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            # the client gave up first (a "timeout" fault): expected, nothing to answer to
            self.close_connection = True
            _logger.debug("client left before the answer to %s %s", self.command, self.path)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _run

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        _logger.debug("sim %s - %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Served:
    """Running loopback servers; a context manager. ``urls`` follows the order of the apps."""

    def __init__(self, pairs: list[tuple[int, WSGIApp]], host: str):
        self.host = host
        self.servers: list[_Server] = []
        self.threads: list[threading.Thread] = []
        self.urls: list[str] = []
        self.apps: list[WSGIApp] = []
        try:
            for port, app in pairs:
                handler = type("Handler", (_WSGIRequestHandler,), {"app": staticmethod(app)})
                server = _Server((host, port), handler)
                thread = threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"sim-{server.server_address[1]}",
                    daemon=True,
                )
                thread.start()
                self.servers.append(server)
                self.threads.append(thread)
                self.apps.append(app)
                bound_host = f"[{host}]" if ":" in host else host
                self.urls.append(f"http://{bound_host}:{server.server_address[1]}")
        except BaseException:
            self.stop()
            raise

    def url_for(self, app: WSGIApp) -> str:
        for candidate, url in zip(self.apps, self.urls, strict=True):
            if candidate is app:
                return url
        raise KeyError("app not served here")

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()
        for thread in self.threads:
            thread.join(timeout=5)
        self.servers.clear()
        self.threads.clear()

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(
    apps: Mapping[int, WSGIApp] | Iterable[tuple[int, WSGIApp]], host: str = "127.0.0.1"
) -> Served:
    """Serve each app on ``host:port`` (port 0 = a free port) in background threads.

    ``apps`` is ``{port: app}`` or, to serve several apps on free ports, a list of
    ``(port, app)`` pairs. Returns a started :class:`Served` (use it as a context manager, or
    call ``stop()``). Only loopback hosts are accepted: the simulators have no auth worth the
    name and must never face a network.
    """
    from bbvisma.transport import is_loopback_host

    if not is_loopback_host(host):
        raise ValueError(f"simulators are served on loopback only, not on {host!r}")
    pairs = list(apps.items()) if isinstance(apps, Mapping) else list(apps)
    return Served(pairs, host)
