"""What the BuchhaltungsButler and the Visma.net clients do the same way.

Both clients refuse to start without their credentials, send every API call through one
:class:`~bbvisma.transport.Transport` (``self.transport``), count the calls it sent and are
closed (or used in ``with``) the same way. The API-specific parts -- auth, bodies, error
classification, paging -- stay in each client.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx

from bbvisma.transport import Transport

ClientT = TypeVar("ClientT", bound="ApiClientBase")  # typing.Self needs 3.11; 3.10 is supported


def missing_settings(*settings: tuple[str, str | None]) -> list[str]:
    """The names of the ``(name, value)`` settings whose value is empty, in the given order."""
    return [name for name, value in settings if not value]


def json_or_none(response: httpx.Response) -> Any:
    """The parsed JSON body, or ``None`` when the body is not JSON (HTML from a proxy, ...)."""
    try:
        return response.json()
    except ValueError:
        return None


class ApiClientBase:
    """Lifecycle and call counting of a client whose API calls go through ``self.transport``."""

    transport: Transport

    def close(self) -> None:
        self.transport.close()

    def __enter__(self: ClientT) -> ClientT:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def calls(self) -> int:
        """API requests sent so far through ``self.transport`` (retries included)."""
        return self.transport.calls
