"""A few JSON calls to the engine's oVirt-compatible API, with urllib only:
what the installer (and the lab) need to register hosts, storage and BMCs."""
from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request


class EngineApiError(Exception):
    """str() is one line: the call and the engine's own reason; `status`:
    the HTTP status the engine answered with (None: no answer)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Api:
    ITEM = {"datacenters": "data_center", "clusters": "cluster", "hosts": "host",
            "storagedomains": "storage_domain", "vms": "vm", "networks": "network"}

    def __init__(self, user: str, password: str, base: str, timeout: float = 30.0):
        self.base, self.user, self.password, self.timeout = base.rstrip("/"), user, password, timeout
        self.token = None
        self.last_refusal = ""

    def login(self) -> None:
        """Raises EngineApiError naming the sign-in and the engine's reason
        (wrong password, throttled, no answer), never a raw HTTP error."""
        data = urllib.parse.urlencode({"grant_type": "password", "username": self.user,
                                       "password": self.password, "scope": "ovirt-app-api"}).encode()
        req = urllib.request.Request(self.base + "/ovirt-engine/sso/oauth/token", data=data,
                                     headers={"Accept": "application/json"})
        what = f"sign-in as {self.user} at {self.base}"
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                self.token = json.load(r)["access_token"]
        except urllib.error.HTTPError as e:
            raise EngineApiError(f"{what}: {e.code} {_reason(e)}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            raise EngineApiError(f"{what}: {getattr(e, 'reason', e)}") from None
        except (ValueError, KeyError):
            raise EngineApiError(f"{what}: the answer holds no access token") from None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        if self.token is None:
            self.login()
        try:
            return self._call(method, path, body)
        except EngineApiError as e:
            if e.status != 401:
                raise
            expired = e
        # the token expired (an hour by default) or the engine forgot it (a new
        # engine database): the request was not run, so sign in again and send it once more
        try:
            self.login()
        except EngineApiError:
            raise expired from None
        return self._call(method, path, body)

    def _call(self, method: str, path: str, body: dict | None) -> dict:
        req = urllib.request.Request(
            self.base + "/ovirt-engine/api" + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Accept": "application/json", "Content-Type": "application/json",
                     "Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                text = r.read()
        except urllib.error.HTTPError as e:
            raise EngineApiError(f"engine API {method} {path}: {e.code} {_reason(e)}", e.code) from None
        except (urllib.error.URLError, OSError) as e:
            raise EngineApiError(f"engine API {method} {path}: {getattr(e, 'reason', e)}") from None
        return json.loads(text) if text else {}

    def find(self, collection: str, name: str) -> dict | None:
        q = urllib.parse.quote(f"name={name}")
        items = self.call("GET", f"/{collection}?search={q}").get(self.ITEM[collection], [])
        return next((i for i in items if i.get("name") == name), None)

    def signed_in(self) -> bool:
        """One sign-in attempt: False while the engine is not answering yet
        (or refuses), the reason kept in `last_refusal`."""
        try:
            self.login()
            return True
        except EngineApiError as e:
            self.last_refusal = str(e)
            return False


def _reason(e: urllib.error.HTTPError) -> str:
    """The engine's own words from an error answer: the API's `detail` or
    `reason`, the sign-in's `error`; else the body as it came, cut short."""
    text = e.read().decode(errors="replace")
    try:
        j = json.loads(text)
        text = (j.get("detail") or j.get("reason") or j.get("error") or text) if isinstance(j, dict) else text
    except ValueError:
        pass
    return str(text).strip()[:300]


def wait_signin(api: Api, timeout: float) -> Api:
    deadline = time.monotonic() + timeout
    while not api.signed_in():
        if time.monotonic() > deadline:
            raise EngineApiError(f"{api.user} cannot sign in at {api.base} within {timeout:.0f} s"
                                 + (f" (last: {api.last_refusal})" if api.last_refusal else ""))
        time.sleep(1)
    return api
