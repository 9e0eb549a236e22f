"""The market simulator: a seeded model of markets, bookmakers and bettors (``model``) and
the runner that paces it onto Kafka (``run``)."""
