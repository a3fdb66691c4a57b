"""The API over raw HTTP: XML and JSON from one model, faults for bad input,
authentication rules, and nothing half-written after a refused request."""
import http.client
import urllib.parse

import pytest
import requests
from sqlalchemy import create_engine, text

pytestmark = [pytest.mark.slow, pytest.mark.root]


def call(engine, token, method, path, body=None, json_out=False, ctype="application/xml", headers=None):
    h = {"Authorization": f"Bearer {token}", "Accept": "application/json" if json_out else "application/xml"}
    if body is not None:
        h["Content-Type"] = ctype
    h.update(headers or {})
    return requests.request(method, f"{engine.url}{path}", data=body, headers=h, timeout=60)


def count(engine, table, where="1=1"):
    eng = create_engine(engine.db_url)
    try:
        with eng.connect() as c:
            return c.execute(text(f"SELECT count(*) FROM {table} WHERE {where}")).scalar()
    finally:
        eng.dispose()


def test_same_resource_as_xml_and_json(engine, token, cluster_setup):
    dc_id = cluster_setup["dc"].id
    x = call(engine, token, "GET", f"/datacenters/{dc_id}")
    j = call(engine, token, "GET", f"/datacenters/{dc_id}", json_out=True)
    assert x.headers["Content-Type"].startswith("application/xml")
    assert j.headers["Content-Type"].startswith("application/json")
    assert f'<data_center id="{dc_id}" href="/ovirt-engine/api/datacenters/{dc_id}">' in x.text
    assert "<name>Default</name>" in x.text
    body = j.json()
    assert body["id"] == dc_id and body["name"] == "Default" and body["href"].endswith(dc_id)
    coll = call(engine, token, "GET", "/storagedomains", json_out=True).json()
    assert [sd["name"] for sd in coll["storage_domain"]] == ["data"]
    assert "<storage_domains>" in call(engine, token, "GET", "/storagedomains").text


def test_json_body_and_reference_by_name(engine, token, cluster_setup):
    r = call(engine, token, "POST", "/clusters", '{"name": "jsoncl", "data_center": {"name": "Default"}}',
             json_out=True, ctype="application/json")
    assert r.status_code == 201, r.text
    assert r.json()["data_center"]["id"] == cluster_setup["dc"].id
    assert call(engine, token, "DELETE", f"/clusters/{r.json()['id']}").status_code == 200


@pytest.mark.parametrize("body,ctype,needle", [
    ("<vm><name>x</name>", "application/xml", "malformed XML"),
    ('{"name": ', "application/json", "malformed JSON"),
    ('["a"]', "application/json", "must be an object"),
    ('<!DOCTYPE x [<!ENTITY a "b">]><vm><name>&a;</name></vm>', "application/xml", "document type"),
    ("<vm><cluster><name>Default</name></cluster></vm>", "application/xml", "name: required"),
    ("<vm><name>bad name!</name><cluster><name>Default</name></cluster></vm>", "application/xml", "not a valid name"),
    ("<vm><name>m1</name><cluster><name>Default</name></cluster><memory>lots</memory></vm>",
     "application/xml", "memory: expected an integer"),
    ("<vm><name>m1</name><cluster><name>Default</name></cluster><memory>1024</memory></vm>",
     "application/xml", "memory: must be at least"),
    ("<vm><name>m1</name><cluster><name>Nope</name></cluster></vm>", "application/xml",
     "cluster named 'Nope' does not exist"),
    ("<vm><name>m1</name><cluster id=\"00000000-1111-2222-3333-444444444444\"/></vm>", "application/xml",
     "does not exist"),
    ('{"name": "m1", "cluster": {"name": "Default"}, "high_availability": {"enabled": "maybe"}}',
     "application/json", "expected true or false"),
])
def test_bad_bodies_get_precise_400_faults(engine, token, cluster_setup, body, ctype, needle):
    before = count(engine, "vms")
    r = call(engine, token, "POST", "/vms", body, ctype=ctype)
    assert r.status_code == 400, r.text
    assert r.headers["Content-Type"].startswith("application/xml")
    assert "<fault>" in r.text and needle in r.text
    assert count(engine, "vms") == before


def test_refused_request_leaves_nothing_half_written(engine, token, cluster_setup):
    # the VM row is created before its disk fails: the whole request rolls back
    before_vms, before_disks = count(engine, "vms"), count(engine, "disks")
    r = call(engine, token, "POST", "/vms",
             "<vm><name>half1</name><cluster><name>Default</name></cluster>"
             "<template><name>NoSuchTemplate</name></template></vm>")
    assert r.status_code == 400
    assert (count(engine, "vms"), count(engine, "disks")) == (before_vms, before_disks)


def test_oversized_body_is_413_fault(engine, token):
    r = call(engine, token, "POST", "/datacenters", "<data_center><name>" + "x" * (2 * 1024 * 1024) + "</name></data_center>")
    assert r.status_code == 413
    assert "<fault>" in r.text and "larger than" in r.text


def test_unknown_id_and_unknown_collection_are_404_faults(engine, token):
    r = call(engine, token, "GET", "/vms/00000000-0000-0000-0000-00000000dead")
    assert r.status_code == 404 and "does not exist" in r.text
    r = call(engine, token, "GET", "/nonsense", json_out=True)
    assert r.status_code == 404 and r.json()["reason"]


