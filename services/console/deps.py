"""What the console's routes use, built once per process and injectable for tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cartstream.core.cart_auth import Keyring
from cartstream.core.settings import Settings
from cartstream.models.catalog import Catalog
from cartstream.schemas.records import CheckoutDecision
from cartstream.services.console.evidence import EvidenceReader
from cartstream.services.console.gateway import BasketGateway
from cartstream.services.console.live import LiveBaskets
from cartstream.services.storage.reviews import ReviewStore
from cartstream.services.storage.staff import StaffDirectory


class Publishes(Protocol):
    def publish(self, decision: CheckoutDecision, timeout_s: float = ...) -> None: ...

    def close(self) -> None: ...


@dataclass
class ConsoleDeps:
    settings: Settings
    catalog: Catalog
    staff: StaffDirectory
    reviews: ReviewStore
    live: LiveBaskets
    publisher: Publishes
    evidence: EvidenceReader
    gateway: BasketGateway | None = None  # None: no live pushes (a test of the pages alone)
    keyring: Keyring | None = None  # None: cart screens need no token (cart_auth off)
