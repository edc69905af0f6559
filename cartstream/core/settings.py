"""All configuration in one frozen object, read from `CARTSTREAM_*` environment variables.

Nested groups use a double underscore: `CARTSTREAM_KAFKA__BOOTSTRAP_SERVERS=b1:9092,b2:9092`,
`CARTSTREAM_TOPICS__STREAM_PARTITIONS=32`, `CARTSTREAM_DATABASE_URL=postgresql+psycopg://...`.
"""

from __future__ import annotations

import ssl
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cartstream.exceptions import ConfigurationError

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
BrokerProfile = Literal["kafka", "tansu", "tansu-s3"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Frozen):
    """How to reach the Kafka cluster (or the embedded broker)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    client_id: str = "cartstream"
    # a worker that starts while no broker answers waits this long for one (a broker restart
    # that overlaps the worker's start-up), then stops with the connection error
    startup_wait_s: float = Field(default=120.0, gt=0)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (
            self.sasl_mechanism and self.sasl_username and self.sasl_password
        ):
            raise ValueError(
                f"security_protocol={self.security_protocol} needs sasl_mechanism, "
                "sasl_username and sasl_password"
            )
        if self.ssl_cafile is not None and not self.ssl_cafile.is_file():
            raise ValueError(f"ssl_cafile {self.ssl_cafile} is not a readable file")
        return self

    @property
    def bootstrap_list(self) -> list[str]:
        return [s.strip() for s in self.bootstrap_servers.split(",") if s.strip()]

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.security_protocol.endswith("SSL"):
            return None
        return ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)

    def kafka_python_config(self) -> dict[str, Any]:
        """Connection options for kafka-python clients (cart producer, admin, tail consumer)."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_list,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None
            )
        if self.ssl_cafile:
            cfg["ssl_cafile"] = str(self.ssl_cafile)
        return cfg


class TopicSettings(_Frozen):
    """Topic names and partition counts.

    Every cart-keyed stream (frames, weights, sessions, detections, basket changes, reviews)
    shares `stream_partitions`: the stages join them per cart, so they must be co-partitioned.
    """

    frames: str = "cart.frames"
    weights: str = "cart.weights"
    sessions: str = "cart.sessions"
    detections: str = "cart.detections"
    basket_changes: str = "basket.changes"
    reviews: str = "basket.reviews"
    anomalies: str = "anomalies"
    checkouts: str = "checkouts"
    dead_letters: str = "dead-letters"
    review_frames: str = "cart.review-frames"
    detections_shadow: str = "cart.detections.shadow"  # a candidate model's (shadow deployment)
    checkout_decisions: str = "checkout.decisions"  # staff decisions on checkouts (the console)
    stream_partitions: int = Field(default=8, ge=1, le=4096)
    output_partitions: int = Field(default=4, ge=1, le=4096)
    replication_factor: int = Field(default=1, ge=1, le=7)

    def streams(self) -> list[str]:
        """The cart-keyed streams, co-partitioned (`stream_partitions` each): reason reads a
        cart's weight packets, session events and detections from one partition number, and
        detect publishes each detection on its frame's partition number."""
        return [
            self.frames,
            self.weights,
            self.sessions,
            self.detections,
            self.basket_changes,
            self.reviews,
        ]

    def all_topics(self) -> dict[str, int]:
        """Every topic cartstream owns, with its partition count."""
        streams = self.streams()
        outputs = [
            self.anomalies,
            self.checkouts,
            self.dead_letters,
            self.review_frames,
            self.detections_shadow,
            self.checkout_decisions,
        ]
        return {
            **dict.fromkeys(streams, self.stream_partitions),
            **dict.fromkeys(outputs, self.output_partitions),
        }


