"""Query plans on PostgreSQL: bench/scale.py's experiments in a throwaway database, an API on it, the SELECTs a
request sends captured as the API sends them (SQLAlchemy's before_cursor_execute) and EXPLAINed."""
from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
from sqlalchemy import event

from testkit import servers
from testkit.env import apply_settings, clear_shared_caches


def dispose(url: str) -> None:
    """Close the pooled connections to `url` (before its database is dropped)."""
    from shared.infra.db.session import get_engine

    get_engine(url).dispose()


@contextmanager
def built_database(prefix: str, build: Callable[[str], None]) -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL, filled by `build(url)`, dropped afterwards."""
    url = servers.create_database(servers.MACHINE_PG, prefix=prefix)
    try:
        build(url)
        yield url
    finally:
        dispose(url)
        servers.drop_database(url)


@contextmanager
def harness_on(url: str, data_dir):
    """An ApiHarness whose database is `url`."""
    from testkit.api import ApiHarness

    monkeypatch = pytest.MonkeyPatch()
    try:
        yield ApiHarness(apply_settings(monkeypatch, data_dir, database_url=url))
    finally:
        dispose(url)
        monkeypatch.undo()
        clear_shared_caches()


@contextmanager
def statements(url: str, tables: str = r"images|nuclei"):
    """The SELECTs naming one of `tables` sent on `url`'s engine meanwhile: (sql, parameters, streamed)."""
    from shared.infra.db.session import get_engine

    engine, seen = get_engine(url), []

    def record(_conn, _cursor, statement, parameters, context, _many):
        if statement.lstrip().upper().startswith("SELECT") and re.search(rf"\b({tables})\b", statement):
            seen.append((statement, parameters, bool(context.execution_options.get("stream_results"))))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plans(url: str, seen, analyze: bool = False) -> list[str]:
    """Each statement's plan; a streamed one EXPLAINed as the cursor it runs in (EXPLAIN DECLARE), which is how
    PostgreSQL plans it; with `analyze`, run with ANALYZE, BUFFERS."""
    from shared.infra.db.session import get_engine

    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
    result = []
    with get_engine(url).connect() as conn:
        for statement, parameters, streamed in seen:
            sql = f"{prefix}DECLARE explained CURSOR FOR {statement}" if streamed else prefix + statement
            with conn.begin():
                result.append("\n".join(row[0] for row in conn.exec_driver_sql(sql, parameters)))
    return result
