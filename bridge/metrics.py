"""Every Prometheus metric the bridge exports, in one place, on a registry passed in.

Label values are bounded on purpose: sources, outcomes and reasons, never
fingerprints or chat ids, so a storm cannot blow up the time series count.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Dependency(enum.StrEnum):
    """What the bridge waited for."""

    STORE = "store"
    BROKER = "broker"


class WaitStage(enum.StrEnum):
    """Where it waited."""

    START = "start"  # the process, before it can serve
    CLAIM = "claim"  # a queue message, held un-acked until the claim goes through
    RECORD = "record"  # Telegram's answer, until the store takes it or the lease ends


class StoreCounter:
    """A counter the store keeps, exported as last read.

    For what another process does to the rows (an operator's command runs
    once and is never scraped): the total lives in the store, and the
    scheduler reads it each pass. Nothing is exported before the first read,
    so a restart does not look like a jump from 0.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._documentation = documentation
        self._value: float | None = None
        registry.register(self)

    def set(self, value: float) -> None:
        self._value = value

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield CounterMetricFamily(self._name, self._documentation)

    def collect(self) -> Iterator[CounterMetricFamily]:
        if self._value is not None:
            yield CounterMetricFamily(self._name, self._documentation, value=self._value)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.webhooks = Counter(
            "alertbridge_webhooks_received_total",
            "Webhook requests, by source and outcome (accepted, duplicate, or the error).",
            ["source", "outcome"],
            registry=r,
        )
        self.producer_messages = Counter(
            "alertbridge_producer_messages_total",
            "Producers' messages, by producer (as configured) and outcome: accepted, "
            "replayed, conflict, refused_<status>, store_unavailable; unauthorized "
            "requests with an empty producer.",
            ["producer", "outcome"],
            registry=r,
        )
        self.ingress_messages = Counter(
            "alertbridge_ingress_messages_total",
            "Messages consumed from the RabbitMQ ingress, by producer (the routing key "
            "when it names a configured producer, else empty) and outcome: accepted, "
            "replayed, store_unavailable (a try that stored nothing; tried again), "
            "rejected_<status> (sent to the rejected queue with its reason).",
            ["producer", "outcome"],
            registry=r,
        )
        self.recipient_links = Counter(
            "alertbridge_recipient_links_total",
            "Recipients' links, by producer and event: created (a link handed out), "
            "linked (/start with a valid token), refused (/start with a used or expired "
            "token; no producer), unlinked (per recipient, by /stop), unlinked_message "
            "(a message to a recipient not linked, answered 409), waiting_message (one "
            "accepted to wait for the link: wait_for_link), released_message (a waiting "
            "message given its delivery by the link), expired_message (a waiting message "
            "that failed, not_linked, no link in time).",
            ["producer", "event"],
            registry=r,
        )
        self.deliveries_created = Counter(
            "alertbridge_deliveries_created_total",
            "Delivery rows created (one per occurrence and destination).",
            registry=r,
        )
        self.deliveries_finished = Counter(
            "alertbridge_deliveries_finished_total",
            "Deliveries that reached a terminal state, by state and reason class.",
            ["state", "reason"],
            registry=r,
        )
        self.retries = Counter(
            "alertbridge_delivery_retries_total",
            "Sends that will be retried, by reason class.",
            ["reason"],
            registry=r,
        )
        self.ambiguous = Counter(
            "alertbridge_deliveries_ambiguous_total",
            "Deliveries whose fate at Telegram is unknown (lease expired or no answer), "
            "by how they were settled (assume_sent or resend).",
            ["policy"],
            registry=r,
        )
        self.claims_missed = Counter(
            "alertbridge_claims_missed_total",
            "Queue messages whose delivery was already taken or finished (redeliveries).",
            registry=r,
        )
        self.leases_expired_unsent = Counter(
            "alertbridge_leases_expired_unsent_total",
            "Claimed deliveries whose lease ran out before their request was written: "
            "not sent, queued again (not ambiguous).",
            registry=r,
        )
        self.store_retries = Counter(
            "alertbridge_store_retries_total",
            "Outcomes the worker recorded again because the store was unavailable.",
            registry=r,
        )
        self.claims_deferred = Counter(
            "alertbridge_claims_deferred_total",
            "Queue messages whose delivery must wait (not due, or behind an older one "
            "of its alert group in the same chat).",
            registry=r,
        )
        self.thread_edits = Counter(
            "alertbridge_thread_edits_total",
            "Edits of a group's first message to show its current state, by outcome.",
            ["outcome"],
            registry=r,
        )
        self.republished = Counter(
            "alertbridge_deliveries_republished_total",
            "Rows the scheduler published again (broker was down, retry due, or message lost).",
            registry=r,
        )
        self.publish_failures = Counter(
            "alertbridge_publish_failures_total",
            "Publishes the broker did not confirm (rows stay queued for the scheduler).",
            registry=r,
        )
        self.telegram_latency = Histogram(
            "alertbridge_telegram_request_seconds",
            "Bot API sendMessage latency, by outcome.",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.delivered_latency = Histogram(
            "alertbridge_webhook_to_delivered_seconds",
            "From the webhook's acceptance to Telegram's answer for the delivered message.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
            registry=r,
        )
        self.queue_depth = Gauge(
            "alertbridge_queue_depth",
            "Deliveries not finished yet (queued, sending or waiting to retry); "
            "updated by the scheduler, so exported by worker processes.",
            registry=r,
        )
        self.oldest_queued = Gauge(
            "alertbridge_oldest_queued_seconds",
            "Age of the oldest unfinished delivery; 0 when there is none.",
            registry=r,
        )
        self.bot_commands = Counter(
            "alertbridge_bot_commands_total",
            "Bot commands and button presses, by command and outcome (ok, denied, invalid, error).",
            ["command", "outcome"],
            registry=r,
        )
        self.rate_limit_wait = Histogram(
            "alertbridge_rate_limit_wait_seconds",
            "Time a send waited for its chat's and the bot's limits, right before sending.",
            buckets=(0, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=r,
        )
        self.rate_limit_parked = Counter(
            "alertbridge_rate_limit_parked_total",
            "Deliveries parked in the store until their chat's next free slot.",
            registry=r,
        )
        self.digests = Counter(
            "alertbridge_storm_digests_total",
            "Storm digests sent: a chat's backlog folded into one message "
            "(the folded deliveries count as finished, suppressed, reason digest).",
            registry=r,
        )
        self.telegram_rate_limited = Counter(
            "alertbridge_telegram_rate_limited_total",
            "429 answers from Telegram.",
            registry=r,
        )
        self.dependency_waits = Counter(
            "alertbridge_dependency_waits_total",
            "Backoff pauses waiting for a store or broker that could not be reached, "
            "by dependency (store, broker) and stage (start, claim, record).",
            ["dependency", "stage"],
            registry=r,
        )
        self.unrecorded = Counter(
            "alertbridge_outcomes_unrecorded_total",
            "Telegram answers the store could not take before the delivery's lease ran "
            "out; the scheduler settles those rows as an expired lease.",
            registry=r,
        )
        self.pruned = Counter(
            "alertbridge_pruned_total",
            "Rows deleted by retention (config retention), by table.",
            ["table"],
            registry=r,
        )
        self.operator_resends = StoreCounter(
            "alertbridge_operator_resends",
            "Ambiguous or failed deliveries an operator sent again (alertbridge deliveries "
            "resend), as the store counts them; read by the scheduler, so exported by "
            "worker processes.",
            r,
        )
        self.receipts = Counter(
            "alertbridge_receipts_total",
            "Producers' delivery receipts, by producer and the outcome of one send: sent "
            "(2xx), retried (not taken, sent again later), gave_up (no 2xx within "
            "receipts.give_up_after), unconfigured (the producer or its callback_url is "
            "gone from the config: given up at once).",
            ["producer", "outcome"],
            registry=r,
        )
        self.receipts_pending = Gauge(
            "alertbridge_receipts_pending",
            "Receipts not yet sent nor given up; updated by the receipt sender, so "
            "exported by worker processes.",
            registry=r,
        )
        self.dead_letters = Counter(
            "alertbridge_dead_letters_total",
            "Queue messages found dead-lettered and taken off the dead-letter queue, by "
            "reason; an unfinished delivery's row stays in the store, which publishes it again.",
            ["reason"],
            registry=r,
        )
