"""The installer's (and the lab's) engine API client against a small real
HTTP server speaking the engine's sign-in and API: an expired token means
one new sign-in and the request sent once more; a 401 that a new sign-in
does not cure is an EngineApiError with its status, never a raw HTTP error."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest

from keel_installer.engine_api import Api, EngineApiError, wait_signin

ADDRESS = "127.0.19.1"


class Engine(BaseHTTPRequestHandler):
    tokens: list[str] = []          # issued, in order
    valid: set[str] = set()         # accepted by the API
    calls: list[str] = []

    def log_message(self, *_args):
        pass

    def _answer(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
        if self.path == "/ovirt-engine/sso/oauth/token":
            if form.get("password") != ["pw"]:
                return self._answer(401, {"error_code": "access_denied",
                                          "error": "Cannot authenticate user: wrong user name or password"})
            tok = f"t{len(self.tokens) + 1}"
            self.tokens.append(tok)
            return self._answer(200, {"access_token": tok})
        self._api()

    def do_GET(self):
        self._api()

    def _api(self):
        tok = self.headers.get("Authorization", "").removeprefix("Bearer ")
        self.calls.append(f"{self.command} {self.path} {tok}")
        if tok not in self.valid:
            return self._answer(401, {"detail": "the access token is unknown, expired or revoked"})
        self._answer(200, {"name": "vm1"})


@pytest.fixture
def engine():
    Engine.tokens, Engine.valid, Engine.calls = [], set(), []
    srv = ThreadingHTTPServer((ADDRESS, 0), Engine)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://{ADDRESS}:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def test_an_expired_token_means_one_new_sign_in_and_the_request_sent_again(engine):
    api = Api("admin@internal", "pw", engine, timeout=5)
    Engine.valid = {"t1"}
    assert api.call("GET", "/vms/1") == {"name": "vm1"}
    Engine.valid = {"t2"}           # t1 expired
    assert api.call("POST", "/vms/1/stop", {}) == {"name": "vm1"}
    assert Engine.tokens == ["t1", "t2"]
    assert Engine.calls == ["GET /ovirt-engine/api/vms/1 t1", "POST /ovirt-engine/api/vms/1/stop t1",
                            "POST /ovirt-engine/api/vms/1/stop t2"]


def test_a_401_a_new_sign_in_does_not_cure_is_an_engine_api_error(engine):
    api = Api("admin@internal", "pw", engine, timeout=5)
    with pytest.raises(EngineApiError) as e:
        api.call("GET", "/vms/1")
    assert e.value.status == 401 and "unknown, expired or revoked" in str(e.value)
    assert len(Engine.calls) == 2       # sent once more after a new sign-in, not forever


def test_no_answer_is_an_engine_api_error_without_a_status(engine):
    api = Api("admin@internal", "pw", engine.rsplit(":", 1)[0] + ":9", timeout=5)
    api.token = "t0"
    with pytest.raises(EngineApiError) as e:
        api.call("GET", "/vms/1")
    assert e.value.status is None


def test_a_refused_sign_in_is_an_engine_api_error_with_the_engines_reason(engine):
    api = Api("admin@internal", "wrong", engine, timeout=5)
    with pytest.raises(EngineApiError) as e:
        api.call("GET", "/vms/1")
    assert e.value.status == 401 and "wrong user name or password" in str(e.value)
    assert Engine.calls == []           # nothing sent without a token


def test_waiting_for_a_sign_in_that_never_works_names_the_last_refusal(engine):
    api = Api("admin@internal", "wrong", engine, timeout=5)
    with pytest.raises(EngineApiError) as e:
        wait_signin(api, 0.5)
    assert "cannot sign in" in str(e.value) and "wrong user name or password" in str(e.value)
    assert wait_signin(Api("admin@internal", "pw", engine, timeout=5), 5).token == "t%d" % len(Engine.tokens)
