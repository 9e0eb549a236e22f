"""Topic names and which event goes to which topic. Pure."""

from __future__ import annotations

from dataclasses import dataclass

# event type -> topic suffix. Events about one market share a topic (and,
# keyed by market_id, a partition) so their order per market is kept.
TOPIC_OF_EVENT: dict[str, str] = {
    "BetPlaced": "bets",
    "BetSettled": "bets",
    "BetCancelled": "bets",
    "CashOut": "bets",
    "OddsChanged": "odds",
    "MarketStatusChanged": "odds",
    "MarketResulted": "odds",
    "ServiceHeartbeat": "system",
    "ApiCallRecorded": "system",
    "UserActivity": "users",
    "OddsWindowUpdated": "odds.window.1m",
    "PriceWindowUpdated": "analytics.prices.1m",
    "BetWindowUpdated": "analytics.bets.1m",
    "ServiceWindowUpdated": "analytics.services.1m",
    "RouteWindowUpdated": "analytics.routes.1m",
    "UserWindowUpdated": "analytics.users.1m",
    "UserBetRecorded": "bets.by-user",
    "WebhookEndpoint": "webhooks.endpoints",
    "WebhookAttempted": "webhooks.attempts",
    "WebhookMessagePending": "webhooks.retries",
    "WebhookMessageFailed": "webhooks.dead-letters",
    "PredictionMade": "predictions",
    "ValueSignalRaised": "predictions",
    "ModelEvaluated": "model-metrics",
    "ModelDriftDetected": "model-metrics",
    "AlertChanged": "alerts",
}

SOURCE_TOPICS = ("bets", "odds", "system", "users")
# what producers publish (the SDK, the HTTP API, the simulator)
SOURCE_EVENT_TYPES = tuple(t for t, suffix in TOPIC_OF_EVENT.items() if suffix in SOURCE_TOPICS)
# what the worker writes (the webhook registry's records come from the CLI and API)
DERIVED_TYPES = tuple(
    t for t, suffix in TOPIC_OF_EVENT.items() if suffix not in SOURCE_TOPICS and not t.startswith("Webhook")
)
WINDOW_EVENT_TYPES = (
    "OddsWindowUpdated",
    "PriceWindowUpdated",
    "BetWindowUpdated",
    "ServiceWindowUpdated",
    "RouteWindowUpdated",
    "UserWindowUpdated",
)


@dataclass(frozen=True)
class Topics:
    """Every topic name, under one prefix (tests use a fresh prefix each)."""

    prefix: str = "oddstream."

    def name(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    def for_event(self, event_type: str) -> str:
        return self.name(TOPIC_OF_EVENT[event_type])

    @property
    def odds(self) -> str:
        return self.name("odds")

    @property
    def bets(self) -> str:
        return self.name("bets")

    @property
    def bets_by_user(self) -> str:
        """Bets repartitioned by user (UserBetRecorded), written by the worker's bets stage and
        read by its user stage: the per-user windows and rules see all of a user's bets."""
        return self.name("bets.by-user")

    @property
    def odds_window_1m(self) -> str:
        return self.name("odds.window.1m")

    @property
    def late(self) -> str:
        """Events that arrived after a window they belong to closed: never merged, kept here."""
        return self.name("late-events")

    @property
    def predictions(self) -> str:
        """Forecasts and value signals (PredictionMade, ValueSignalRaised)."""
        return self.name("predictions")

    @property
    def model_metrics(self) -> str:
        """Progressive evaluation and drift (ModelEvaluated, ModelDriftDetected)."""
        return self.name("model-metrics")

    @property
    def alerts(self) -> str:
        """Alert notifications (AlertChanged)."""
        return self.name("alerts")

    def insights(self) -> list[str]:
        """The derived topics besides windows: predictions, model metrics, alerts."""
        return [self.predictions, self.model_metrics, self.alerts]

    def windows(self) -> list[str]:
        """The derived window topics (current updates and finals)."""
        return [self.for_event(t) for t in WINDOW_EVENT_TYPES]

    @property
    def dead_letter(self) -> str:
        """Records no role could decode or accept: original bytes plus a reason header."""
        return self.name("dead-letter")

    @property
    def webhook_endpoints(self) -> str:
        """Compacted registry of webhook endpoints."""
        return self.name("webhooks.endpoints")

    @property
    def webhook_attempts(self) -> str:
        """Every webhook delivery attempt (WebhookAttempted), sunk to webhook_attempts."""
        return self.name("webhooks.attempts")

    @property
    def webhook_retries(self) -> str:
        """Webhook messages waiting for their next attempt (compacted; the retry schedule)."""
        return self.name("webhooks.retries")

    @property
    def webhook_dead_letters(self) -> str:
        """Webhook messages given up on, with their payload and attempts."""
        return self.name("webhooks.dead-letters")

    def all(self) -> list[str]:
        """Every topic oddstream creates, sources first."""
        suffixes = [
            *SOURCE_TOPICS,
            "bets.by-user",
            *(TOPIC_OF_EVENT[t] for t in WINDOW_EVENT_TYPES),
            # the worker's other outputs: created here like the rest, never left to the
            # broker's auto-creation (its default partitions and replication, or a refused send)
            "predictions",
            "model-metrics",
            "alerts",
            "late-events",
            "dead-letter",
            "webhooks.endpoints",
            "webhooks.attempts",
            "webhooks.retries",
            "webhooks.dead-letters",
        ]
        return [self.name(s) for s in suffixes]

    def compacted(self) -> set[str]:
        return {self.webhook_endpoints, self.webhook_retries}
