"""Transport: what an exchange keeps of a response, and when a response's memory goes."""

from __future__ import annotations

import gc
import weakref

import httpx

from bbvisma.transport import MAX_LOGGED_ITEMS, Transport


def transport(body: bytes, seen: list) -> Transport:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"Content-Type": "application/json"})

    return Transport(
        "http://127.0.0.1",
        system="visma",
        error_parser=lambda response: None,
        on_exchange=seen.append,
        http_client=httpx.Client(transport=httpx.MockTransport(answer)),
    )


def test_a_list_page_is_logged_with_its_first_entries_and_how_many_more():
    page = b"[" + b",".join(b'{"n": %d}' % n for n in range(500)) + b"]"
    seen: list = []
    response = transport(page, seen).request("GET", "/v1/customerinvoice")
    assert len(response.json()) == 500  # the caller gets the whole page
    logged = seen[0].response_body
    assert logged[:MAX_LOGGED_ITEMS] == [{"n": n} for n in range(MAX_LOGGED_ITEMS)]
    assert logged[MAX_LOGGED_ITEMS:] == [f"... [{500 - MAX_LOGGED_ITEMS} more]"]


def test_a_short_list_is_logged_whole():
    seen: list = []
    transport(b'{"data": [1, 2, 3]}', seen).request("GET", "/v1/customer")
    assert seen[0].response_body == {"data": [1, 2, 3]}


def test_a_response_goes_with_its_last_use_not_with_the_cyclic_collector():
    """httpx binds a response and its stream to each other: unbroken, a page of megabytes
    stays until the cyclic garbage collector runs."""
    client = transport(b"[" + b"0," * 100_000 + b"0]", [])
    gc.disable()
    try:
        gc.collect()
        response = client.request("GET", "/v1/inventory")
        assert len(response.content) > 200_000
        gone = weakref.ref(response)
        del response
        assert gone() is None
    finally:
        gc.enable()
