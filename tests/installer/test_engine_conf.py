"""What the deploy writes into the engine's settings (its first-boot seed)
beside the administrator's extras."""
from __future__ import annotations

from types import SimpleNamespace

from keel_appliance.seed import parse_engine_conf_text
from keel_installer.steps import Context, engine_conf


def context(tmp_path, extra: str | None = None) -> Context:
    extra_path = None
    if extra is not None:
        extra_path = tmp_path / "extra.conf"
        extra_path.write_text(extra)
    answers = SimpleNamespace(storage_connection="198.51.100.1:/shared", storage_mount_root="/rhev/data-center/mnt",
                              bridge="br0", engine_extra_conf=str(extra_path) if extra_path else None,
                              host_name="host1", host_address="198.51.100.11", timing_profile="fast")
    return Context(answers=answers, facts=None, record=None, services=None, appliance=None)


def test_the_management_network_is_the_hosts_bridge_and_the_storage_and_lockspace_are_the_deploys(tmp_path):
    conf = engine_conf(context(tmp_path))
    assert conf["libvirt"]["bridge_map"] == "ovirtmgmt:br0"
    assert conf["storage"]["nfs_mount_root"] == "/rhev/data-center/mnt"
    assert conf["power"]["lockspace_path"] == \
        "/rhev/data-center/mnt/198.51.100.1:_shared/hosted-engine.lockspace"
    # the hosts' etcd: this host's member, then each host's the engine knows
    assert conf["ha"] == {"etcd_endpoints": "https://198.51.100.11:2379",
                          "etcd_endpoint_template": "https://{address}:2379", "timing_profile": "fast"}


def test_an_administrators_bridge_map_is_kept_and_completed(tmp_path):
    conf = engine_conf(context(tmp_path, "[libvirt]\nbridge_map = storage:br1\nuri_template = qemu+tcp://{address}/system\n"))
    assert conf["libvirt"]["bridge_map"] == "storage:br1,ovirtmgmt:br0"
    assert conf["libvirt"]["uri_template"] == "qemu+tcp://{address}/system"
    # one the administrator mapped elsewhere stays theirs
    conf = engine_conf(context(tmp_path, "[libvirt]\nbridge_map = ovirtmgmt:mgmt0\n"))
    assert conf["libvirt"]["bridge_map"] == "ovirtmgmt:mgmt0"
    # and the result is what the seed accepts
    from keel_appliance.seed import render_conf
    assert parse_engine_conf_text(render_conf(conf))["libvirt"]["bridge_map"] == "ovirtmgmt:mgmt0"


def test_what_the_deploy_writes_is_what_the_engine_loads(tmp_path):
    from keel_appliance.seed import render_conf
    from keel_engine import config as engine_config
    path = tmp_path / "engine.conf"
    path.write_text(render_conf(engine_conf(context(tmp_path))))
    cfg = engine_config.load(str(path))
    assert cfg.bridge_map == {"ovirtmgmt": "br0"}
    assert cfg.ha_timing.record_stale_after == 6.0      # the hosts' fast profile
    assert cfg.ha_etcd_on(()).endpoints == ("https://198.51.100.11:2379",)
    # the members on the hosts the engine knows come after, each once, in the order given
    assert cfg.ha_etcd_on(["198.51.100.12", "198.51.100.11", "host3.example.test"]).endpoints == (
        "https://198.51.100.11:2379", "https://198.51.100.12:2379", "https://host3.example.test:2379")
