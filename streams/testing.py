"""Run stages in memory, without a broker: the same decode/validate/dead-letter path and the same
stage code as the Faust runtime, messages delivered in publish order (so per-key order holds).
Sinks (persist) write synchronously; stages are started on construction and closed by `close`.

    pipeline = MemoryPipeline(settings, [ReasonStage(...), AnomalyStage(...), ReconcileStage(...)],
                              sinks=[PersistSink(settings, store)])
    pipeline.publish(settings.topics.weights, cart_id, WEIGHT_PACKET, packet)
    pipeline.run()
    pipeline.records(settings.topics.checkouts)
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cartstream.core.ids import TRACEPARENT, now_ms
from cartstream.core.settings import Settings
from cartstream.schemas.codec import AvroCodec
from cartstream.streams.ingress import Ingress
from cartstream.streams.stage import Inbound, Outbound, Sink, Stage


@dataclass(frozen=True)
class Message:
    topic: str
    offset: int
    key: bytes | None
    value: bytes
    headers: Mapping[str, bytes]
    timestamp_ms: int
    links: tuple[bytes, ...] = ()  # what the runtime's `send` span would link to


class MemoryPipeline:
    def __init__(
        self,
        settings: Settings,
        stages: Sequence[Stage[Any]],
        clock: Callable[[], int] | None = None,
        codec: AvroCodec | None = None,
        sinks: Sequence[Sink] = (),
    ) -> None:
        self.settings = settings
        self.stages = list(stages)
        self.sinks = list(sinks)
        for stage in self.stages:
            stage.start()
        for sink in self.sinks:
            sink.start()
        self.codec = codec or AvroCodec()
        self.clock = clock or now_ms
        self.log: dict[str, list[Message]] = defaultdict(list)
        # every state as its changelog stores it: a stage's state must survive the round trip
        self.states: dict[str, dict[str, dict[str, Any]]] = {s.name: {} for s in stages}
        self._queue: deque[Message] = deque()
        self._spans = 0
        self._gates: dict[str, Ingress] = {}

    def publish_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Mapping[str, bytes] | None = None,
        links: tuple[bytes, ...] = (),
    ) -> Message:
        msg = Message(
            topic, len(self.log[topic]), key, value, dict(headers or {}), self.clock(), links
        )
        self.log[topic].append(msg)
        self._queue.append(msg)
        return msg

    def publish(self, topic: str, key: str, schema: str, record: Mapping[str, Any]) -> Message:
        return self.publish_raw(topic, key.encode(), self.codec.encode(schema, record))

    def _emit(self, out: Outbound, parent: Message | None) -> None:
        """Like `publish.Publisher`: the output's header names a new span (its `send`) in the
        trace it continues, and the links are kept on the message."""
        headers = {}
        trace = out.traceparent or (parent.headers.get(TRACEPARENT) if parent else None)
        if trace:
            parts = trace.decode(errors="replace").split("-")
            if len(parts) == 4:  # a W3C traceparent: the same trace, a new span id
                self._spans += 1
                parts[2] = f"{self._spans:016x}"
            headers[TRACEPARENT] = "-".join(parts).encode()
        self.publish_raw(
            out.topic,
            out.key.encode(),
            self.codec.encode(out.schema, out.record),
            headers,
            out.links,
        )

    def run(self, max_messages: int = 10_000_000) -> int:
        """Deliver queued messages (and everything they cause); returns how many were handled."""
        handled = 0
        while self._queue and handled < max_messages:
            msg = self._queue.popleft()
            handled += 1
            for stage in self.stages:
                if msg.topic in stage.inputs():
                    self._deliver(stage, msg)
            for sink in self.sinks:
                if msg.topic in sink.inputs():
                    self._write(sink, msg)
        return handled

    def close(self) -> None:
        for stage in self.stages:
            stage.close()
        for sink in self.sinks:
            sink.close()

    def _ingress(self, node: Stage[Any] | Sink) -> Ingress:
        """Each stage's gate (authentication, decoding, validation), as a worker runs it."""
        if node.name not in self._gates:
            self._gates[node.name] = Ingress(self.settings, self.codec, node)
        return self._gates[node.name]

    def _inbound(self, msg: Message) -> Inbound:
        return Inbound(msg.topic, 0, msg.offset, msg.key, msg.timestamp_ms, msg.headers)

    def _write(self, sink: Sink, msg: Message) -> None:
        inbound = self._inbound(msg)
        admitted = self._ingress(sink).admit(inbound, msg.value, self.clock())
        for out in admitted.outputs:
            self._emit(out, msg)
        if admitted.record is not None:
            sink.write(admitted.record, inbound)

    def _deliver(self, stage: Stage[Any], msg: Message) -> None:
        inbound = self._inbound(msg)
        now = self.clock()
        admitted = self._ingress(stage).admit(inbound, msg.value, now)
        for out in admitted.outputs:
            self._emit(out, msg)
        if admitted.record is None:
            return
        decoded = admitted.record
        key = stage.state_key(decoded)
        result = stage.handle(self.state(stage, key), decoded, inbound, now)
        self._store(stage, key, result.state)
        for out in result.outputs:
            self._emit(out, msg)

    def state(self, stage: Stage[Any], key: str) -> Any:
        """The key's typed state, read back from its stored form (None: no state)."""
        stored = self.states[stage.name].get(key) if stage.stateful else None
        return None if stored is None else stage.load_state(stored)

    def _store(self, stage: Stage[Any], key: str, state: Any) -> None:
        if not stage.stateful:
            return
        if state is None:
            self.states[stage.name].pop(key, None)
        else:
            self.states[stage.name][key] = stage.dump_state(state)

    def tick(self) -> None:
        """Run every stage's timers once (deadlines, retention), then deliver what they caused."""
        now = self.clock()
        for stage in self.stages:
            for key in list(self.states[stage.name]):
                state = self.state(stage, key)
                if stage.needs_tick(state, now):
                    result = stage.tick(state, now)
                    self._store(stage, key, result.state)
                    for out in result.outputs:
                        self._emit(out, None)
        self.run()

    def records(self, topic: str) -> list[dict[str, Any]]:
        return [self.codec.decode(m.value) for m in self.log[topic]]