class BrokerTuning(_Frozen):
    """Client timings and workarounds; `profile` picks a named set (see `for_profile`)."""

    session_timeout_s: float = 30.0
    heartbeat_interval_s: float = 3.0
    producer_max_batch_bytes: int = 16384
    consumer_session_timeout_ms: int = 30000
    fetch_max_wait_ms: int | None = None  # None: the client's default
    # a stage's fetch is answered once this many bytes are ready or its wait is over: more
    # than 1 makes a loaded worker fetch fewer, fuller batches (see the `tansu` profile)
    fetch_min_bytes: int = 1
    end_offsets_from_fetch: bool = False  # raise ListOffsets' end offsets to a fetch's
    # kafka-python producers (carts, console): idempotent, so a retry is never written twice
    producer_idempotence: bool = True
    # the least fetch wait of a tool that reads a topic to its end (tail, the chaos verifier):
    # off the hot path, so never as short as a stage's (see `reader_fetch_wait_ms`). Not the lag
    # probe's: it fetches at the end offset, where Tansu holds a fetch for its whole wait
    reader_min_fetch_wait_ms: int = 500

    @property
    def reader_fetch_wait_ms(self) -> int:
        """A reading tool's fetch wait. Tansu's memory store scans a partition's batches on
        every fetch, about 1 us each, and answers nothing if the wait ends first: measured
        (/tmp script, one-record batches, reading the last 100), at 20 ms a partition of 20 000
        batches was served in 0.9 s and one of 25 000 never (0 records in 8 s), at 50 ms 30 000
        yes and 60 000 never, at 200 ms 120 000 in 0.4 s. A 1 000-session chaos run's reason
        changelog grows past 25 000 batches a partition, and its verifier stalled there."""
        return max(self.fetch_max_wait_ms or 0, self.reader_min_fetch_wait_ms)

    @classmethod
    def for_profile(cls, profile: BrokerProfile) -> BrokerTuning:
        if profile == "tansu-s3":
            # Tansu on S3 storage (restart tests): as `tansu`, but its fetch serves partitions one
            # after another, each with an object listing, and stops when fetch_max_wait has
            # passed; at 20 ms a consumer of many partitions was served one or two per fetch,
            # and the rest waited for minutes (table recovery after a broker restart never
            # finished). A reader of 56 partitions x 10 records on moto's S3: 280 of 560 records
            # in 120 s at 20 ms, all in 8.7 s at 200 ms, 5.5 s at 500 ms, 3.8 s at 1500 ms.
            # And a broker killed mid-produce can keep a batch's producer sequence but not the
            # batch: the retry is refused as a duplicate, which an idempotent producer takes for
            # delivered. Measured (kill -9 three times under a stream of 1 500 records): 5
            # records acknowledged and not in the log with idempotence, none lost without it
            # (a few written twice, which every stage dedupes by event id).
            # A fetch answered only at 16 KB would wait its whole 1.5 s at low load: 1 byte.
            return cls.for_profile("tansu").model_copy(
                update={
                    "fetch_max_wait_ms": 1500,
                    "fetch_min_bytes": 1,
                    "producer_idempotence": False,
                }
            )
        if profile == "tansu":
            # Tansu 0.6 (the embedded test/demo broker) needs three workarounds; real Kafka none:
            # - a group join waits session_timeout/2, so keep the session short;
            # - ListOffsets(latest) counts only the first record of the newest batch (on S3
            #   storage: of the newest second's first batch), so table recovery takes the end
            #   offsets from a fetch's high watermark (faust_compat/broker_workarounds.py), and
            #   every changelog record is its own batch as well;
            # - a fetch is answered only when fetch_max_wait expires, even when records
            #   arrive sooner (Faust waits 1.5 s), so every hop would add up to that. The
            #   price of 20 ms: a partition past about 20 000 batches is starved (its scan
            #   outlasts the wait; see `reader_fetch_wait_ms`), which only long runs reach.
            # And one tuning, not a workaround: Tansu answers a fetch at once when its
            # partitions hold anything, so a consumer taking 1 000 records/s sent 333 fetches a
            # second of three records each, every one naming all its partitions;
            # waiting for 16 KB (or the 20 ms) cut the worker's CPU by about an eighth at 300
            # carts, the same records (docs/benchmarks.md, "Fewer, fuller fetches").
            return cls(
                session_timeout_s=6.0,
                heartbeat_interval_s=1.0,
                producer_max_batch_bytes=1,
                consumer_session_timeout_ms=6000,
                fetch_max_wait_ms=20,
                fetch_min_bytes=16384,
                end_offsets_from_fetch=True,
            )
        return cls()


