"""Health (no auth): is the engine up and can it reach its database? The HA
broker's engine-health monitor polls this."""
from flask import Blueprint, Response, jsonify, request
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

health_bp = Blueprint("health", __name__)


@health_bp.route("/ovirt-engine/services/health", methods=["GET"])
def health():
    try:
        from .framework import reader
        reader().execute(text("SELECT 1"))
        db_ok, detail = True, "up"
    except SQLAlchemyError as e:
        db_ok, detail = False, str(e).splitlines()[0]
    status = 200 if db_ok else 503
    if "application/json" in request.headers.get("Accept", ""):
        resp = jsonify({"engine": "up", "database": "up" if db_ok else "down", "detail": detail})
        resp.status_code = status
        return resp
    # oVirt's exact wording, so existing health checks keep working
    body = "DB Up!Welcome to Health Status!" if db_ok else f"DB Down! {detail}"
    return Response(body, status=status, content_type="text/plain")
