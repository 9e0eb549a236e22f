"""The webhook dispatcher: signed deliveries of events to registered endpoints."""
