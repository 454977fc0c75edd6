"""Alertbridge: Alertmanager webhooks to Telegram, each notification exactly once."""

__version__ = "0.1.0"
