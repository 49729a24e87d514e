"""The agent's durable queue: events wait here, numbered, until the dashboard acks them.

SQLite in WAL mode (one file, crash-safe, no server). Each event gets the node's next
sequence number when it is spooled; an ack deletes everything up to its number, so a
restart or a reconnect resends exactly what was not acknowledged, and the dashboard's
(node, seq) uniqueness makes a resend harmless. Past `cap` events the oldest are deleted
and the calls they stood for (their `count`) are added to `dropped`, which survives
restarts and is reported in every heartbeat.
"""

from __future__ import annotations

import json
import sqlite3
import threading

DEFAULT_CAP = 1_000_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, body TEXT NOT NULL, count INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('next_seq', 1), ('dropped', 0), ('fresh', 1);
"""


class Spool:
    def __init__(self, path: str = ":memory:", cap: int = DEFAULT_CAP):
        self.path, self.cap = path, cap
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # the uplink's pump and sender use it from threads
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL: durable across process crashes
            self._db.executescript(SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(events)")}
            if "count" not in columns:  # a spool written by an older agent: its rows were one call each
                self._db.execute("ALTER TABLE events ADD COLUMN count INTEGER NOT NULL DEFAULT 1")

    def _meta(self, key: str) -> int:
        return self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    def append(self, events: list[dict]) -> int:
        """Number and store events (in order); returns the last number given."""
        if not events:
            return self.last_seq
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                first = self._meta("next_seq")
                rows = [
                    (first + i, json.dumps(e, separators=(",", ":")), e.get("count", 1)) for i, e in enumerate(events)
                ]
                self._db.executemany("INSERT INTO events (seq, body, count) VALUES (?, ?, ?)", rows)
                self._db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (first + len(rows),))
                excess = self._count() - self.cap
                if excess > 0:
                    (last,) = self._db.execute(
                        "SELECT seq FROM events ORDER BY seq LIMIT 1 OFFSET ?", (excess - 1,)
                    ).fetchone()  # the newest of the rows that go
                    (calls,) = self._db.execute("SELECT SUM(count) FROM events WHERE seq <= ?", (last,)).fetchone()
                    self._db.execute("DELETE FROM events WHERE seq <= ?", (last,))
                    self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (calls,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return first + len(rows) - 1

    def read(self, after: int, limit: int) -> list[dict]:
        """Up to `limit` events numbered above `after`, oldest first, each with its `seq`."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, body FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit)
            ).fetchall()
        return [json.loads(body) | {"seq": seq} for seq, body in rows]

    def ack(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events WHERE seq <= ?", (seq,))

    def welcome(self, last_stored: int) -> None:
        """The dashboard holds this node's events up to `last_stored`.

        A spool that has talked to the dashboard before drops what is at or below it (stored,
        only the ack was lost). A new spool (first run, or its file was lost) never sent its
        events, so they are renumbered to follow `last_stored` instead of being mistaken
        for ones the dashboard has."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            if self._meta("fresh"):
                first = self._db.execute("SELECT min(seq) FROM events").fetchone()[0] or self._meta("next_seq")
                shift = max(0, last_stored + 1 - first)
                if shift:  # via negative numbers, so no two rows ever share a key mid-update
                    self._db.execute("UPDATE events SET seq = -(seq + ?)", (shift,))
                    self._db.execute("UPDATE events SET seq = -seq")
                    self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'next_seq'", (shift,))
                self._db.execute("UPDATE meta SET value = 0 WHERE key = 'fresh'")
            else:
                self._db.execute("DELETE FROM events WHERE seq <= ?", (last_stored,))
            self._db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_seq'", (last_stored + 1,))
            self._db.execute("COMMIT")

    def _count(self) -> int:
        """Rows waiting. Numbers are consecutive and only a prefix is ever deleted (ack, cap,
        welcome), so this is an index lookup, not count(*)'s scan of every row: the spool
        is counted on every append, and a backlog is exactly when it is large."""
        (low,) = self._db.execute("SELECT min(seq) FROM events").fetchone()
        return 0 if low is None else self._meta("next_seq") - low

    @property
    def depth(self) -> int:
        with self._lock:
            return self._count()

    @property
    def dropped(self) -> int:
        with self._lock:
            return self._meta("dropped")

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._meta("next_seq") - 1

    def close(self) -> None:
        with self._lock:
            self._db.close()