def test_delete_answers_200(engine, token, cluster_setup):
    r = call(engine, token, "POST", "/datacenters", "<data_center><name>gone1</name></data_center>")
    assert r.status_code == 201
    dc_id = r.text.split('id="')[1].split('"')[0]
    assert call(engine, token, "DELETE", f"/datacenters/{dc_id}").status_code == 200
    assert call(engine, token, "GET", f"/datacenters/{dc_id}").status_code == 404


def test_bad_search_and_max_are_400(engine, token):
    assert "only 'and' is supported" in call(engine, token, "GET", "/vms?search=name%3Da%20or%20name%3Db").text
    assert call(engine, token, "GET", "/vms?search=color%3Dred").status_code == 400
    assert call(engine, token, "GET", "/vms?max=many").status_code == 400


# ---- authentication --------------------------------------------------------
def sso(engine, **data):
    return requests.post(engine.url.replace("/api", "/sso/oauth/token"), data=data, timeout=30)


def test_missing_unknown_and_revoked_tokens_are_401(engine):
    assert requests.get(f"{engine.url}/vms", timeout=30).status_code == 401
    r = requests.get(f"{engine.url}/vms", headers={"Authorization": "Bearer nope"}, timeout=30)
    assert r.status_code == 401 and "<fault>" in r.text
    tok = sso(engine, grant_type="password", username="admin@internal", password="keel-test-pw",
              scope="ovirt-app-api").json()["access_token"]
    assert requests.get(f"{engine.url}/vms", headers={"Authorization": f"Bearer {tok}"}, timeout=30).ok
    requests.post(engine.url.replace("/api", "/services/sso-logout"), data={"token": tok}, timeout=30)
    assert requests.get(f"{engine.url}/vms", headers={"Authorization": f"Bearer {tok}"},
                        timeout=30).status_code == 401


def test_expired_token_is_401(engine):
    tok = sso(engine, grant_type="password", username="admin@internal", password="keel-test-pw").json()["access_token"]
    import hashlib
    h = hashlib.sha256(tok.encode()).hexdigest()
    eng = create_engine(engine.db_url)
    with eng.begin() as c:
        c.execute(text("UPDATE tokens SET expires = :t WHERE token_hash = :h"),
                  {"t": "2000-01-01 00:00:00+00:00", "h": h})
    eng.dispose()
    r = requests.get(f"{engine.url}/vms", headers={"Authorization": f"Bearer {tok}"}, timeout=30)
    assert r.status_code == 401


def test_wrong_password_is_refused_with_json_error(engine):
    r = sso(engine, grant_type="password", username="admin@internal", password="wrong")
    assert r.status_code == 401 and r.json()["error_code"] == "access_denied"
    r = sso(engine, grant_type="client_credentials")
    assert r.status_code == 400


def test_passwords_and_tokens_are_not_stored_in_clear(engine, token):
    eng = create_engine(engine.db_url)
    with eng.connect() as c:
        pw = c.execute(text("SELECT password_hash FROM users WHERE name='admin'")).scalar()
        tokens = [r[0] for r in c.execute(text("SELECT token_hash FROM tokens"))]
    eng.dispose()
    assert pw.startswith("scrypt$") and "keel-test-pw" not in pw
    assert token not in tokens and len(tokens) >= 1


def test_health_needs_no_auth(engine):
    r = requests.get(engine.url.replace("/api", "/services/health"), timeout=30)
    assert r.status_code == 200 and r.text.startswith("DB Up!")
    r = requests.get(engine.url.replace("/api", "/services/health"), headers={"Accept": "application/json"},
                     timeout=30)
    assert r.json() == {"engine": "up", "database": "up", "detail": "up"}


def test_basic_auth_works_like_ovirt(engine):
    assert requests.get(f"{engine.url}/clusters", auth=("admin@internal", "keel-test-pw"), timeout=30).ok
    assert requests.get(f"{engine.url}/clusters", auth=("admin@internal", "x"), timeout=30).status_code == 401


def test_a_chunked_body_over_the_limit_is_413_under_gunicorn(engine, token):
    def chunks():
        for _ in range(40):
            yield b"<data_center><name>big</name><description>" + b"x" * 65536
        yield b"</description></data_center>"
    # the engine may answer 413 and close while the body is still being sent:
    # the client's write then breaks, and the answer waits in its socket
    url = urllib.parse.urlsplit(engine.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        try:
            conn.request("POST", f"{url.path}/datacenters", body=chunks(), encode_chunked=True,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml"})
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        assert r.status == 413, r.read()
    finally:
        conn.close()
    assert count(engine, "datacenters", "name = 'big'") == 0


def test_tokens_never_reach_the_access_log(engine):
    tok = sso(engine, grant_type="password", username="admin@internal", password="keel-test-pw").json()["access_token"]
    requests.get(engine.url.replace("/api", "/services/sso-logout"), params={"token": tok}, timeout=30)
    assert requests.get(f"{engine.url}/vms", headers={"Authorization": f"Bearer {tok}"}, timeout=30).status_code == 401
    import os
    import time
    log = os.path.join(engine.workdir, "serve.log")
    time.sleep(1)   # gunicorn writes its access log line after the answer
    text_ = open(log, encoding="utf-8", errors="replace").read()
    assert "sso-logout" in text_ and tok not in text_
