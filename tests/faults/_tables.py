"""The (id, v) table the crash tests write to: create, read back, drop, through connect()."""

from __future__ import annotations

import sqlalchemy as sa

from cachewise import connect


def create_table(url: str, table: str, *, check: bool = False) -> None:
    """Create ``table`` (id integer key, v bigint) if it does not exist.

    ``check=True`` adds ``CHECK (v >= 0)``: negative values are rows the database refuses.
    """
    engine = connect(url, pool_size=0)
    try:
        meta = sa.MetaData()
        sa.Table(
            table,
            meta,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("v", sa.BigInteger, nullable=False),
            *([sa.CheckConstraint("v >= 0", name=f"{table}_v_check")] if check else []),
        )
        meta.create_all(engine)
    finally:
        engine.dispose()


def read_rows(url: str, table: str) -> dict[int, int]:
    """Every row of ``table`` as {id: v}."""
    engine = connect(url, pool_size=0)
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(f'SELECT id, v FROM "{table}"'))
            return {int(row[0]): int(row[1]) for row in result}
    finally:
        engine.dispose()


def drop_table(url: str, table: str) -> None:
    """Drop ``table`` if it exists."""
    engine = connect(url, pool_size=0)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    finally:
        engine.dispose()
