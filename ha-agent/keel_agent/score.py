"""The host score: how fit this host is to run the engine VM.

Pure. Every constant lives in `DEFAULTS`; a host overrides any of them in
the `[score]` section of its configuration (same key names). A score is the
base minus penalties, clamped at 0; a host scoring 0 never starts the engine.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULTS: dict[str, float] = {
    "base": 3400,                    # a perfectly healthy host
    "gateway_penalty": 1600,         # scaled by the fraction of failed gateway probes
    "mgmt_network_penalty": 1600,    # management network down
    "memory_penalty": 500,           # less free memory than the engine VM needs
    "cpu_load_penalty": 1000,        # full penalty at cpu_load_high, none at cpu_load_low
    "cpu_load_low": 0.4,
    "cpu_load_high": 0.9,
    "stale_config_penalty": 1000,    # this host's config is older than another live host's
    "start_failure_penalty": 400,    # per failed start (or crash) still remembered
    "max_start_failures": 3,         # this many remembered failures -> score 0
    "start_failure_forget": 600,     # seconds after which a failure is forgotten
    "start_backoff": 10,             # seconds before retrying after the 1st failure (doubles)
    "start_backoff_max": 300,
    "margin": 800,                   # hysteresis: a running engine moves only for this much more
    "etcd_grace_fraction": 0.25,     # losing etcd: a renewal this late starts the graceful stop
    "etcd_force_fraction": 0.75,     # losing etcd: force-stop by this fraction of the lease TTL
    "lease_wait": 0,                 # extra seconds to wait for a busy engine lease (0: sanlock's expiry)
    "fence_retry": 10,               # seconds before fencing a host again after a failed fence
}


class ScoreConfigError(ValueError):
    pass


def score_constants(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """DEFAULTS with the config's [score] overrides; an unknown key is a
    user error (a typo would otherwise be silently ignored)."""
    merged = dict(DEFAULTS)
    for key, value in (overrides or {}).items():
        if key not in DEFAULTS:
            raise ScoreConfigError(f"[score] {key} is not a known score setting; "
                                   f"known: {', '.join(sorted(DEFAULTS))}")
        if value < 0:
            raise ScoreConfigError(f"[score] {key} = {value:g} is invalid; expected a number >= 0")
        merged[key] = float(value)
    return merged


@dataclass(frozen=True)
class ScoreInput:
    gateway_fraction: float      # fraction of gateway probes that succeeded, 0..1
    mgmt_network_ok: bool
    free_memory_mb: float | None  # None: unknown
    engine_memory_mb: float
    cpu_load: float | None       # 0..1 excluding the engine VM; None: unknown
    engine_runs_here: bool       # its memory is already in use: no memory penalty
    config_stale: bool
    recent_failures: int
    storage_ok: bool
    lockspace_held: bool
    local_maintenance: bool


def compute_score(inp: ScoreInput, k: dict[str, float]) -> tuple[int, list[str]]:
    """Return (score, reasons for each penalty) — reasons go into the log."""
    reasons: list[str] = []
    if inp.local_maintenance:
        return 0, ["local maintenance"]
    if not inp.storage_ok:
        return 0, ["shared storage unreachable"]
    if not inp.lockspace_held:
        return 0, ["sanlock lockspace not held"]
    if inp.recent_failures >= k["max_start_failures"]:
        return 0, [f"{inp.recent_failures} recent start failures"]
    score = k["base"]
    lost = 1.0 - max(0.0, min(1.0, inp.gateway_fraction))
    if lost > 0:
        score -= k["gateway_penalty"] * lost
        reasons.append(f"gateway {int(round(lost * 100))}% probes failed")
    if not inp.mgmt_network_ok:
        score -= k["mgmt_network_penalty"]
        reasons.append("management network down")
    if (not inp.engine_runs_here and inp.free_memory_mb is not None
            and inp.free_memory_mb < inp.engine_memory_mb):
        score -= k["memory_penalty"]
        reasons.append(f"free memory {inp.free_memory_mb:g} MiB < {inp.engine_memory_mb:g} MiB")
    if inp.cpu_load is not None and inp.cpu_load > k["cpu_load_low"]:
        span = max(1e-9, k["cpu_load_high"] - k["cpu_load_low"])
        frac = min(1.0, (inp.cpu_load - k["cpu_load_low"]) / span)
        score -= k["cpu_load_penalty"] * frac
        reasons.append(f"cpu load {inp.cpu_load:.2f}")
    if inp.config_stale:
        score -= k["stale_config_penalty"]
        reasons.append("stale config")
    if inp.recent_failures:
        score -= k["start_failure_penalty"] * inp.recent_failures
        reasons.append(f"{inp.recent_failures} recent failure(s)")
    return max(0, int(round(score))), reasons


def backoff_seconds(failures: int, k: dict[str, float]) -> float:
    """Wait before the next start attempt after `failures` failures."""
    if failures <= 0:
        return 0.0
    return min(k["start_backoff_max"], k["start_backoff"] * 2 ** (failures - 1))


def better_by_margin(other: float, mine: float, k: dict[str, float]) -> bool:
    """Hysteresis: move a running engine only for a clearly better host."""
    return other >= mine + k["margin"]
