"""Where delivery state lives.

The database is the source of truth; the broker only distributes work.
"""

from bridge.store.postgres import Accepted, NewDelivery, PostgresStore

__all__ = ["Accepted", "NewDelivery", "PostgresStore"]
