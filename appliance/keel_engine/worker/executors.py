"""What the engine worker runs for each kind of job: one visible table."""
from ..services import consoles, disks, hosts, hotplug, inventory, jobs, snapshots, templates, vms
from ..services import cdroms, isos, vm_from_snapshot


def table(power) -> dict:
    """{job kind: function(ctx, session, job) -> result dict (raises Fault)}."""
    return {
        jobs.HOST_ADD: hosts.run_add,
        jobs.HOST_ACTIVATE: hosts.run_activate,
        jobs.HOST_EVACUATE: vms.run_evacuate,
        jobs.HOST_FENCE: power.run_fence,
        jobs.FENCE_AGENT_TEST: power.run_agent_test,
        jobs.STORAGE_DOMAIN_ADD: inventory.run_add_storage_domain,
        jobs.VM_CREATE_DISKS: vms.run_create_disks,
        jobs.VM_REMOVE: vms.run_remove,
        jobs.VM_START: vms.run_start,
        jobs.VM_STOP: vms.run_stop,
        jobs.VM_SHUTDOWN: vms.run_shutdown,
        jobs.VM_REBOOT: vms.run_reboot,
        jobs.VM_MIGRATE: vms.run_migrate,
        jobs.VM_CONSOLE_TICKET: consoles.run_ticket,
        jobs.VM_NIC_PLUG: hotplug.run_nic,
        jobs.VM_DISK_PLUG: hotplug.run_disk,
        jobs.DISK_CREATE: disks.run_create,
        jobs.DISK_REMOVE: disks.run_remove,
        jobs.DISK_RESIZE: disks.run_resize,
        jobs.SNAPSHOT_CREATE: snapshots.run_create,
        jobs.SNAPSHOT_RESTORE: snapshots.run_restore,
        jobs.SNAPSHOT_PREVIEW: snapshots.run_preview,
        jobs.SNAPSHOT_COMMIT: snapshots.run_commit,
        jobs.SNAPSHOT_UNDO: snapshots.run_undo,
        jobs.TEMPLATE_CREATE: templates.run_create,
        jobs.TEMPLATE_REMOVE: templates.run_remove,
        jobs.STORAGE_DOMAIN_FILES: isos.run_listing,
        jobs.VM_CHANGE_CD: cdroms.run_change,
        jobs.VM_READ_CD: cdroms.run_read,
        jobs.VM_FROM_SNAPSHOT: vm_from_snapshot.run_create,
    }
