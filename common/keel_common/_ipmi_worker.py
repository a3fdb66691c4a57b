"""One IPMI operation through pyghmi, run as a short-lived child process.

pyghmi has no timeout of its own and a session can hang for good, so the
engine and the HA agents never call it in-process: ``keel_common.ipmi`` starts this
module, writes the request (JSON, with the password) to its stdin, and kills
it when the hard deadline passes.  The answer is one JSON line on stdout.
"""

import json
import sys
import time

AUTH_MARKERS = ("incorrect password", "unauthorized name", "unauthorized role",
                "invalid role", "invalid username", "integrity", "password is too long",
                "wrong kg", "insufficient privilege")
UNREACHABLE_MARKERS = ("timeout", "no longer connected", "failed to initialize",
                       "session disconnected")
POLL_INTERVAL = 0.5


def classify(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return "unreachable"
    text = str(exc.args[0] if getattr(exc, "args", None) else "").lower()
    if not text or text == "none":
        # pyghmi raises IpmiException(None) when nothing answered the login
        return "unreachable"
    if any(m in text for m in AUTH_MARKERS):
        return "auth"
    if any(m in text for m in UNREACHABLE_MARKERS):
        return "unreachable"
    return "bmc_error"


def describe(exc: BaseException) -> str:
    text = str(exc.args[0]) if getattr(exc, "args", None) and exc.args[0] else ""
    return text or "no answer from the BMC"


def _wait_for(cmd, wanted: str, end: float) -> str:
    state = cmd.get_power()["powerstate"]
    while state != wanted and time.monotonic() < end:
        time.sleep(POLL_INTERVAL)
        state = cmd.get_power()["powerstate"]
    return state


def run(req: dict) -> dict:
    from pyghmi.ipmi import command  # imported here: the import is the slow part

    op = req["op"]
    # Leave a margin so this process answers before the parent kills it.
    end = time.monotonic() + max(0.5, float(req["budget"]) - 1.0)
    kwargs = {}
    if req.get("privlevel"):
        kwargs["privlevel"] = int(req["privlevel"])
    cmd = command.Command(bmc=req["address"], port=int(req["port"]),
                          userid=req["username"].encode(),
                          password=req["password"].encode(), **kwargs)
    state = cmd.get_power()["powerstate"]
    if op in ("status", "test"):
        return {"ok": True, "power": state, "message": f"power is {state}"}
    if op == "on":
        if state != "on":
            cmd.set_power("on")
            state = _wait_for(cmd, "on", end)
        if state != "on":
            return {"ok": False, "kind": "not_confirmed", "power": state,
                    "message": f"BMC accepted power on but still reports {state}"}
        return {"ok": True, "power": "on", "message": "power is on"}
    if op in ("off", "restart"):
        if state != "off":
            cmd.set_power("off")
            state = _wait_for(cmd, "off", end)
        if state != "off":
            return {"ok": False, "kind": "not_confirmed", "power": state,
                    "message": f"BMC accepted power off but still reports {state}"}
        if op == "off":
            return {"ok": True, "power": "off", "message": "power off confirmed"}
        cmd.set_power("on")
        state = _wait_for(cmd, "on", end)
        if state != "on":
            return {"ok": False, "kind": "not_confirmed", "power": state,
                    "message": f"power off confirmed, but power on not confirmed (BMC reports {state})"}
        return {"ok": True, "power": "on", "message": "power off confirmed, then power on confirmed"}
    return {"ok": False, "kind": "bmc_error", "message": f"unknown operation {op!r}"}


def main() -> int:
    req = json.loads(sys.stdin.readline())
    try:
        result = run(req)
    except Exception as exc:  # pyghmi raises IpmiException, socket errors, ...
        result = {"ok": False, "kind": classify(exc), "message": describe(exc)}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
