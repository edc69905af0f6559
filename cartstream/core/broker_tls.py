"""A TLS handshake with the bootstrap servers before any Kafka client starts.

Kafka clients treat a certificate that does not verify like a broker that is down: they retry
for ever (Faust's consumer) or report `NoBrokersAvailable` after their timeouts (kafka-python),
so a wrong CA looks like a hang. `check_tls` makes it a clear, immediate error instead.
"""

from __future__ import annotations

import logging
import socket
import ssl

from cartstream.core.settings import Settings
from cartstream.exceptions import ConfigurationError

log = logging.getLogger(__name__)


def check_tls(settings: Settings, timeout_s: float = 5.0) -> None:
    """For SSL and SASL_SSL: handshake with each bootstrap server until one succeeds. Raises
    ConfigurationError when a server's certificate does not verify or it does not speak TLS;
    servers that cannot be reached are left to the clients' retries."""
    kafka = settings.kafka
    context = kafka.ssl_context()
    if context is None:
        return
    trust = f"kafka.ssl_cafile={kafka.ssl_cafile}" if kafka.ssl_cafile else "the system CAs"
    for server in kafka.bootstrap_list:
        host, _, port = server.rpartition(":")
        try:
            raw = socket.create_connection((host, int(port)), timeout=timeout_s)
        except OSError as exc:
            log.warning("TLS check: %s closed the connection (%s)", server, exc)
            continue
        try:
            with raw, context.wrap_socket(raw, server_hostname=host):
                return
        except TimeoutError:
            raise ConfigurationError(
                f"TLS handshake with {server}: no answer in {timeout_s:.0f} s; "
                "is it a TLS listener?"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise ConfigurationError(
                f"TLS to {server}: the broker's certificate does not verify "
                f"({exc.verify_message}); trusted: {trust}"
            ) from None
        except ssl.SSLError as exc:
            raise ConfigurationError(
                f"TLS handshake with {server} failed ({exc.reason or exc}); is it a TLS listener?"
            ) from None
        except OSError as exc:
            log.warning("TLS check: %s closed the connection (%s)", server, exc)
