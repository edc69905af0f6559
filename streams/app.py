"""The Faust application: broker connection, client timings, and which stages it runs.

Consumer groups: a worker running every role joins group `<app_id>`; one running a subset joins
`<app_id>-<roles>` so that a Deployment per role scales on its own. Table changelogs and tick
topics have fixed names (`<app_id>.<stage>.state-changelog`), whatever the group.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

import faust

from cartstream.core.settings import Settings
from cartstream.exceptions import ConfigurationError
from cartstream.streams.runtime import faust_compat

log = logging.getLogger(__name__)

ROLES = ("detect", "reason", "reconcile", "anomalies", "persist")


def parse_roles(text: str | Sequence[str] | None) -> tuple[str, ...]:
    if text is None or text == "" or text == "all":
        return ROLES
    items = text.split(",") if isinstance(text, str) else list(text)
    roles = tuple(dict.fromkeys(r.strip() for r in items if r.strip()))
    unknown = [r for r in roles if r not in ROLES]
    if unknown or not roles:
        raise ConfigurationError(f"unknown roles {unknown}; choose from {', '.join(ROLES)}")
    return tuple(r for r in ROLES if r in roles)


def group_id(settings: Settings, roles: Sequence[str]) -> str:
    if tuple(roles) == ROLES:
        return settings.app_id
    return f"{settings.app_id}-{'-'.join(roles)}"


def _credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    k = settings.kafka
    context = k.ssl_context()
    if k.security_protocol.startswith("SASL"):
        assert k.sasl_password is not None and k.sasl_username is not None
        mechanism = faust.types.auth.SASLMechanism(k.sasl_mechanism)
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value(),
            mechanism=mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(
    settings: Settings, roles: Sequence[str], has_tables: bool, web: bool = False
) -> faust.App:
    """A Faust app configured from settings (stages are attached by `worker.build_app`);
    `has_tables`: some role keeps a table."""
    tuning = settings.tuning
    faust_compat.install(settings)  # streams/runtime/faust_compat/FIXES.md
    # the one-record-per-batch workaround protects table recovery; stateless workers skip it
    batch_bytes = tuning.producer_max_batch_bytes if has_tables else 16384
    brokers = ";".join(f"kafka://{b}" for b in settings.kafka.bootstrap_list)
    settings.faust_datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        group_id(settings, roles),
        broker=brokers,
        broker_credentials=_credentials(settings),
        broker_client_id=settings.kafka.client_id,
        broker_session_timeout=tuning.session_timeout_s,
        broker_heartbeat_interval=tuning.heartbeat_interval_s,
        broker_commit_interval=1.0,
        producer_max_batch_size=batch_bytes,
        producer_acks=-1,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        store="memory://",
        datadir=str(settings.faust_datadir / "{conf.name}-data"),
        table_standby_replicas=0,
        topic_partitions=settings.topics.stream_partitions,
        topic_replication_factor=settings.topics.replication_factor,
        topic_allow_declare=True,
        topic_disable_leader=True,
        autodiscover=False,
        web_enabled=web,
        web_port=settings.web_port,
        canonical_url=settings.web_advertised_url
        or f"http://{socket.gethostname()}:{settings.web_port}",
        web_host="127.0.0.1" if not web else "0.0.0.0",
        value_serializer="raw",
        key_serializer="raw",
        Monitor=faust_compat.LeanMonitor,
    )
    log.info(
        "faust app %s for roles %s (broker profile %s)",
        app.conf.id,
        ",".join(roles),
        settings.broker_profile,
    )
    return app
