"""The Alembic migrations build exactly the schema the models describe, and
an upgrade keeps existing rows."""
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from keel_engine import db
from keel_engine.models import Base


def test_migrations_match_the_models(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.db"
    db.upgrade(url)
    eng = db.make_engine(url)
    try:
        with eng.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        eng.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_upgrade_from_0001_keeps_vms_and_gives_them_priority_1(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    command.upgrade(db.alembic_config(url), "0001")
    eng = db.make_engine(url)
    try:
        with eng.begin() as conn:
            conn.execute(text("INSERT INTO datacenters (id, name, description, local, created) "
                              "VALUES ('dc', 'dc', '', 0, '2026-01-01')"))
            conn.execute(text("INSERT INTO clusters (id, name, description, data_center_id, scheduling_policy, "
                              "created) VALUES ('cl', 'cl', '', 'dc', 'evenly_distributed', '2026-01-01')"))
            conn.execute(text("INSERT INTO templates (id, name, description, memory, cpus, os_type, status, created) "
                              "VALUES ('t', 't', '', 67108864, 1, 'other', 'ok', '2026-01-01')"))
            conn.execute(text("INSERT INTO vms (id, name, description, cluster_id, template_id, memory, cpus, "
                              "os_type, high_availability, status, stop_reason, created, version) VALUES "
                              "('v', 'old-vm', '', 'cl', 't', 67108864, 1, 'other', 1, 'down', '', "
                              "'2026-01-01', 1)"))
        db.upgrade(url)
        with eng.connect() as conn:
            row = conn.execute(text("SELECT name, high_availability, ha_priority, lease_storage_domain_id "
                                    "FROM vms")).one()
    finally:
        eng.dispose()
    assert tuple(row) == ("old-vm", 1, 1, None)


def test_the_newest_revision_is_alembics_head():
    from alembic.script import ScriptDirectory
    assert db.newest_revision() == ScriptDirectory.from_config(db.alembic_config("sqlite://")).get_current_head()


def test_an_up_to_date_schema_is_not_migrated_again_and_an_old_one_is(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/e.db"
    assert db.database_revision(url) is None and not (tmp_path / "e.db").exists()
    db.upgrade(url)
    assert db.database_revision(url) == db.newest_revision()
    ran = []
    monkeypatch.setattr(command, "upgrade", lambda *a: ran.append(a))
    db.upgrade(url)
    assert ran == []
    monkeypatch.undo()
    command.downgrade(db.alembic_config(url), "0004")
    assert db.database_revision(url) == "0004"
    db.upgrade(url)
    assert db.database_revision(url) == db.newest_revision()
