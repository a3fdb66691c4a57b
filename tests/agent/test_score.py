"""The score: base minus penalties, clamped at 0; constants overridable."""
import pytest

from keel_agent.score import (DEFAULTS, ScoreConfigError, ScoreInput, backoff_seconds, better_by_margin,
                              compute_score, score_constants)

K = score_constants()


def inp(**kw):
    base = dict(gateway_fraction=1.0, mgmt_network_ok=True, free_memory_mb=16384, engine_memory_mb=4096,
                cpu_load=0.1, engine_runs_here=False, config_stale=False, recent_failures=0,
                storage_ok=True, lockspace_held=True, local_maintenance=False)
    base.update(kw)
    return ScoreInput(**base)


def test_healthy_host_scores_base():
    assert compute_score(inp(), K) == (3400, [])


@pytest.mark.parametrize("kw, expected", [
    (dict(gateway_fraction=0.0), 3400 - 1600),
    (dict(gateway_fraction=0.5), 3400 - 800),
    (dict(mgmt_network_ok=False), 3400 - 1600),
    (dict(free_memory_mb=1000), 3400 - 500),
    (dict(cpu_load=0.9), 3400 - 1000),
    (dict(cpu_load=0.65), 3400 - 500),
    (dict(config_stale=True), 3400 - 1000),
    (dict(recent_failures=2), 3400 - 800),
])
def test_each_penalty(kw, expected):
    score, reasons = compute_score(inp(**kw), K)
    assert score == expected and len(reasons) == 1


def test_memory_in_use_by_the_running_engine_is_no_penalty():
    assert compute_score(inp(free_memory_mb=100, engine_runs_here=True), K)[0] == 3400


@pytest.mark.parametrize("kw", [dict(local_maintenance=True), dict(storage_ok=False),
                                dict(lockspace_held=False), dict(recent_failures=3)])
def test_disqualifying_conditions_score_zero(kw):
    assert compute_score(inp(**kw), K)[0] == 0


def test_clamped_at_zero():
    score, reasons = compute_score(inp(gateway_fraction=0, mgmt_network_ok=False, cpu_load=1.0,
                                       config_stale=True), K)
    assert score == 0 and len(reasons) == 4


def test_overrides_from_config_and_unknown_keys_rejected():
    k = score_constants({"base": 2000, "margin": 100})
    assert compute_score(inp(), k)[0] == 2000
    assert better_by_margin(2100, 2000, k) and not better_by_margin(2099, 2000, k)
    with pytest.raises(ScoreConfigError, match="gatway_penalty is not a known"):
        score_constants({"gatway_penalty": 1})
    with pytest.raises(ScoreConfigError, match=">= 0"):
        score_constants({"margin": -1})
    assert set(DEFAULTS) == set(score_constants())


def test_hysteresis_margin():
    assert not better_by_margin(3400, 3000, K)   # 400 better: stays
    assert better_by_margin(3400, 2600, K)       # 800 better: moves


def test_backoff_doubles_and_is_capped():
    assert [backoff_seconds(n, K) for n in range(0, 4)] == [0, 10, 20, 40]
    assert backoff_seconds(30, K) == DEFAULTS["start_backoff_max"]
