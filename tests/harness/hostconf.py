"""Host configuration files for tests."""
from __future__ import annotations

import os

from keel_common.config import render_host_config


def write_host_config(path: str, host_id: int, *, etcd_url: str, shared: str, state_root: str,
                      sanlock_run_dir: str | None = None, gateway: str = "127.0.3.1",
                      interface: str = "lo", libvirt_uri: str = "test:///default",
                      health_url: str = "http://127.0.3.1:9/ovirt-engine/services/health",
                      profile: str = "fast", extra: dict | None = None) -> str:
    state = os.path.join(state_root, f"host{host_id}")
    values = {
        "host": {"host_id": host_id, "hostname": f"host{host_id}", "address": f"127.0.3.{10 + host_id}",
                 "state_dir": state, "broker_socket": os.path.join(state, "broker.sock")},
        "etcd": {"endpoints": etcd_url},
        "storage": {"shared_path": shared, "sanlock_run_dir": sanlock_run_dir},
        "engine": {"health_url": health_url, "libvirt_uri": libvirt_uri, "memory_mb": 64,
                   "domain_type": "qemu"},
        "network": {"gateway": gateway, "management_interface": interface},
        "timing": {"profile": profile},
    }
    for sec, kv in (extra or {}).items():
        values.setdefault(sec, {}).update(kv)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(render_host_config(values))
    return path
