"""A small Prometheus text-format registry (counters, gauges, histograms)."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable, Sequence

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Labels = tuple[tuple[str, str], ...]


def _fmt_labels(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


class Counter:
    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.values: dict[Labels, float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] += amount

    def value(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        if not self.values:
            lines.append(f"{self.name} 0")
        lines += [f"{self.name}{_fmt_labels(k)} {v:g}" for k, v in sorted(self.values.items())]
        return lines


class Gauge:
    """A gauge read at scrape time from a callback (set by the node)."""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self.values: dict[Labels, float] = {(): 0.0}

    def set(self, value: float, **labels: str) -> None:
        if labels:
            self.values.pop((), None)
        self.values[tuple(sorted(labels.items()))] = value

    @property
    def value(self) -> float:
        return self.values.get((), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge"]
        lines += [f"{self.name}{_fmt_labels(k)} {v:g}" for k, v in sorted(self.values.items())]
        return lines


class Histogram:
    def __init__(
        self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS
    ) -> None:
        self.name = name
        self.help = help_text
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            cumulative += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {cumulative}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{self.name}_sum {self.sum:g}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class Metrics:
    """The node's metrics, rendered at GET /metrics."""

    def __init__(self) -> None:
        self.sent = Counter("handover_packets_sent_total", "Packets sealed and queued.")
        self.received = Counter(
            "handover_packets_received_total", "Packets received, by status (accepted/rejected)."
        )
        self.invalid = Counter(
            "handover_packets_invalid_total",
            "Packets refused as invalid_packet, by stage (authenticated sender or not).",
        )
        self.attempts = Counter(
            "handover_delivery_attempts_total", "Delivery attempts, by outcome."
        )
        self.deliveries = Counter(
            "handover_deliveries_finished_total", "Deliveries finished, by final status."
        )
        self.outbox_depth = Gauge("handover_outbox_depth", "Pending deliveries.")
        self.overdue = Gauge("handover_overdue_expectations", "Overdue continuity-of-care items.")
        self.receive_seconds = Histogram(
            "handover_receive_seconds", "Time to receive, store and receipt one packet."
        )
        self.submit_seconds = Histogram(
            "handover_submit_seconds", "Time to validate, log, seal and queue one submission."
        )
        self.delivery_seconds = Histogram(
            "handover_delivery_seconds", "Time from queueing a packet to its stored receipt."
        )
        self.budget_in_use = Gauge(
            "handover_byte_budget_in_use_bytes", "Bytes of request bodies held, by budget."
        )
        self.budget_exhausted = Gauge(
            "handover_byte_budget_exhausted_total",
            "Requests refused because the byte budget stayed full, by budget.",
        )
        self.security_refusals = Gauge(
            "handover_security_refusals_total",
            "Refusals counted in the security log instead of the audit log.",
        )
        self.collectors: list[Callable[[], object]] = []

    def render(self) -> str:
        lines: list[str] = []
        for metric in (
            self.sent,
            self.received,
            self.invalid,
            self.attempts,
            self.deliveries,
            self.outbox_depth,
            self.overdue,
            self.budget_in_use,
            self.budget_exhausted,
            self.security_refusals,
            self.receive_seconds,
            self.submit_seconds,
            self.delivery_seconds,
        ):
            lines += metric.render()
        return "\n".join(lines) + "\n"
