"""cartstream: the streaming backbone for smart shopping carts."""

from cartstream.exceptions import (
    BrokerError,
    CartstreamError,
    ConfigurationError,
    DecodeError,
    SchemaError,
    SpoolError,
    StoreUnavailable,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "BrokerError",
    "CartstreamError",
    "ConfigurationError",
    "DecodeError",
    "SchemaError",
    "SpoolError",
    "StoreUnavailable",
    "ValidationError",
    "__version__",
]
