"""Database access for demat's own tables (SQLAlchemy; PostgreSQL in every deployment)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from flows.dossier.models import Base


@lru_cache(maxsize=8)
def engine(url: str | None = None) -> Engine:
    url = url or os.environ.get("DEMAT_DATABASE_URL")
    if not url:
        raise RuntimeError("DEMAT_DATABASE_URL n'est pas défini : impossible de joindre la base de demat")
    kwargs = {"pool_pre_ping": True, "future": True}
    if url.startswith("postgresql"):
        kwargs.update(pool_size=2, max_overflow=4)
    return create_engine(url, **kwargs)


def create_schema(url: str | None = None) -> None:
    # tables declared by the pipeline modules live on the same metadata
    import flows.alerts.models  # noqa: F401
    import flows.pipeline.answers  # noqa: F401
    import flows.pipeline.classification  # noqa: F401

    Base.metadata.create_all(engine(url))


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One transaction: committed on success, rolled back on error."""
    factory = sessionmaker(bind=engine(url), expire_on_commit=False)
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def lock(session: Session, key: str) -> None:
    """Serialize writers on a key for the rest of the transaction (PostgreSQL advisory lock)."""
    if session.bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": key})


_TABLES_READY: set[tuple[str, str]] = set()


def ensure_tables(session: Session, name: str, tables: list) -> None:
    """Create a module's own tables if missing, once per database, name and process.

    create_schema only knows the tables imported when it runs; modules loaded later (answers,
    actions) call this. The DDL runs in its own short transaction under an advisory lock (never in
    the caller's, which may hold row locks); such tables carry no foreign key to `dossier`, so
    creating them never waits on a dossier lock.
    """
    key = (str(session.bind.url), name)
    if key in _TABLES_READY:
        return
    with session.bind.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"demat-schema-{name}"})
        Base.metadata.create_all(conn, checkfirst=True, tables=tables)
    _TABLES_READY.add(key)
