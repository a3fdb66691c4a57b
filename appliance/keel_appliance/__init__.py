"""The Keel engine appliance: the engine VM's disk image (Debian 12, systemd,
the engine and its worker as units), its first-boot seed disk, and helpers
to boot it under qemu. See docs/appliance.md."""
