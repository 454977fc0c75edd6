"""Telegram → Alertmanager: commands and buttons people use where the alert is."""
