"""A database server's own view of its client connections (for ``cachewise stats URL``).

A pool lives in the process that owns it; what any other process can watch is the
server's side: how many connections each application holds, how many are running a
query, idle, idle inside a transaction (holding a pool slot and locks) or waiting on a
lock, against the server's ``max_connections``. PostgreSQL (``pg_stat_activity``) and
MariaDB/MySQL (``information_schema.processlist``); SQLite has no server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cachewise.errors import ConfigurationError

_POSTGRES = sa.text(
    "SELECT coalesce(nullif(application_name, ''), '(none)') AS app, state, "
    "wait_event_type = 'Lock' AS locked, count(*) AS n FROM pg_stat_activity "
    "WHERE datname = current_database() AND backend_type = 'client backend' "
    "AND pid <> pg_backend_pid() GROUP BY 1, 2, 3"
)
_MYSQL = sa.text(
    "SELECT coalesce(nullif(user, ''), '(none)') AS app, command AS state, "
    "state LIKE '%%lock%%' AS locked, count(*) AS n FROM information_schema.processlist "
    "WHERE id <> connection_id() GROUP BY 1, 2, 3"
)
_STATES = {
    "active": "active",
    "Query": "active",
    "Execute": "active",
    "idle": "idle",
    "Sleep": "idle",
    "idle in transaction": "idle_in_transaction",
    "idle in transaction (aborted)": "idle_in_transaction",
}


@dataclass(frozen=True)
class Connections:
    """Client connections to one database, by state, and the busiest applications."""

    total: int
    active: int
    idle: int
    idle_in_transaction: int
    waiting_on_lock: int
    max_connections: int
    by_application: dict[str, int] = field(default_factory=dict)
    """Connections per ``application_name`` (PostgreSQL) or user (MariaDB), most first."""

    def as_dict(self) -> dict[str, Any]:
        """The numbers as a plain dict (for JSON)."""
        return asdict(self)


def read_connections(engine: Engine, *, top: int | None = None) -> Connections:
    """One snapshot of the server's client connections to ``engine``'s database.

    ``top`` keeps only that many of the busiest applications (``None``: all of them).
    """
    dialect = engine.dialect.name
    if dialect == "sqlite":
        raise ConfigurationError(
            "SQLite has no server and so no connections to watch; "
            "'cachewise pool URL' probes a pool in this process"
        )
    if dialect not in {"postgresql", "mysql", "mariadb"}:
        raise ConfigurationError(f"cachewise stats watches PostgreSQL and MariaDB, not {dialect}")
    postgres = dialect == "postgresql"
    with engine.connect() as conn:
        rows = conn.execute(_POSTGRES if postgres else _MYSQL).all()
        limit = conn.execute(
            sa.text("SHOW max_connections" if postgres else "SELECT @@max_connections")
        ).scalar_one()
    counts = {"active": 0, "idle": 0, "idle_in_transaction": 0}
    apps: dict[str, int] = {}
    total = locked = 0
    for app, state, is_locked, n in rows:
        total += n
        locked += n if is_locked else 0
        bucket = _STATES.get(str(state))
        if bucket is not None:
            counts[bucket] += n
        apps[str(app)] = apps.get(str(app), 0) + n
    busiest = dict(sorted(apps.items(), key=lambda kv: (-kv[1], kv[0]))[:top])
    return Connections(
        total=total,
        waiting_on_lock=locked,
        max_connections=int(limit),
        by_application=busiest,
        **counts,
    )
