"""Database engine, sessions and migrations (Alembic, run forward on start),
and the engine's files kept private (0600: the database holds password
hashes and encrypted fence passwords; the key file decrypts them)."""
import logging
import os
import stat

from sqlalchemy import String, Text, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from . import text as text_policy

log = logging.getLogger("keel.engine.db")
MIGRATIONS = os.path.join(os.path.dirname(__file__), "migrations")


def sqlite_path(url):
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def make_engine(url):
    path = sqlite_path(url)
    if url.startswith("sqlite"):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        eng = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(eng, "connect")
        def _sqlite_pragmas(conn, _record):
            conn.isolation_level = None     # transactions begin as _begin says, not as pysqlite guesses
            # WAL + FULL sync: a committed change survives a crash; foreign keys on
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(eng, "begin")
        def _begin(conn):
            # A transaction that will write takes SQLite's write lock at once: one
            # that read first and wrote later would fail at once (not wait) if
            # another writer committed in between (SQLITE_BUSY_SNAPSHOT in WAL mode).
            # (straight to the driver: this runs on every request, and SQLAlchemy's
            # statement machinery would cost more than the BEGIN itself)
            conn.connection.driver_connection.execute(
                "BEGIN IMMEDIATE" if conn.get_execution_options().get("keel_writes") else "BEGIN")
        return eng
    return create_engine(url, pool_pre_ping=True)


def _text_columns(obj):
    for col in obj.__table__.columns:
        if isinstance(col.type, (String, Text)):
            yield col.key


def _clean_text(session, _ctx, _instances):
    """Input is checked (a 400 naming the field); text that reaches the database
    any other way (a hostname libvirt reported, a BMC's error) is cleaned of
    characters XML cannot carry, so no answer is ever malformed."""
    for obj in list(session.new) + list(session.dirty):
        if not hasattr(obj, "__table__"):
            continue
        for key in _text_columns(obj):
            value = obj.__dict__.get(key)
            if isinstance(value, str) and text_policy.INVALID.search(value):
                setattr(obj, key, text_policy.clean(value))


def make_sessionmaker(engine, writes=False):
    """writes=True: sessions that begin by taking the write lock (SQLite), for
    short transactions that write (a web request; never one that waits on a
    host while its transaction is open)."""
    bind = engine.execution_options(keel_writes=True) if writes else engine
    sm = sessionmaker(bind=bind, expire_on_commit=False)
    event.listen(sm, "before_flush", _clean_text)
    return sm


def alembic_config(url):
    from alembic.config import Config as AlembicConfig
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def newest_revision():
    """The newest migration's revision: migrations are named NNNN_what.py with
    revision 'NNNN' (a test holds Alembic's head to it)."""
    names = os.listdir(os.path.join(MIGRATIONS, "versions"))
    return max(n[:4] for n in names if n[:4].isdigit() and n.endswith(".py"))


def database_revision(url):
    """The database's schema revision; None if it has none yet (or no file)."""
    path = sqlite_path(url)
    if path and not os.path.exists(path):
        return None
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None
    finally:
        eng.dispose()


def upgrade(url):
    """Run every migration forward; safe to call on every start. A schema that
    is already the newest costs one query: importing and running Alembic for
    nothing took seconds of the engine VM's boot under TCG."""
    if database_revision(url) == newest_revision():
        log.info("database schema is at the newest revision")
        return
    from alembic import command
    old = os.umask(0o077)     # a new database file (and its WAL) is private from the first byte
    try:
        command.upgrade(alembic_config(url), "head")
    finally:
        os.umask(old)
    log.info("database schema upgraded to the newest revision")


def protect_files(config):
    """The database (with its WAL and shared-memory files) and the key file: 0600."""
    paths = [config.secret_key_file]
    db_path = sqlite_path(config.database_url)
    if db_path:
        paths += [db_path, db_path + "-wal", db_path + "-shm"]
    for path in paths:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue
        if mode & 0o077:
            os.chmod(path, 0o600)
            log.info("made %s private (it was %o)", path, mode)
