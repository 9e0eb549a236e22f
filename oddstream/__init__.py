"""oddstream: event streaming for betting and prediction markets.

This package holds what every role shares (errors, settings) and the
composition root (the CLI). The processing core lives in ``schemas`` and
``streams``; the I/O roles in ``consumers`` and ``gateway``.
"""

__version__ = "0.1.0"
