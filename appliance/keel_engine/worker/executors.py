"""What the engine worker runs for each kind of job: one visible table."""
from ..services import consoles, disks, hosts, inventory, jobs, snapshots, templates, vms


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
    }
