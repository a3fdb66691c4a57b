"""The vocabulary of access control, as oVirt has it: permits (oVirt's action
groups, with oVirt's ids and lower-case names) and the built-in roles made of
them. Pure data: services/access.py decides with it, auth.ensure_builtin
writes the roles into the database (read-only there).

oVirt 4.2 split VM_BASIC_OPERATIONS into run_vm, stop_vm, shut_down_vm and
reboot_vm; Keel has the split ones, as the 4.6 API does."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Permit:
    id: int
    name: str
    administrative: bool     # oVirt's role type ADMIN (else USER)
    views_children: bool     # oVirt's allowsViewingChildren
    acts_on: str             # the kind of object it is about (oVirt's VdcObjectType); "any": every kind


def _kind(kind, *entries):
    """Permits about one kind of object: (id, name, administrative[, views children])."""
    return tuple(Permit(e[0], e[1], e[2], e[3] if len(e) > 3 else True, kind) for e in entries)


PERMITS = (
    _kind("vm", (1, "create_vm", False, False), (2, "delete_vm", False), (3, "edit_vm_properties", False),
          (5, "change_vm_cd", False), (6, "migrate_vm", False), (7, "connect_to_vm", False),
          (9, "configure_vm_network", False), (10, "configure_vm_storage", False),
          (12, "manipulate_vm_snapshots", False), (13, "reconnect_to_vm", False), (17, "reboot_vm", False),
          (18, "stop_vm", False), (19, "shut_down_vm", False), (22, "run_vm", False))
    + _kind("host", (100, "create_host", True), (101, "edit_host_configuration", True), (102, "delete_host", True),
            (103, "manipulate_host", True), (104, "configure_host_network", True))
    + _kind("template", (200, "create_template", False, False), (201, "edit_template_properties", False),
            (202, "delete_template", False), (203, "copy_template", False), (204, "configure_template_network", False))
    + _kind("vm_pool", (300, "create_vm_pool", False, False), (301, "edit_vm_pool_configuration", False),
            (302, "delete_vm_pool", False), (303, "vm_pool_basic_operations", False))
    + _kind("cluster", (400, "create_cluster", True), (401, "edit_cluster_configuration", True),
            (402, "delete_cluster", True), (403, "configure_cluster_network", True))
    + _kind("system", (500, "manipulate_users", True), (501, "manipulate_roles", True),
            (503, "add_users_and_groups_from_directory", False), (800, "configure_engine", True),
            (1400, "inject_external_events", True, False))
    + _kind("any", (502, "manipulate_permissions", False), (1300, "login", False, False))
    + _kind("storage_domain", (600, "create_storage_domain", True),
            (601, "edit_storage_domain_configuration", True), (602, "delete_storage_domain", True),
            (603, "manipulate_storage_domain", True))
    # data centers are oVirt's storage pools
    + _kind("data_center", (700, "create_storage_pool", True), (701, "delete_storage_pool", True),
            (702, "edit_storage_pool_configuration", True), (703, "configure_storage_pool_network", True),
            (704, "create_storage_pool_network", True), (705, "delete_storage_pool_network", True))
    + _kind("disk", (1100, "create_disk", False, False), (1101, "attach_disk", False),
            (1102, "edit_disk_properties", False), (1103, "configure_disk_storage", False),
            (1104, "delete_disk", False))
)
# what lies under an object of each kind, itself included (None: everything)
UNDER = {"system": None, "data_center": {"data_center", "cluster", "host", "vm", "template", "vm_pool",
                                         "storage_domain", "disk"},
         "cluster": {"cluster", "host", "vm", "template", "vm_pool", "disk"}, "host": {"host"},
         "vm": {"vm", "disk"}, "template": {"template", "disk"}, "vm_pool": {"vm_pool", "vm", "disk"},
         "storage_domain": {"storage_domain", "disk"}, "disk": {"disk"}}


def applies_to(permit: Permit, kind: str | None) -> bool:
    """Whether a permit means anything on an object of this kind (None: the system)."""
    under = UNDER.get(kind or "system")
    return under is None or permit.acts_on == "any" or permit.acts_on in under


BY_NAME = {p.name: p for p in PERMITS}
BY_ID = {p.id: p for p in PERMITS}

VM_USE = {"run_vm", "stop_vm", "shut_down_vm", "reboot_vm", "change_vm_cd", "connect_to_vm"}
VM_ALL = VM_USE | {"create_vm", "delete_vm", "edit_vm_properties", "migrate_vm", "configure_vm_network",
                   "configure_vm_storage", "manipulate_vm_snapshots", "reconnect_to_vm"}
TEMPLATE_ALL = {"create_template", "edit_template_properties", "delete_template", "copy_template",
                "configure_template_network"}
POOL_ALL = {"create_vm_pool", "edit_vm_pool_configuration", "delete_vm_pool", "vm_pool_basic_operations"}
HOST_ALL = {"create_host", "edit_host_configuration", "delete_host", "manipulate_host", "configure_host_network"}
CLUSTER_ALL = {"create_cluster", "edit_cluster_configuration", "delete_cluster", "configure_cluster_network"}
STORAGE_ALL = {"create_storage_domain", "edit_storage_domain_configuration", "delete_storage_domain",
               "manipulate_storage_domain"}
DC_ALL = {"create_storage_pool", "delete_storage_pool", "edit_storage_pool_configuration",
          "configure_storage_pool_network", "create_storage_pool_network", "delete_storage_pool_network"}
DISK_ALL = {"create_disk", "attach_disk", "edit_disk_properties", "configure_disk_storage", "delete_disk"}
BASE = {"login"}
DELEGATE = {"manipulate_permissions"}


@dataclass(frozen=True)
class BuiltinRole:
    id: str
    name: str
    description: str
    administrative: bool
    views_children: bool
    permits: frozenset


def _r(id_, name, description, admin, children, permits):
    unknown = set(permits) - set(BY_NAME)
    assert not unknown, unknown
    return BuiltinRole(id_, name, description, admin, children, frozenset(permits))


# oVirt's ids where oVirt has the role, so scripts written for oVirt find them
BUILTIN_ROLES = (
    _r("00000000-0000-0000-0000-000000000001", "SuperUser", "Roles management administrator", True, True,
       set(BY_NAME)),
    _r("def00001-0000-0000-0000-def000000001", "ClusterAdmin",
       "Administrator Role, permission for all the objects underneath a specific Cluster", True, True,
       VM_ALL | TEMPLATE_ALL | POOL_ALL | HOST_ALL | CLUSTER_ALL | DISK_ALL | BASE | DELEGATE),
    _r("def00002-0000-0000-0000-def000000002", "DataCenterAdmin",
       "Administrator Role, permission for all the objects underneath a specific Data Center, except Storage",
       True, True, VM_ALL | TEMPLATE_ALL | POOL_ALL | HOST_ALL | CLUSTER_ALL | DC_ALL | DISK_ALL | BASE | DELEGATE),
    _r("def00003-0000-0000-0000-def000000003", "StorageAdmin",
       "Administrator Role, permission for all operations on a specific Storage Domain", True, True,
       STORAGE_ALL | DISK_ALL | BASE | DELEGATE),
    _r("def00004-0000-0000-0000-def000000004", "HostAdmin",
       "Administrator Role, permission for all operations on a specific Host", True, True,
       HOST_ALL | STORAGE_ALL | BASE | DELEGATE),
    _r("def00005-0000-0000-0000-def000000005", "NetworkAdmin",
       "Administrator Role, permission for all operations on a specific Logical Network", True, True,
       {"configure_host_network", "configure_cluster_network", "configure_storage_pool_network",
        "create_storage_pool_network", "delete_storage_pool_network", "configure_vm_network",
        "configure_template_network"} | BASE | DELEGATE),
    _r("def00007-0000-0000-0000-def000000007", "VmPoolAdmin",
       "Administrator Role, permission for all operations on a specific VM Pool", True, True,
       POOL_ALL | BASE | DELEGATE),
    _r("def00008-0000-0000-0000-def000000008", "TemplateAdmin",
       "Administrator Role, permission for all operations on a specific Template", True, True,
       TEMPLATE_ALL | BASE | DELEGATE),
    _r("def0000b-0000-0000-0000-def00000000c", "ReadOnlyAdmin",
       "Administrator Role, sees everything underneath its object and changes nothing", True, True, BASE),
    _r("00000000-0000-0000-0001-000000000001", "UserRole", "Standard User Role", False, True,
       VM_USE | {"vm_pool_basic_operations"} | BASE),
    _r("00000000-0000-0000-0001-000000000002", "PowerUserRole",
       "User Role, allowed to create VMs, Templates and Disks", False, False,
       {"create_vm", "create_template", "create_disk"} | BASE),
    _r("def00006-0000-0000-0000-def000000006", "UserVmManager",
       "User Role, with permission for any operation on Vms", False, True,
       VM_ALL | {"create_disk", "attach_disk", "edit_disk_properties", "delete_disk"} | BASE | DELEGATE),
    _r("def0000a-0000-0000-0000-def00000000d", "VmCreator", "User Role, permission to create VMs", False, False,
       {"create_vm"} | BASE),
    _r("def00009-0000-0000-0000-def000000009", "TemplateUser", "Template User", False, False,
       {"create_vm"} | BASE),
    _r("def0000a-0000-0000-0000-def00000000f", "TemplateOwner",
       "User Role, permissions for all operations on Templates", False, True,
       TEMPLATE_ALL - {"create_template"} | BASE | DELEGATE),
    _r("def0000a-0000-0000-0000-def00000000b", "DiskOperator",
       "User Role, permissions for all operations on a specific disk", False, True,
       DISK_ALL | BASE | DELEGATE),
    _r("def0000a-0000-0000-0000-def00000000c", "DiskCreator", "User Role, permission to create Disks", False,
       False, {"create_disk"} | BASE),
    _r("def0000c-0000-0000-0000-def000000000", "ExternalEventsCreator", "External Events Creator", False, False,
       {"inject_external_events"} | BASE),
)
BUILTIN_BY_NAME = {r.name: r for r in BUILTIN_ROLES}
# what a user who makes an object gets on it, unless a system-wide role covers it (oVirt's habit)
OWNER_ROLE = {"vm": "UserVmManager", "template": "TemplateOwner", "disk": "DiskOperator"}


def views_children(permit_names) -> bool:
    """A custom role shows what lies under its object if any of its permits does (oVirt's rule)."""
    return any(BY_NAME[n].views_children for n in permit_names)
