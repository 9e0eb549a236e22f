"""The WebSocket gateway: channel subscriptions fed from Kafka."""
