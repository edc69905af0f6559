"""One exception root for cartstream; each room adds its own small subclasses here."""

from __future__ import annotations


class CartstreamError(Exception):
    """Root of every error cartstream raises on purpose."""


class ConfigurationError(CartstreamError):
    """Settings are missing, inconsistent or point at something that is not there."""


class SchemaError(CartstreamError):
    """An Avro schema is missing, unreadable or incompatible with its predecessor."""


class DecodeError(CartstreamError):
    """A message is not a cartstream Avro record (bad framing, unknown schema, corrupt body)."""


class ValidationError(CartstreamError):
    """A decoded record breaks a rule of its topic (missing id, NaN weight, future timestamp...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BrokerError(CartstreamError):
    """The embedded broker could not be started or reached."""


class SpoolError(CartstreamError):
    """The cart's on-disk event spool is unusable."""


class StoreUnavailable(CartstreamError):
    """The database (or another sink's store) cannot be reached right now; retry later."""
