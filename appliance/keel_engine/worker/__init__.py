"""The engine worker (`keel-engine worker`): the one process that owns the
engine's background work. It monitors hosts and VMs, handles host failures
(fencing, HA restarts), and runs every job the web workers record (starts,
migrations, fences, disk and template copies, ...). Web workers never talk
to libvirt or a BMC."""
