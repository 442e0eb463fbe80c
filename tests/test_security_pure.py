"""Security of the pure core: secrets stay out of logs, payloads and exceptions; TLS stays on;
base URLs are https (loopback excepted).

The secret test runs a full sync -- customers, products, orders -- against both simulators
seeded with distinctive credentials, with faults on the way (a rejected token, 5xx, a garbled
answer, a lost create answer, an error body that quotes a credential), then greps everything a
user or an operator could ever see for those credentials and for the bearer tokens issued:
every log record at DEBUG level (httpx's included), stdout/stderr, every RecordResult (source,
payload, response, message, exchanges) and the run-level exchanges.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl

import httpx
import pytest

from bbvisma.buchhaltungsbutler.client import BBClient
from bbvisma.engine import Flow, FlowContext, SourceItem
from bbvisma.errors import AuthError, BBVismaError, ConfigError
from bbvisma.linkstore import MemoryLinkStore
from bbvisma.simulators.common import sim_http_client
from bbvisma.transport import Redactor, Transport, check_verify, validate_base_url
from bbvisma.vismanet.client import VismaClient
from bench.faults import FaultSink
from bench.measure import flow_class
from bench.rig import BB_BASE, VISMA_BASE, make_rig

SECRETS = {
    "api_client": "bb-client-Qz81wXyT",
    "api_secret": "bb-secret-Lm42vPqR",
    "api_key": "bb-key-Hs93kTnE",
    "client_secret": "visma-secret-Jd57rWcA",
}


def _leaks(text: str, secrets: list[str]) -> list[str]:
    return [s for s in secrets if s and s in text]


def _everything_visible(sinks: list[FaultSink], forwarded: list[dict], caplog, capsys) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
    captured = capsys.readouterr()
    parts += [captured.out, captured.err]
    for sink in sinks:
        for result in sink.results:
            parts.append(json.dumps(vars(result), default=str, ensure_ascii=False))
    parts.append(json.dumps(forwarded, default=str, ensure_ascii=False))
    return "\n".join(parts)


def test_full_sync_with_faults_leaves_no_secret_in_logs_payloads_or_exceptions(caplog, capsys):
    caplog.set_level(logging.DEBUG)
    rig = make_rig(debtor_count=6, receipt_count=6, pool_size=6, bb_quota=None, secrets=SECRETS)
    forwarded: list[dict] = []
    rig.recorder.forward = forwarded.append
    sinks = []
    visma_faults = rig.visma_sim.faults
    # a token the server stops accepting, then a server error that quotes a credential
    visma_faults.add("status", path=r"^/v1/customer$", method="GET", after=1, times=1, status=401)
    visma_faults.add(
        "status",
        path=r"^/v1/inventory/",
        times=1,
        status=500,
        body={"ExceptionMessage": f"upstream rejected key {SECRETS['client_secret']}"},
    )
    visma_faults.add("malformed", path=r"^/v1/", method="GET", after=5, times=2)
    visma_faults.add("drop_after_commit", path=r"^/v2/customerinvoice$", times=1)
    rig.bb_sim.faults.add(
        "status",
        path=r"/receipts/get/\d+$",
        times=1,
        status=500,
        body={"success": False, "error_code": 0, "message": f"key {SECRETS['api_key']} busy"},
    )
    try:
        for flow in ("customers", "products", "orders"):
            sink = FaultSink()
            report = flow_class(flow)(
                rig.context(flow, sink=sink, batch_size=3, keep_results=False)
            ).run()
            sinks.append(sink)
            assert report.items, f"{flow} read nothing: the test would prove nothing"
        # and a run whose credentials the server refuses: its exception text is visible too
        rig.bb_sim.credentials[SECRETS["api_client"]] = "changed-by-an-admin"
        with pytest.raises(AuthError) as refused:
            rig.bb.check_connection()
        errors = [str(refused.value), repr(refused.value)]
        tokens = list(rig.visma_sim.tokens)
    finally:
        rig.close()
    assert tokens, "Visma.net issued tokens"
    basic = base64.b64encode(f"{SECRETS['api_client']}:{SECRETS['api_secret']}".encode()).decode()
    forbidden = [*SECRETS.values(), basic, *tokens]
    visible = _everything_visible(sinks, forwarded, caplog, capsys) + "\n".join(errors)
    assert _leaks(visible, forbidden) == []
    # the control: the credentials were really used, and redaction really happened
    assert sum(sink.counts.get("create", 0) for sink in sinks) >= 12
    assert "***" in visible
    assert any(r.exchanges for s in sinks for r in s.results)


def test_an_error_body_quoting_a_secret_is_redacted_in_the_exception():
    rig = make_rig(debtor_count=1, secrets=SECRETS, bb_quota=None)
    try:
        rig.visma_sim.faults.add(
            "status",
            status=400,
            body={"ExceptionMessage": f"invalid secret {SECRETS['client_secret']}"},
        )
        with pytest.raises(BBVismaError) as caught:
            rig.visma.list_branches()
    finally:
        rig.close()
    text = f"{caught.value} {caught.value!r} {caught.value.message}"
    assert SECRETS["client_secret"] not in text
    assert "***" in text


def test_wrong_credentials_give_an_auth_error_that_names_no_credential():
    rig = make_rig(debtor_count=1, secrets=SECRETS, bb_quota=None)
    try:
        wrong_bb = BBClient(
            base_url=BB_BASE,
            api_client=SECRETS["api_client"],
            api_secret="wrong-secret-Pp71",
            api_key=SECRETS["api_key"],
            http_client=sim_http_client(rig.bb_app, BB_BASE),
        )
        with pytest.raises(AuthError) as bb_error:
            wrong_bb.check_connection()
        wrong_visma = VismaClient(
            base_url=VISMA_BASE,
            token_url=VISMA_BASE + "/connect/token",
            client_id=rig.visma_credentials["client_id"],
            client_secret="wrong-secret-Ww33",
            tenant_id=rig.visma_credentials["tenant_id"],
            http_client=sim_http_client(rig.visma_app, VISMA_BASE),
        )
        with pytest.raises(AuthError) as visma_error:
            wrong_visma.check_connection()
    finally:
        rig.close()
    for error in (bb_error.value, visma_error.value):
        text = f"{error} {error!r}"
        assert _leaks(text, [*SECRETS.values(), "wrong-secret-Pp71", "wrong-secret-Ww33"]) == []


class _LeakyFlow(Flow):
    """A flow whose create fails with an unexpected exception quoting a secret."""

    entity = "customer"

    def source_items(self, since):
        yield SourceItem("1", None, {"name": "A"})

    def fetch_item(self, source_key):
        raise NotImplementedError

    def build(self, item, link):
        return dict(item.data), {"name": item.data["name"]}

    def create(self, item, payload):
        raise RuntimeError(f"connect failed: password={SECRETS['api_secret']}")

    def update(self, item, payload, link):
        raise NotImplementedError


def test_an_unexpected_exception_quoting_a_secret_is_redacted_in_result_and_log(caplog):
    caplog.set_level(logging.DEBUG)
    ctx = FlowContext(
        settings={},
        mapping=None,
        value_maps={},
        links=MemoryLinkStore(),
        keep_results=True,
        redactor=Redactor(SECRETS.values()),
    )
    report = _LeakyFlow(ctx).run()
    [result] = report.results
    assert result.action.value == "error"
    assert "RuntimeError" in result.message
    assert SECRETS["api_secret"] not in result.message
    assert SECRETS["api_secret"] not in caplog.text
    assert "***" in caplog.text  # the traceback was logged, redacted


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------
# Redacted JSON text (what the Odoo log stores)
# --------------------------------------------------------------------------------------------
QUOTED_SECRET = 'pa"ss\\word-Kq7'  # JSON text escapes its quote and backslash


@pytest.mark.parametrize(
    "value",
    [
        {"name": "Fjord Handel AS", "lines": [{"sku": "A-1", "qty": 2.5}], "ok": True},
        {"note": f"sent with {SECRETS['api_key']} by mistake", "n": [1, None]},
        [{"headers": {"Authorization": "Bearer abc"}}, "plain"],
        {"auth": {"TOKEN": {"nested": ["x", 1]}, "client_secret": 12345}},
        {"deep": [[{"x": f"..{SECRETS['client_secret']}.."}]]},
        {"text": f"quoted {QUOTED_SECRET} inside"},
        {"type": "token", "value": "not a secret key, only a value"},
        ("a", {"b": "c"}),
    ],
    ids=[
        "clean",
        "secret-value",
        "secret-key-any-case",
        "secret-key-holding-a-dict-and-a-number",
        "secret-deep-down",
        "secret-json-escapes",
        "secret-key-as-a-value",
        "tuple",
    ],
)
def test_json_text_is_exactly_the_redacted_value_as_json(value):
    redactor = Redactor([*SECRETS.values(), QUOTED_SECRET])
    text = redactor.json_text(value)
    assert text == json.dumps(redactor.redact(value), default=str, ensure_ascii=False)
    assert not _leaks(text, [*SECRETS.values(), QUOTED_SECRET, json.dumps(QUOTED_SECRET)[1:-1]])
    assert "Bearer abc" not in text


def test_json_text_of_a_payload_without_secrets_is_written_once_without_a_copy():
    class Counting(Redactor):
        copies = 0

        def redact(self, value):
            type(self).copies += 1
            return super().redact(value)

    redactor = Counting(SECRETS.values())
    payload = {"number": "10001", "lines": [{"sku": f"SKU-{n}", "qty": n} for n in range(50)]}
    assert redactor.json_text(payload) == json.dumps(payload, ensure_ascii=False)
    assert Counting.copies == 0
    redactor.json_text({"password": "x"})
    assert Counting.copies > 0, "a secret key takes the copying path"


# --------------------------------------------------------------------------------------------
def _no_verify_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize(
    "verify",
    [False, None, 0, "", "false", "0", "off", _no_verify_context()],
    ids=["False", "None", "0", "empty", "false", "zero-text", "off", "CERT_NONE-context"],
)
def test_tls_verification_cannot_be_turned_off(verify):
    with pytest.raises(ConfigError, match="cannot be turned off"):
        check_verify(verify)
    with pytest.raises(ConfigError):
        Transport(
            "https://api.example.com", system="visma", error_parser=lambda r: None, verify=verify
        )
    with pytest.raises(ConfigError):
        BBClient(api_client="c", api_secret="s", api_key="k", verify=verify)
    with pytest.raises(ConfigError):
        VismaClient(client_id="c", client_secret="s", tenant_id="t", verify=verify)


def test_tls_off_is_refused_even_when_an_http_client_is_passed_in():
    """A caller handing in its own client must not be a way around the TLS rule."""
    with httpx.Client() as client, pytest.raises(ConfigError):
        Transport(
            "https://api.example.com",
            system="bb",
            error_parser=lambda r: None,
            verify=False,
            http_client=client,
        )


def test_tls_verification_is_on_by_default_and_a_ca_bundle_is_accepted():
    transport = Transport("https://api.example.com", system="bb", error_parser=lambda r: None)
    try:
        context = transport.client._transport._pool._ssl_context
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
    finally:
        transport.close()
    assert check_verify(True) is True
    assert (
        check_verify("/etc/ssl/certs/ca-certificates.crt") == "/etc/ssl/certs/ca-certificates.crt"
    )
    verifying = ssl.create_default_context()
    assert check_verify(verifying) is verifying


# --------------------------------------------------------------------------------------------
# Base URLs
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "https://api.finance.visma.net",
        "https://webapp.buchhaltungsbutler.de/api/v1/",
        "http://127.0.0.1:8071/api/v1",
        "http://localhost:8072",
        "http://[::1]:8072",
        "http://127.8.9.10",
    ],
)
def test_https_and_loopback_base_urls_are_accepted(url):
    assert validate_base_url(url) == url.strip().rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://api.finance.visma.net",
        "http://10.0.0.5:8080",
        "http://127.0.0.1.evil.example",
        "ftp://webapp.buchhaltungsbutler.de",
        "https://user:pass@api.finance.visma.net",
        "//api.finance.visma.net",
        "api.finance.visma.net",
        "",
    ],
)
def test_plain_http_to_a_remote_host_and_odd_urls_are_refused(url):
    with pytest.raises(ConfigError):
        validate_base_url(url)


def test_clients_refuse_a_plain_http_base_or_token_url():
    with pytest.raises(ConfigError, match="plain http"):
        BBClient(base_url="http://webapp.buchhaltungsbutler.de/api/v1", **_bb_creds())
    with pytest.raises(ConfigError, match="plain http"):
        VismaClient(base_url="http://api.finance.visma.net", **_visma_creds())
    with pytest.raises(ConfigError, match="plain http"):
        VismaClient(token_url="http://connect.visma.com/connect/token", **_visma_creds())


def _bb_creds() -> dict[str, str]:
    return {"api_client": "c", "api_secret": "s", "api_key": "k"}


def _visma_creds() -> dict[str, str]:
    return {"client_id": "c", "client_secret": "s", "tenant_id": "t"}
