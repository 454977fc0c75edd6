"""Where delivery state lives.

The database is the source of truth; the broker only distributes work.
"""

from bridge.store.base import Accepted, NewDelivery, Store
from bridge.store.postgres import PostgresStore

__all__ = ["Accepted", "NewDelivery", "PostgresStore", "Store"]
