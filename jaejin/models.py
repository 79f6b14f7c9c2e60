"""Imports every capability's tables so the metadata (and Alembic) sees the whole schema."""

from jaejin.core import accounts, audit, events
from jaejin.core.database import Base
from jaejin.directory import store as directory_store
from jaejin.monitoring import photo_store as monitoring_photo_store  # noqa: F401
from jaejin.monitoring import store as monitoring_store  # noqa: F401
from jaejin.policy import records as policy_records  # noqa: F401  (the share index)
from jaejin.scheduling import store as scheduling_store  # noqa: F401
from jaejin.visits import store as visits_store  # noqa: F401

metadata = Base.metadata

__all__ = ["accounts", "audit", "directory_store", "events", "metadata"]
