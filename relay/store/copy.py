"""``relay store migrate``: copy a node's SQLite store into an empty PostgreSQL database.

One transaction on the target: every table in parent-before-child order, row counts compared
table by table before the commit, identity sequences moved past the copied ids. Any difference,
or a target that already holds data, rolls everything back: the target is left as it was, and the
source is only read.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import StoreError
from .engine import Engine
from .schema import IDENTITY_TABLES, TABLES

#: Runtime state of a running relay, not data: a stopped relay has none worth keeping.
SKIPPED = frozenset({"live_tunnels", "nodes", "sso_codes"})


def columns(engine: Engine, table: str) -> list[str]:
    if engine.kind == "sqlite":
        return [str(row[1]) for row in engine.execute(f"PRAGMA table_info({table})")]
    rows = engine.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position",
        (table,),
    )
    return [str(row[0]) for row in rows]


def count(engine: Engine, table: str) -> int:
    return int(engine.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608 - TABLES


def copy_tables(source: Engine, target: Engine, extra_keys: Mapping[str, str]) -> dict[str, int]:
    """Copy every table of ``source`` into ``target`` (which must hold none of it); returns rows
    copied per table. ``extra_keys`` go into ``cluster_keys`` too (the data dir's SSH host key)."""
    held = {table: count(target, table) for table in TABLES}
    if any(held.values()):
        busy = ", ".join(f"{table} ({n})" for table, n in held.items() if n)
        raise StoreError(
            f"{target.where} already holds data: {busy}; migrate copies into an empty database only"
        )
    copied: dict[str, int] = {}
    with target.transaction():
        for table in TABLES:
            if table in SKIPPED:
                continue
            names = columns(target, table)
            listed = ", ".join(names)
            # Table and column names come from TABLES and the catalog, never from input.
            rows = source.execute(f"SELECT {listed} FROM {table}").fetchall()  # noqa: S608
            if rows:
                marks = ", ".join("?" for _ in names)
                target.executemany(f"INSERT INTO {table} ({listed}) VALUES ({marks})", rows)  # noqa: S608
            copied[table] = len(rows)
        for name, value in extra_keys.items():
            added = target.execute(
                "INSERT INTO cluster_keys (name, value, created_at) VALUES (?, ?, 0) ON CONFLICT DO NOTHING",
                (name, value),
            ).rowcount
            copied["cluster_keys"] = copied.get("cluster_keys", 0) + added
        for table, read in copied.items():
            got = count(target, table)
            if got != read:
                raise StoreError(
                    f"{table}: {read} rows read from the source, {got} in the target; nothing was copied"
                )
        for table in IDENTITY_TABLES:
            target.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "  # noqa: S608
                f"coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
    return copied
