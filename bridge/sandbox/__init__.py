"""A sandbox Telegram: the Bot API served locally, for the demo and the tests."""
