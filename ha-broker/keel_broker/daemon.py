"""keel-ha-broker entry point."""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from keel_common.config import ConfigError, load_host_config
from keel_common.logs import setup_logging
from keel_common.sdnotify import notify

log = logging.getLogger("keel.broker")


def build_broker(cfg):
    from .broker import Broker
    from .engine_vm import EngineVmView
    from .etcdsession import EtcdSession
    from .lockspace import HostIdLease
    from .monitors import (CpuLoadMonitor, EngineHealthMonitor, GatewayMonitor, MemoryMonitor,
                           MgmtNetworkMonitor, StorageMonitor)
    from .peerleases import PeerLeases
    t = cfg.timing
    vm = EngineVmView(cfg.engine.libvirt_uri, cfg.engine.name)
    monitors = [
        GatewayMonitor(cfg.network.gateway, t.cycle, t.monitor_timeout),
        MgmtNetworkMonitor(cfg.network.management_interface, t.cycle, t.monitor_timeout),
        MemoryMonitor(cfg.engine.memory_mb, max(t.cycle, 2.0), t.monitor_timeout),
        CpuLoadMonitor(vm.cpu_seconds, max(t.cycle, 2.0), t.monitor_timeout),
        EngineHealthMonitor(cfg.engine.health_url, vm.state, t.cycle, t.monitor_timeout),
        StorageMonitor(cfg.storage.shared_path, cfg.host_id, t.cycle, max(t.monitor_timeout, 2 * t.io_timeout)),
    ]
    etcd = EtcdSession(cfg.etcd, ttl=t.etcd_lease_ttl, timeout=max(1.0, min(t.monitor_timeout * 2, 5.0)))
    return Broker(cfg, etcd, HostIdLease(cfg), monitors,
                  peer_leases=PeerLeases(cfg.storage.lockspace_path, period=t.lease_read_period))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="keel-ha-broker",
                                description="Keel HA broker: monitors, host-id lease, etcd metadata")
    p.add_argument("--config", help="host configuration (default /etc/keel/hosted-engine.conf)")
    p.add_argument("--debug", action="store_true", help="log debug messages")
    args = p.parse_args(argv)
    setup_logging("keel.broker", args.debug)
    try:
        cfg = load_host_config(args.config)
    except ConfigError as e:
        print(f"keel-ha-broker: {e}", file=sys.stderr)
        return 1
    from .server import BrokerServer
    try:
        broker = build_broker(cfg)
        server = BrokerServer(cfg.broker_socket, broker)
    except OSError as e:
        print(f"keel-ha-broker: cannot start: {e}", file=sys.stderr)
        return 1
    for m in broker.monitors.values():
        m.start()
    threading.Thread(target=server.serve_forever, name="socket", daemon=True).start()

    def on_signal(signum, _frame):
        log.info("stopping on %s", signal.Signals(signum).name)
        broker.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    log.info("broker started for host %d (%s), profile %s, cycle %g s",
             cfg.host_id, cfg.hostname, cfg.timing.profile, cfg.timing.cycle)
    broker.cycle()
    notify("READY=1")
    broker.run()
    server.shutdown()
    server.server_close()
    # The host-id lease stays with the sanlock daemon: a restarted broker
    # (or the engine VM's lease holder) keeps running undisturbed.
    broker.etcd.close()
    log.info("broker stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
