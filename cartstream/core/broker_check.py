"""Checks of the way to the broker before any long-lived Kafka client starts.

Kafka clients treat a certificate that does not verify, or a broker that wants a login they do
not give, like a broker that is down: they retry for ever (Faust's consumer) or report a timeout
(kafka-python), so a configuration error looks like a hang. `check_tls` (a TLS handshake) and
`check_access` (a metadata request) turn them into clear errors that say what to fix.
"""

from __future__ import annotations

import logging
import socket
import ssl

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from cartstream.core.settings import Settings
from cartstream.exceptions import ConfigurationError

log = logging.getLogger(__name__)


def _connect(server: str, timeout_s: float) -> socket.socket | None:
    """A TCP connection to `host:port`, or None (logged) when it cannot be made."""
    host, _, port = server.rpartition(":")
    try:
        return socket.create_connection((host, int(port)), timeout=timeout_s)
    except (OSError, ValueError) as exc:
        log.warning("%s unreachable (%s)", server, exc)
        return None


def _reachable(server: str) -> bool:
    connection = _connect(server, 3.0)
    if connection is None:
        return False
    connection.close()
    return True


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
        raw = _connect(server, timeout_s)
        if raw is None:
            continue  # unreachable: left to the clients' retries
        host = server.rpartition(":")[0]
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


def check_access(settings: Settings, timeout_s: float = 20.0) -> None:
    """Bootstrap once with these settings (TLS checked first). A broker that accepts the
    connection but not the client is a ConfigurationError naming the likely fix (a missing or
    wrong SASL login); a broker that does not answer at all is only logged (it may be starting
    or cut off: the clients retry)."""
    check_tls(settings)
    kafka = settings.kafka
    try:
        admin = KafkaAdminClient(
            **kafka.kafka_python_config(),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        servers = ", ".join(kafka.bootstrap_list)
        if not any(_reachable(s) for s in kafka.bootstrap_list):
            log.warning("no Kafka broker answers at %s yet (%s)", servers, exc)
            return  # down, not misconfigured: the clients' own retries take it from here
        if not kafka.security_protocol.startswith("SASL"):
            raise ConfigurationError(
                f"the broker at {servers} accepts connections but not this unauthenticated "
                f"client ({type(exc).__name__}); it may require a login: set "
                "CARTSTREAM_KAFKA__SECURITY_PROTOCOL=SASL_SSL (or SASL_PLAINTEXT) with "
                "CARTSTREAM_KAFKA__SASL_MECHANISM, _SASL_USERNAME and _SASL_PASSWORD"
            ) from None
        raise ConfigurationError(
            f"the broker at {servers} refused this client's SASL {kafka.sasl_mechanism} login "
            f"as {kafka.sasl_username!r} ({type(exc).__name__}); check the SASL settings"
        ) from None
    admin.close()
