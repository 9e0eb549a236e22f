"""The HTTP API role (``oddstream api``): event ingest and webhook endpoints over HTTP."""
