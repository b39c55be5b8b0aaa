"""The custom aggregation level: materialized views and summary tables, refreshed.

``Aggregate`` keeps a named query's result in the database (a materialized view on
PostgreSQL, a summary table on SQLite and MariaDB) and serves it by key through a
cache; ``Every``, ``Cron`` and ``OnChange`` say when it is refreshed.
"""

from cachewise.aggregates.aggregate import Aggregate
from cachewise.aggregates.schedules import Cron, Every, OnChange

__all__ = ["Aggregate", "Cron", "Every", "OnChange"]
