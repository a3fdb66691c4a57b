"""keel-ha-broker: monitors, the host-id lease, the host's etcd record, and
the local socket the agent and the CLI use (docs/ha-protocol.md)."""
__version__ = "0.1.0"