class DetectSettings(_Frozen):
    """The detect stage: which model, where it runs, how frames are batched."""

    enabled: bool = True  # False: validate frames only, publish no detections
    model_path: Path | None = None  # None: the registry's model, else the bundled artifact
    registry: Path | None = None  # a model registry folder (models/registry.py)
    model_version: str = "promoted"  # which registered version: `promoted` or a version
    promotion_check_s: float = Field(default=10.0, ge=0)  # follow promotions (0: never)
    shadow_version: str | None = None  # a registered candidate run beside the model in use
    shadow_share: float = Field(default=0.1, ge=0, le=1)  # of frames (chosen by event id)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_batch: int = Field(default=32, ge=1, le=1024)
    max_wait_ms: float = Field(default=5.0, ge=0)
    score_threshold: float = Field(default=0.3, gt=0, lt=1)
    review_below: float = Field(default=0.6, gt=0, le=1)  # best score under this: review
    threads: int | None = Field(default=None, ge=1)
    # an Open Inference Protocol server to call instead of in-process inference
    # (`cartstream serve detector`): grpc://host:port (recommended) or http://host:port
    endpoint: str | None = Field(default=None, pattern=r"^(grpc|http)://[^/\s]+$")
    endpoint_timeout_s: float = Field(default=10.0, gt=0)
    # drift monitoring (models/drift.py): the reference (None: `<model>.drift.json` beside the
    # model in use, else the bundled model's), the window per scope, and when PSI alerts
    drift_reference: Path | None = None
    drift_window: int = Field(default=480, ge=10)
    drift_min_samples: int = Field(default=240, ge=10)
    drift_alert_psi: float = Field(default=0.25, gt=0)
    # per camera of a cart, in capture time (streams/frame_rate.py): frames beyond these are
    # dead-lettered before decoding, so one flooding cart cannot hold a partition's detections
    max_frame_rate: float = Field(default=15.0, gt=0)
    frame_burst: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _model_exists(self) -> DetectSettings:
        if self.model_path is not None and not self.model_path.is_file():
            raise ValueError(f"detect.model_path {self.model_path} does not exist")
        if self.drift_min_samples > self.drift_window:
            raise ValueError("detect.drift_min_samples cannot exceed detect.drift_window")
        if self.endpoint is not None and self.shadow_version is not None:
            raise ValueError("detect.shadow_version runs in process: not with detect.endpoint")
        return self


class StageBatchSettings(_Frozen):
    """How the stateful stages (reason, anomalies, reconcile) take their inputs: up to
    `max_size` at a time, waiting at most `max_wait_ms` for more. A batch's outputs are
    acknowledged together (and each key's state goes to the changelog once per commit,
    streams/changelog.py), so a loaded worker does fewer round trips per input; an idle one
    adds at most `max_wait_ms`."""

    max_size: int = Field(default=256, ge=1, le=10_000)
    max_wait_ms: float = Field(default=5.0, gt=0)


class ReasonSettings(_Frozen):
    """Weight signal processing and the fusion of weight steps with what the cameras saw."""

    mode: Literal["fused", "vision", "weight"] = "fused"  # which evidence decides a step
    device: Literal["auto", "cpu", "cuda"] = (
        "auto"  # fusion tensors (auto: CUDA when torch sees one)
    )
    settle_window_s: float = Field(default=0.3, gt=0)
    settle_max_std_g: float = Field(default=4.0, gt=0)
    min_step_g: float = Field(default=12.0, gt=0)
    max_quantity: int = Field(default=4, ge=1, le=20)
    # how much a box of a look-alike (same brand and shape) counts for its sibling in fusion;
    # None: fusion's own (models/fusion.py `FusionParams.lookalike_share`, tuned per detector)
    lookalike_share: float | None = Field(default=None, ge=0, le=1)
    checkout_wait_s: float = Field(default=30.0, gt=0)
    # a step waits this long (wall clock) for the detections of the frames sent before it
    vision_wait_s: float = Field(default=15.0, gt=0)
    window_before_ms: int = Field(default=400, ge=0)  # frames this long before a step starts
    window_after_ms: int = Field(default=150, ge=0)  # ... and after it settles count for it
    hand_zone_y: float = Field(default=0.52, gt=0, le=1)  # box centres above this line: in hand
    # torch's intra-op threads for fusion on the CPU (0: torch's default, one per core). A
    # step's tensors are tiny: a second thread doubled fusion's CPU time (it spins) and saved
    # no wall time, on cores the worker shares with the broker
    torch_threads: int = Field(default=1, ge=0)
    # vision drift per SKU (models/vision_drift.py): the last `window` changes whose weight named
    # the SKU; it drifts when -log10 P(this many unconfirmed by vision) reaches `alert`
    vision_drift_window: int = Field(default=40, ge=2)
    vision_drift_min_samples: int = Field(default=10, ge=1)
    vision_drift_alert: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _vision_drift_window(self) -> ReasonSettings:
        if self.vision_drift_min_samples > self.vision_drift_window:
            raise ValueError("reason.vision_drift_min_samples cannot exceed vision_drift_window")
        return self


