"""Database engine, sessions and migrations (Alembic, run forward on start)."""
import logging
import os

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import create_engine, event
from sqlalchemy.orm import sessionmaker

log = logging.getLogger("keel.engine.db")
MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")


def make_engine(url):
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        eng = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(eng, "connect")
        def _sqlite_pragmas(conn, _record):
            # WAL + FULL sync: a committed change survives a crash; foreign keys on
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
        return eng
    return create_engine(url, pool_pre_ping=True)


def make_sessionmaker(engine):
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(url):
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url):
    """Run every migration forward; safe to call on every start."""
    command.upgrade(alembic_config(url), "head")
    log.info("database schema is at the newest revision")
