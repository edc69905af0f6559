"""Live baskets from the workers: `GET /api/carts/{cart_id}/basket` on any worker's web server
(`cartstream worker --web`), which Faust routes to the worker owning the cart's partition.

The transport is injectable (httpx), so tests can answer without workers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from cartstream.exceptions import CartstreamError


class LiveBasketUnavailable(CartstreamError):
    """No worker answered for the cart (none configured, all down, or rebalancing)."""


class LiveBaskets:
    def __init__(
        self,
        worker_urls: list[str],
        timeout_s: float = 2.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.worker_urls = [u.rstrip("/") for u in worker_urls]
        self.client = httpx.AsyncClient(timeout=timeout_s, transport=transport)

    async def basket(self, cart_id: str) -> dict[str, Any] | None:
        """The cart's live basket (None: no session of it in the stream state). Tries each
        worker in turn; any of them routes to the owner."""
        if not self.worker_urls:
            raise LiveBasketUnavailable("no worker_urls configured: live baskets need a worker")
        errors: list[str] = []
        for url in self.worker_urls:
            try:
                answer = await self.client.get(f"{url}/api/carts/{quote(cart_id, safe='')}/basket")
            except httpx.HTTPError as exc:
                errors.append(f"{url}: {exc.__class__.__name__}")
                continue
            if answer.status_code == 404:
                return None
            if answer.status_code == 200:
                body: dict[str, Any] = answer.json()
                return body
            errors.append(f"{url}: HTTP {answer.status_code}")
        raise LiveBasketUnavailable("no worker answered: " + "; ".join(errors))

    async def close(self) -> None:
        await self.client.aclose()
