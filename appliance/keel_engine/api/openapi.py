"""The OpenAPI description, generated from the route registry so it cannot
drift from the routes Flask actually serves."""
import re

from flask import Blueprint, jsonify

from .framework import API, ROUTES

openapi_bp = Blueprint("openapi", __name__)


def document():
    paths = {}
    for method, path, summary in ROUTES:
        oa_path = API + re.sub(r"<(\w+)>", r"{\1}", path)
        params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in re.findall(r"<(\w+)>", path)]
        op = {"summary": summary, "security": [{"bearer": []}],
              "responses": {"200": {"description": "OK"}, "400": {"description": "Bad input (fault)"},
                            "401": {"description": "Missing, unknown or expired token"},
                            "404": {"description": "Unknown id (fault)"},
                            "409": {"description": "Wrong state (fault)"}}}
        if params:
            op["parameters"] = params
        if method == "POST" and path.rpartition("/")[2] not in ACTIONS:
            op["responses"]["201"] = {"description": "Created"}
        paths.setdefault(oa_path, {})[method.lower()] = op
    paths["/ovirt-engine/sso/oauth/token"] = {"post": {
        "summary": "Get a bearer token (grant_type=password, username, password)",
        "responses": {"200": {"description": "JSON with access_token"}, "401": {"description": "Refused"}}}}
    paths["/ovirt-engine/services/sso-logout"] = {"post": {
        "summary": "Revoke a token", "responses": {"200": {"description": "OK"}}}}
    paths["/ovirt-engine/services/health"] = {"get": {
        "summary": "Engine and database health (no auth)",
        "responses": {"200": {"description": "Up"}, "503": {"description": "Database down"}}}}
    return {"openapi": "3.0.3",
            "info": {"title": "Keel engine API (oVirt-compatible)", "version": "4.6"},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "paths": paths}


ACTIONS = ("start", "stop", "shutdown", "reboot", "migrate", "deactivate", "activate", "fence", "restore",
           "test")


@openapi_bp.route("/ovirt-engine/api-docs/openapi.json", methods=["GET"])
def openapi_json():
    return jsonify(document())