class CartAuthSettings(_Frozen):
    """Per-cart message authentication (core/cart_auth.py, docs/security.md).

    `mode`: `enforce` dead-letters a record that fails verification (reason `auth: ...`) and
    raises a SPOOFED_EVENT alert; `report` only alerts (for a rollout, while carts get keys);
    `off` checks nothing. `master_keys`: key id -> the store's master key (at least 32 bytes;
    from a Secret: `CARTSTREAM_CART_AUTH__MASTER_KEYS='{"k2": "...", "k1": "..."}'`); two are
    live during a rotation. Carts sign with `signing_key_id`. A key id in `revoked_key_ids`
    verifies nothing."""

    mode: Literal["off", "report", "enforce"] = "off"
    master_keys: dict[str, SecretStr] = Field(default_factory=dict)
    # a real cart holds its own key only (`cartstream carts key`), never the master keys
    cart_id: str | None = None
    cart_key: SecretStr | None = None  # hex, derived for `cart_id` under `signing_key_id`
    signing_key_id: str | None = None  # None: the last of `master_keys`
    revoked_key_ids: frozenset[str] = frozenset()
    max_age_s: float = Field(default=300.0, gt=0)  # signed this long before the broker took it
    max_skew_s: float = Field(default=60.0, gt=0)  # ... or this long after it: refused

    @model_validator(mode="after")
    def _usable(self) -> CartAuthSettings:
        if self.mode != "off" and not self.master_keys:
            raise ValueError(f"cart_auth.mode={self.mode} needs cart_auth.master_keys")
        short = [k for k, v in self.master_keys.items() if len(v.get_secret_value()) < 32]
        if short:
            raise ValueError(f"cart_auth master keys shorter than 32 bytes: {', '.join(short)}")
        if self.cart_key is not None:
            if not (self.cart_id and self.signing_key_id):
                raise ValueError("cart_auth.cart_key needs cart_auth.cart_id and signing_key_id")
            try:
                bytes.fromhex(self.cart_key.get_secret_value())
            except ValueError:
                raise ValueError("cart_auth.cart_key is not hex") from None
        elif self.signing_key_id is not None and self.signing_key_id not in self.master_keys:
            raise ValueError(f"cart_auth.signing_key_id {self.signing_key_id!r} has no master key")
        return self

    @property
    def active_key_id(self) -> str | None:
        """The key id carts sign with."""
        if self.signing_key_id is not None:
            return self.signing_key_id
        return next(reversed(self.master_keys), None)

    def master_key_text(self) -> dict[str, str]:
        """The keys in the clear: only for handing them to a child process's environment."""
        return {k: v.get_secret_value() for k, v in self.master_keys.items()}

    def master_key_bytes(self) -> dict[str, bytes]:
        return {k: v.encode() for k, v in self.master_key_text().items()}


