"""The event log's schema and its migrations, applied in order on open."""

from __future__ import annotations

__all__ = ["MIGRATIONS", "PRAGMAS"]

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    # NORMAL in WAL mode survives a crashed process (kill -9) intact; only a power loss can drop
    # the newest transactions, which the daemon then replans (values are written first).
    "PRAGMA synchronous=NORMAL",
    "PRAGMA busy_timeout=10000",
)

MIGRATIONS: tuple[str, ...] = (
    # 1: events, the current state per asset partition, dynamic partition keys.
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        timestamp TEXT NOT NULL,
        kind TEXT NOT NULL,
        asset TEXT,
        partition TEXT,
        run_id TEXT,
        data_version TEXT,
        payload TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_by_node ON events(asset, partition, id);
    CREATE INDEX events_by_kind ON events(kind, id);
    CREATE INDEX events_by_run ON events(run_id) WHERE run_id IS NOT NULL;
    CREATE INDEX events_by_time ON events(timestamp);
    CREATE TABLE current_state (
        asset TEXT NOT NULL,
        partition TEXT NOT NULL,  -- '' for an unpartitioned asset
        record TEXT NOT NULL,
        PRIMARY KEY (asset, partition)
    ) WITHOUT ROWID;
    CREATE TABLE dynamic_partitions (
        name TEXT NOT NULL,
        key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (name, key)
    ) WITHOUT ROWID;
    """,
    # 2: per-asset clock bookkeeping (first evaluation, last cron tick handled).
    """
    CREATE TABLE schedules (
        asset TEXT PRIMARY KEY,
        first_seen TEXT NOT NULL,
        handled_through TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 3: retention keeps the newest event of each kind per asset partition (found through this
    # index); a table a recovering daemon writes to, to learn whether the disk takes writes.
    """
    CREATE INDEX events_by_node_kind ON events(asset, partition, kind, id);
    CREATE TABLE write_probe (n INTEGER);
    """,
    # 4: small values (pickled, at most SMALL_VALUE_MAX bytes) of the default value store,
    # written in the transaction that records their materialization.
    """
    CREATE TABLE small_values (
        asset TEXT NOT NULL,
        partition TEXT NOT NULL,  -- '' for an unpartitioned asset
        version TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (asset, partition)
    );
    """,
    # 5: an asset partition's events are found through events_by_node_kind (then sorted by
    # id); an index of its own cost every event an update of one more b-tree page (~5% of a
    # trivial run), for queries that had to sort anyway (all partitions of an asset).
    """
    DROP INDEX IF EXISTS events_by_node;
    """,
    # 6: when a dynamic partition key was added (the engine's clock), for a max_age that
    # counts from then: a key that did not exist cannot be late. NULL for keys added before.
    """
    ALTER TABLE dynamic_partitions ADD COLUMN added_at TEXT;
    """,
    # 7: a run's start is found through events_by_node_kind (its partition is known where it
    # is asked for, at open); an index of every event by run cost each run's commit ~1.5 of
    # its ~12 pages in the WAL (~12% of its CPU) for those few lookups.
    """
    DROP INDEX IF EXISTS events_by_run;
    """,
)
