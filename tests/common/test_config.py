import pytest

from keel_common.config import ConfigError, PROFILES, load_host_config, parse_host_config, render_host_config

GOOD = {
    "host": {"host_id": 2, "hostname": "h2"},
    "etcd": {"endpoints": "http://198.51.100.11:2379, http://198.51.100.12:2379"},
    "storage": {"shared_path": "/srv/shared"},
    "engine": {"health_url": "http://198.51.100.100/ovirt-engine/services/health"},
    "network": {"gateway": "198.51.100.1"},
    "timing": {"profile": "fast"},
}


def text(**changes):
    values = {k: dict(v) for k, v in GOOD.items()}
    for dotted, v in changes.items():
        sec, key = dotted.split("__")
        if v is None:
            values[sec].pop(key, None)
        else:
            values[sec][key] = v
    return render_host_config(values)


def test_good_config_and_defaults():
    cfg = parse_host_config(text(), "/etc/keel/hosted-engine.conf")
    assert cfg.host_id == 2 and cfg.hostname == "h2"
    assert cfg.etcd.endpoints == ("http://198.51.100.11:2379", "http://198.51.100.12:2379")
    assert cfg.storage.lockspace == "hosted-engine"
    assert cfg.storage.lockspace_path == "/srv/shared/hosted-engine.lockspace"
    assert cfg.storage.lease_path == "/srv/shared/hosted-engine.lease"
    assert cfg.timing == PROFILES["fast"]
    assert cfg.timing.lease_expiry_s == 68


def test_timing_override_and_score_section():
    cfg = parse_host_config(text(timing__cycle="2", timing__etcd_lease_ttl="12") + "[score]\nbase = 2000\n")
    assert cfg.timing.cycle == 2.0 and cfg.timing.etcd_lease_ttl == 12
    assert cfg.score == {"base": 2000.0}


@pytest.mark.parametrize("change, needle", [
    ({"host__host_id": None}, "[host] host_id is missing; expected an integer from 1 to 2000"),
    ({"host__host_id": "0"}, "[host] host_id = '0' is invalid; expected an integer from 1 to 2000"),
    ({"host__host_id": "two"}, "[host] host_id = 'two' is invalid"),
    ({"etcd__endpoints": "198.51.100.11:2379"}, "[etcd] endpoints = '198.51.100.11:2379' is invalid; expected a comma-separated list of http(s)://host:port"),
    ({"storage__shared_path": "relative/dir"}, "[storage] shared_path = 'relative/dir' is invalid; expected an absolute path"),
    ({"engine__health_url": "ftp://x"}, "[engine] health_url = 'ftp://x' is invalid; expected an http(s) URL"),
    ({"engine__mac": "52:54:00:zz:00:01"}, "[engine] mac = '52:54:00:zz:00:01' is invalid"),
    ({"timing__profile": "turbo"}, "[timing] profile = 'turbo' is invalid; expected one of: production, fast"),
    ({"timing__cycle": "-1"}, "[timing] cycle = '-1' is invalid; expected a positive number"),
    ({"timing__etcd_lease_ttl": "2"}, "[timing] etcd_lease_ttl = 2 is too short"),
    ({"network__gateway": None}, "[network] gateway is missing"),
])
def test_bad_values_name_file_key_and_expectation(change, needle):
    with pytest.raises(ConfigError) as e:
        parse_host_config(text(**change), "/etc/keel/x.conf")
    msg = str(e.value)
    assert msg.startswith("/etc/keel/x.conf: ")
    assert needle in msg
    assert "\n" not in msg


def test_missing_section_and_broken_ini():
    with pytest.raises(ConfigError, match=r"missing section \[etcd\]"):
        parse_host_config("[host]\nhost_id = 1\n", "f.conf")
    with pytest.raises(ConfigError, match="not a valid INI file"):
        parse_host_config("host_id = 1\n", "f.conf")


def test_missing_and_unreadable_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_host_config(str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_host_config(str(tmp_path))
