"""The served OpenAPI document matches the routes Flask really serves."""
import re

import pytest

from keel_engine.api import openapi
from keel_engine.app import create_app
from keel_engine.config import EngineConfig


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("oa")
    return create_app(EngineConfig(database_url=f"sqlite:///{d}/e.db", admin_password="pw12345",
                                   secret_key_file=str(d / "key")))


def test_openapi_lists_exactly_the_served_api_routes(app):
    served = set()
    for rule in app.url_map.iter_rules():
        # oVirt's portal addresses redirect to the web UI: pages, not API routes
        if rule.rule.startswith("/ovirt-engine/") and not rule.endpoint.startswith("to_ui"):
            path = re.sub(r"<(\w+)>", r"{\1}", rule.rule)
            for m in rule.methods - {"HEAD", "OPTIONS"}:
                if path != "/ovirt-engine/api-docs/openapi.json":
                    served.add((m.lower(), path))
    doc = app.test_client().get("/ovirt-engine/api-docs/openapi.json").get_json()
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    # sso-logout also answers GET for convenience; documented as POST
    served.discard(("get", "/ovirt-engine/services/sso-logout"))
    assert served == documented
    assert doc["openapi"].startswith("3.")
    for p, ops in doc["paths"].items():
        for op in ops.values():
            assert op["summary"], p


def test_openapi_builder_is_deterministic():
    assert openapi.document() == openapi.document()


def test_bodies_and_parameters_are_documented_from_the_parsers_declarations(app):
    from keel_engine.api.framework import API, ROUTES
    doc = app.test_client().get("/ovirt-engine/api-docs/openapi.json").get_json()
    with_body = 0
    for r in ROUTES:
        op = doc["paths"][API + re.sub(r"<(\w+)>", r"{\1}", r.path)][r.method.lower()]
        if r.body is not None:
            with_body += 1
            assert op["requestBody"]["content"]["application/json"]["schema"] == r.body.schema()
        else:
            assert "requestBody" not in op
        assert sorted(p["name"] for p in op["parameters"] if p["in"] == "query") == sorted(r.query)
        if r.job:
            assert "202" in op["responses"]
    assert with_body >= 25


def test_a_declared_field_is_parsed_as_documented(app):
    """The document says memory is an integer from 16 MiB: the parser says the same."""
    from keel_engine.api.framework import API
    doc = app.test_client().get("/ovirt-engine/api-docs/openapi.json").get_json()
    memory = doc["paths"][f"{API}/vms"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "properties"]["memory"]
    assert memory["type"] == "integer"
    c = app.test_client()
    tok = c.post("/ovirt-engine/sso/oauth/token", data={"grant_type": "password", "username": "admin@internal",
                                                        "password": "pw12345"}).get_json()["access_token"]
    h = {"Authorization": f"Bearer {tok}", "Content-Type": "application/json"}
    r = c.post(f"{API}/vms", headers=h, json={"name": "v", "cluster": {"name": "x"}, "memory": memory["minimum"] - 1})
    assert r.status_code == 400 and b"memory: must be at least" in r.data
