"""The node's metrics, through prometheus-client (rendered at GET /metrics on the
local listener).

Each node has its own registry (several nodes may share a process in tests),
with the process and platform collectors. Label values are escaped by the
library. Metric names are part of the operations interface: dashboards and
alert rules in deploy/monitoring/ use them.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DELIVERY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)


class Counter:
    """A counter with fixed label names: `inc(amount, **labels)`."""

    def __init__(
        self, registry: CollectorRegistry, name: str, help_text: str, labels: Sequence[str] = ()
    ) -> None:
        self._metric = _Counter(name, help_text, list(labels), registry=registry)
        self._labelled = bool(labels)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        target = self._metric.labels(**labels) if self._labelled else self._metric
        target.inc(amount)


class Gauge:
    """A gauge with fixed label names: `set(value, **labels)`."""

    def __init__(
        self, registry: CollectorRegistry, name: str, help_text: str, labels: Sequence[str] = ()
    ) -> None:
        self._metric = _Gauge(name, help_text, list(labels), registry=registry)
        self._labelled = bool(labels)

    def set(self, value: float, **labels: str) -> None:
        target = self._metric.labels(**labels) if self._labelled else self._metric
        target.set(value)


class Histogram:
    """A histogram with fixed label names: `observe(value, **labels)`."""

    def __init__(
        self,
        registry: CollectorRegistry,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        self._metric = _Histogram(
            name, help_text, list(labels), registry=registry, buckets=tuple(buckets)
        )
        self._labelled = bool(labels)

    def observe(self, value: float, **labels: str) -> None:
        target = self._metric.labels(**labels) if self._labelled else self._metric
        target.observe(value)


class Metrics:
    """Every metric the node exports."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.sent = Counter(r, "handover_packets_sent", "Packets sealed and queued.", ["schema"])
        self.received = Counter(
            r, "handover_packets_received", "Packets received, by status.", ["status"]
        )
        self.invalid = Counter(
            r,
            "handover_packets_invalid",
            "Packets refused as invalid_packet, by stage (authenticated sender or not).",
            ["stage"],
        )
        self.attempts = Counter(
            r, "handover_delivery_attempts", "Delivery attempts, by outcome.", ["outcome"]
        )
        self.deliveries = Counter(
            r, "handover_deliveries_finished", "Deliveries finished, by final status.", ["status"]
        )
        self.attachment_bytes = Counter(
            r,
            "handover_attachment_bytes",
            "Attachment stream bytes sent to peers and stored from peers, by direction.",
            ["direction"],
        )
        self.dead_letters = Counter(
            r, "handover_dead_letters", "Deliveries that expired undelivered, by peer.", ["peer"]
        )
        self.peer_failures = Counter(
            r, "handover_peer_failures", "Failed delivery attempts, by peer.", ["peer"]
        )
        self.peer_last_success = Gauge(
            r,
            "handover_peer_last_success_timestamp_seconds",
            "When a delivery to the peer last ended with a verified receipt.",
            ["peer"],
        )
        self.peer_keyset_expiry = Gauge(
            r,
            "handover_peer_keyset_expiry_timestamp_seconds",
            "When the peer's accepted keyset expires.",
            ["peer"],
        )
        self.peer_delivery_seconds = Histogram(
            r,
            "handover_peer_delivery_seconds",
            "Time from queueing a packet to its stored receipt, by peer.",
            ["peer"],
            DELIVERY_BUCKETS,
        )
        self.outbox_depth = Gauge(r, "handover_outbox_depth", "Pending deliveries.")
        self.outbox_oldest = Gauge(
            r, "handover_outbox_oldest_age_seconds", "Age of the oldest pending delivery."
        )
        self.overdue = Gauge(
            r, "handover_overdue_expectations", "Overdue continuity-of-care items."
        )
        self.webhook_queue = Gauge(
            r,
            "handover_webhook_queue",
            "Webhook deliveries queued, by state (pending, failed: given up after 3 days).",
            ["state"],
        )
        self.event_waits = Gauge(
            r, "handover_event_waits", "Event long-polls and streams open now."
        )
        self.audit_chain_ok = Gauge(
            r,
            "handover_audit_chain_ok",
            "1 while the tail of the own audit chain verified at start, 0 if it is broken.",
        )
        self.budget_in_use = Gauge(
            r,
            "handover_byte_budget_in_use_bytes",
            "Bytes of request bodies held, by budget.",
            ["budget"],
        )
        self.budget_exhausted = Gauge(
            r,
            "handover_byte_budget_exhausted_total",
            "Requests refused because the byte budget stayed full, by budget.",
            ["budget"],
        )
        self.security_refusals = Gauge(
            r,
            "handover_security_refusals_total",
            "Refusals counted in the security log instead of the audit log.",
        )
        self.access_refused = Counter(
            r,
            "handover_access_refused",
            "Local API requests refused at the edge, by error (unauthorized: no valid token;"
            " forbidden: the role may not) and reason (missing, unknown, disabled, expired, role).",
            ["code", "reason"],
        )
        self.receive_seconds = Histogram(
            r, "handover_receive_seconds", "Time to receive, store and receipt one packet."
        )
        self.submit_seconds = Histogram(
            r,
            "handover_submit_seconds",
            "Time to validate, log, seal and queue one submission.",
        )
        self.delivery_seconds = Histogram(
            r,
            "handover_delivery_seconds",
            "Time from queueing a packet to its stored receipt.",
            buckets=DELIVERY_BUCKETS,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
