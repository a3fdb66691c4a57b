"""Flask application factory: the web side of the engine (API, SSO, health, web UI).
It records and reads; the engine worker does everything that talks to a
host or a BMC."""
import logging

from flask import Flask, g, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from werkzeug.exceptions import HTTPException

from . import db
from .config import EngineConfig
from .errors import Fault
from .models import BLANK_TEMPLATE_ID, Template
from .services import auth

import keel_webui

log = logging.getLogger("keel.engine.app")


class AppContext:
    def __init__(self, config, sessionmaker, engine):
        self.config = config
        self.sessionmaker = sessionmaker
        self.engine = engine


def bootstrap(config):
    """Migrations forward, then the built-in objects (idempotent)."""
    db.upgrade(config.database_url)
    engine = db.make_engine(config.database_url)
    sm = db.make_sessionmaker(engine)
    with sm() as s:
        if s.get(Template, BLANK_TEMPLATE_ID) is None:
            s.add(Template(id=BLANK_TEMPLATE_ID, name="Blank", description="Blank template"))
        auth.ensure_builtin(s, config.admin_password)
        s.commit()
    engine.dispose()
    db.protect_files(config)


def create_app(config=None, migrate=True):
    config = config or EngineConfig()
    if migrate:
        bootstrap(config)
    engine = db.make_engine(config.database_url)
    app = Flask("keel_engine")
    # bodies are read (and bounded, chunked ones too) by api.framework.read_body_bytes
    app.config["MAX_CONTENT_LENGTH"] = None
    app.config["KEEL_CTX"] = AppContext(config, db.make_sessionmaker(engine, writes=True), engine)

    from .api import access, audit, framework, health, hosts, inventory, openapi, pools, root, sso, vms  # noqa: F401
    from .api import attached_storage, refused_actions, vm_devices, vm_hotplug  # noqa: F401
    from .api import cdroms, isos  # noqa: F401
    app.register_blueprint(sso.sso_bp)
    app.register_blueprint(health.health_bp)
    app.register_blueprint(openapi.openapi_bp)
    app.register_blueprint(framework.api_bp)
    keel_webui.register(app)

    @app.after_request
    def commit(response):
        # The one place a request's transaction ends. No acknowledgement
        # before the change is durable: commit, and answer with a fault
        # instead if the commit fails.
        s = g.pop("session", None)
        if s is None:
            return response
        try:
            if request.method not in ("GET", "HEAD", "OPTIONS") and response.status_code < 400:
                s.commit()
        except StaleDataError:
            s.rollback()
            response = framework.fault_response(409, "Operation Failed",
                                                "the object was changed concurrently; read it again and retry")
        except SQLAlchemyError as e:
            s.rollback()
            log.error("commit failed: %s", e)
            response = framework.fault_response(503, "Operation Failed", "the database refused the change")
        finally:
            s.close()
        return response

    @app.teardown_request
    def close_session(_exc):
        s = g.pop("session", None)
        if s is not None:
            s.rollback()
            s.close()
        conn = g.pop("conn", None)
        if conn is not None:
            conn.close()

    @app.errorhandler(Fault)
    def on_fault(f):
        if f.status >= 500:
            log.error("fault %s: %s", f.status, f)
        response = framework.fault_response(f.status, f.reason, f.detail)
        if getattr(f, "retry_after", None):
            response.headers["Retry-After"] = str(f.retry_after)
        return response

    @app.errorhandler(HTTPException)
    def on_http(e):
        if request.path == keel_webui.PREFIX or request.path.startswith(keel_webui.PREFIX + "/"):
            return keel_webui.error_page(e.code, e.name, e.description)
        detail = {404: "no such resource or collection", 405: "method not allowed on this resource",
                  413: "the request body is too large"}.get(e.code, e.description)
        response = framework.fault_response(e.code, e.name, detail)
        for name, value in e.get_headers():
            if name == "Allow":
                response.headers["Allow"] = value
        return response

    @app.errorhandler(StaleDataError)
    def on_stale(e):
        return framework.fault_response(409, "Operation Failed",
                                        "the object was changed concurrently (by the worker or another "
                                        "request); read it again and retry")

    @app.errorhandler(ObjectDeletedError)
    def on_deleted(e):
        # another request or the worker removed the row after this request
        # last read it (a snapshot deleted while its creation was answered)
        return framework.fault_response(409, "Operation Failed",
                                        "the object was removed concurrently (by the worker or another "
                                        "request) while this request ran")

    @app.errorhandler(SQLAlchemyError)
    def on_db_error(e):
        log.error("database error: %s", e)
        return framework.fault_response(503, "Operation Failed", "database error; see the engine log")

    @app.errorhandler(Exception)
    def on_error(e):
        log.exception("internal error")
        return framework.fault_response(500, "Internal Error", f"{type(e).__name__}: see the engine log")

    return app
