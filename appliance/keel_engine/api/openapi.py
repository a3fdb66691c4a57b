"""The OpenAPI description, generated from the route registry and the same
field declarations the parser uses, so it cannot drift from what the engine
serves and accepts."""
import re

from flask import Blueprint, jsonify

from .fields import INT64
from .framework import API, ROUTES

openapi_bp = Blueprint("openapi", __name__)

QUERY = {
    "search": {"type": "string", "maxLength": 1024,
               "description": "oVirt's search: FIELD=VALUE [and FIELD!=VALUE ...], '*' is a wildcard"},
    "max": {"type": "integer", "minimum": -1, "maximum": 2 ** 31 - 1,
            "description": "at most this many (-1: all)"},
    "from": {"type": "integer", "minimum": 0, "maximum": INT64, "description": "events after this index"},
    "follow": {"type": "string", "maxLength": 256,
               "description": "comma-separated links to include (e.g. nics,disk_attachments)"},
    "async": {"type": "boolean", "description": "answer 202 with the job at once instead of waiting"},
    "case_sensitive": {"type": "boolean", "description": "the search matches case (default false, as in oVirt)"},
    "detach_only": {"type": "boolean", "description": "false: delete the disk too"},
    "clone": {"type": "boolean", "description": "true: the VM's disks are full copies of the template's"},
    "clone_permissions": {"type": "boolean", "description": "true is refused (not supported yet)"},
    "all_content": {"type": "boolean", "description": "true: VMs with their cloud-init configuration"},
    "current": {"type": "boolean", "description": "the running VM's device now, not the VM's configuration"},
}
HEADERS = [
    {"name": "Filter", "in": "header", "required": False, "schema": {"type": "boolean"},
     "description": "oVirt's user-level filter: only objects the user has permissions on"},
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string", "maxLength": 64},
     "description": "respond-async: like async=true"},
]
FAULT = {"description": "a fault", "content": {
    "application/json": {"schema": {"type": "object", "properties": {
        "reason": {"type": "string"}, "detail": {"type": "string"}}}}}}


def _operation(r):
    params = [{"name": p, "in": "path", "required": True, "schema": {"type": "string", "maxLength": 64}}
              for p in re.findall(r"<(\w+)>", r.path)]
    params += [{"name": q, "in": "query", "required": False, "schema": QUERY[q]} for q in r.query]
    if r.method == "GET":
        params += HEADERS[:1]
    elif r.job:
        params += HEADERS[1:]
    # 403: the caller may see the object, not do this to it (services/access.py)
    responses = {"200": {"description": "OK"}, "400": FAULT, "401": FAULT, "403": FAULT, "404": FAULT,
                 "405": FAULT}
    if r.method in ("POST", "PUT"):
        responses.update({"409": FAULT, "413": FAULT})
    if r.created:
        responses["201"] = {"description": "Created"}
    if r.job:
        responses["202"] = {"description": "Accepted: the job goes on (async, or the wait ran out)"}
    op = {"summary": r.summary, "security": [{"bearer": []}], "parameters": params, "responses": responses}
    if r.body is not None:
        op["requestBody"] = {"required": r.created, "content": {
            "application/json": {"schema": r.body.schema()},
            "application/xml": {"schema": r.body.schema()}}}
    return op


def document():
    paths = {}
    for r in ROUTES:
        oa_path = API + re.sub(r"<(\w+)>", r"{\1}", r.path)
        paths.setdefault(oa_path, {})[r.method.lower()] = _operation(r)
    form = {"application/x-www-form-urlencoded": {"schema": {"type": "object", "properties": {
        "grant_type": {"type": "string", "enum": ["password"]}, "username": {"type": "string"},
        "password": {"type": "string"}, "scope": {"type": "string"}},
        "required": ["grant_type", "username", "password"]}}}
    paths["/ovirt-engine/sso/oauth/token"] = {"post": {
        "summary": "Get a bearer token (grant_type=password, username, password)", "requestBody": {"content": form},
        "responses": {"200": {"description": "JSON with access_token"}, "400": {"description": "Bad request"},
                      "401": {"description": "Refused"}, "429": {"description": "Throttled"}}}}
    paths["/ovirt-engine/services/sso-logout"] = {"post": {
        "summary": "Revoke a token", "responses": {"200": {"description": "OK"}}}}
    paths["/ovirt-engine/services/health"] = {"get": {
        "summary": "Engine and database health (no auth)",
        "responses": {"200": {"description": "Up"}, "503": {"description": "Database down"}}}}
    return {"openapi": "3.0.3",
            "info": {"title": "Keel engine API (oVirt-compatible)", "version": "4.6"},
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "paths": paths}


@openapi_bp.route("/ovirt-engine/api-docs/openapi.json", methods=["GET"])
def openapi_json():
    return jsonify(document())