class ConsoleSettings(_Frozen):
    """`cartstream console` (services/console): the store's web app.

    `session_key` signs the login cookie and the CSRF token (None: a random one per process,
    so logins end when it restarts; set it from a Secret when several replicas serve).
    `worker_urls`: workers' web servers (`cartstream worker --web`); any one of them routes a
    live basket request to the worker owning the cart. `replay`: rebuild the store view from the
    start of the topics (a demo's finished run) instead of following only what comes next."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    session_key: SecretStr | None = None
    secure_cookies: bool = True  # cookies only over HTTPS (browsers treat localhost as secure)
    session_max_age_s: int = Field(default=8 * 3600, gt=0)
    worker_urls: list[str] = Field(default_factory=list)
    worker_timeout_s: float = Field(default=2.0, gt=0)
    replay: bool = False
    unsure_frames_per_store: int = Field(default=200, ge=1)
    # a review page reads the session's records from this long before its checkout request
    evidence_lookback_s: float = Field(default=3 * 3600, gt=0)
    # where failed logins are counted (the `limits` library): per process, or shared
    # (`redis://host:6379`) when several replicas serve
    throttle_storage: str = "memory://"


class Settings(BaseSettings):
    """The whole configuration. Frozen: build a changed copy with `with_overrides(...)`, which
    validates it (pydantic's `model_copy(update=...)` would skip validation)."""

    model_config = SettingsConfigDict(
        env_prefix="CARTSTREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    kafka: KafkaSettings = KafkaSettings()
    broker_profile: BrokerProfile = "kafka"
    # the stages' fetch wait, when not the profile's: a long run on Tansu's memory store needs
    # more than the `tansu` profile's 20 ms (BrokerTuning.reader_fetch_wait_ms), at that cost
    # in latency per hop (the profile's `fetch_min_bytes` stays: a fetch short of it waits it)
    fetch_max_wait_ms: int | None = Field(default=None, gt=0)
    topics: TopicSettings = TopicSettings()
    detect: DetectSettings = DetectSettings()
    reason: ReasonSettings = ReasonSettings()
    stage_batch: StageBatchSettings = StageBatchSettings()
    cart_auth: CartAuthSettings = CartAuthSettings()
    console: ConsoleSettings = ConsoleSettings()
    database_url: SecretStr = SecretStr("postgresql+psycopg://postgres@127.0.0.1:5432/cartstream")
    app_id: str = "cartstream"
    web_port: int = Field(default=6066, ge=0, le=65535)
    # how other workers reach this one's web server (live basket routing); None: this host's
    # name and web_port (in Kubernetes, set it from the pod IP)
    web_advertised_url: str | None = None
    catalog_path: Path | None = None
    review_wait_s: float = Field(default=30.0, gt=0)
    # a record the database refuses (not an outage: a constraint or permission a migration
    # added, bytes a column refuses) is retried this long, then dead-lettered (sink_runner.py)
    sink_refused_retry_s: float = Field(default=120.0, ge=0)
    # the consumer group of a stage upstream of another (detect, for reason's deadlines) when
    # it runs in another worker; default: the group a worker running that role alone joins
    upstream_groups: dict[str, str] = Field(default_factory=dict)
    max_future_skew_s: float = Field(default=300.0, gt=0)
    max_frame_bytes: int = Field(default=2_000_000, gt=0)
    # telemetry (see services/telemetry.py and services/metrics.py)
    otel_exporter: Literal["auto", "none", "console", "jsonl", "otlp"] = "auto"
    otel_endpoint: str | None = None  # a collector: http://host:4317 (grpc), :4318 (http)
    otel_protocol: Literal["grpc", "http"] = "grpc"
    otel_jsonl_path: Path = Path("cartstream-spans.jsonl")
    otel_jsonl_max_mb: int = Field(default=100, ge=1)  # then rotated once to <path>.1
    otel_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)  # decided at the cart
    # which weight packets and detections get a `process <topic>` span in reason: "effects",
    # those that produced an output or a dead letter (every one a checkout's trace passes
    # through); "all", every one, also those that only changed a session's state (about a
    # fifth of a loaded worker's throughput, docs/benchmarks.md). Every other input of a
    # stage (session events, basket changes, reviews) always gets its span
    otel_record_spans: Literal["effects", "all"] = "effects"
    otel_metrics_interval_s: float = Field(default=10.0, gt=0)  # OTLP metric export period
    service_name: str = "cartstream"
    ready_file: Path | None = None  # touched once the worker owns its partitions (probes, demo)
    # where Faust keeps a folder per app id for table files; tables live in memory and their
    # changelogs, so it stays empty, but Faust makes it (in the worker's folder, by default)
    faust_datadir: Path = Path(".cartstream/faust")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.otel_exporter == "otlp" and not self.otel_endpoint:
            raise ValueError("otel_exporter=otlp needs otel_endpoint")
        return self

    @cached_property
    def tuning(self) -> BrokerTuning:
        tuning = BrokerTuning.for_profile(self.broker_profile)
        if self.fetch_max_wait_ms is None:
            return tuning
        return tuning.model_copy(update={"fetch_max_wait_ms": self.fetch_max_wait_ms})

    def with_overrides(self, **update: Any) -> Settings:
        """A copy with some fields replaced, validated like the original."""
        data = self.model_dump()
        data.update(update)
        try:
            return Settings.model_validate(data)
        except Exception as exc:  # pydantic.ValidationError, re-raised under our root
            raise ConfigurationError(str(exc)) from exc


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment; turn pydantic's errors into ConfigurationError."""
    try:
        base = Settings()
    except Exception as exc:
        raise ConfigurationError(f"invalid CARTSTREAM_* settings: {exc}") from exc
    return base.with_overrides(**overrides) if overrides else base
