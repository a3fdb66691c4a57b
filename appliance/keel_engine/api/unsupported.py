"""No body field is silently dropped. A request body is checked against
oVirt's API model (api/ovirt_model.py) and Keel's declarations
(api/schemas.py): a field Keel declares is parsed as usual; a field oVirt
defines but Keel does not implement yet is a 400 naming it ("not supported
yet"); a field oVirt does not define at all is a 400 too. An empty element
carries nothing and passes.

SDK_NOISE lists the few fields oVirt's SDK and Ansible modules send on their
own although they mean nothing to Keel: they are accepted and ignored, and
docs/automation.md says which."""
from __future__ import annotations

from ..errors import bad_request
from . import schemas
from .fields import ListOf, Obj, Reference
from .ovirt_model import MODEL

# a declared body -> its oVirt type
BODY_TYPES = {
    id(schemas.DATA_CENTER): "DataCenter", id(schemas.CLUSTER): "Cluster", id(schemas.NETWORK): "Network",
    id(schemas.STORAGE_DOMAIN): "StorageDomain", id(schemas.ATTACH_STORAGE_DOMAIN): "StorageDomain",
    id(schemas.HOST): "Host", id(schemas.FENCE_AGENT): "Agent", id(schemas.DISK): "Disk",
    id(schemas.DISK_ATTACHMENT): "DiskAttachment", id(schemas.NIC): "Nic", id(schemas.VM): "Vm",
    id(schemas.TEMPLATE): "Template", id(schemas.SNAPSHOT): "Snapshot", id(schemas.EVENT): "Event",
    id(schemas.ACTION): "Action", id(schemas.START): "Action", id(schemas.MIGRATE): "Action",
    id(schemas.FENCE): "Action", id(schemas.PREVIEW_SNAPSHOT): "Action",
    id(schemas.CLONE): "Action", id(schemas.TICKET): "Action", id(schemas.CONSOLE_FILE): "Action",
}

# Fields oVirt's clients send unasked, meaningless here: accepted, ignored.
#   Host.ssh: ovirt.ovirt's ovirt_host always sends <ssh/> (SSH deployment; Keel reaches hosts through libvirt)
#   Host.override_iptables: host deployment's firewall set-up (Keel deploys nothing on hosts)
SDK_NOISE = {"Host": {"ssh", "override_iptables"}}
# identify the object; a body may carry them whatever it is
ALWAYS = {"id", "href"}


def _empty(value) -> bool:
    return value is None or value == "" or value == {} or value == []


def register(schema: Obj, ovirt_type: str) -> None:
    """A body declared elsewhere (a new module's schema) and its oVirt type."""
    BODY_TYPES[id(schema)] = ovirt_type


def check(raw, schema: Obj) -> None:
    """Raise a 400 naming the first field of `raw` that Keel would ignore."""
    ovirt_type = BODY_TYPES.get(id(schema))
    if ovirt_type is None or not isinstance(raw, dict):
        return
    _check(raw, schema, ovirt_type, "")


def _check(raw: dict, schema: Obj, ovirt_type: str, path: str) -> None:
    known = MODEL.get(ovirt_type, {})
    for key, value in raw.items():
        where = f"{path}.{key}" if path else key
        field = schema.fields.get(key)
        if field is not None:
            sub = known.get(key)
            if isinstance(field, Obj) and isinstance(value, dict) and sub:
                _check(value, field, sub, where)
            elif isinstance(field, ListOf) and isinstance(field.item, Obj) and isinstance(value, dict) and sub:
                items = value.get(field.tag)
                for item in items if isinstance(items, list) else [items]:
                    if isinstance(item, dict):
                        _check(item, field.item, sub, f"{where}.{field.tag}")
            continue
        if key in ALWAYS or key in SDK_NOISE.get(ovirt_type, ()) or _empty(value):
            continue
        if key in known:
            raise bad_request(f"{where}: not supported yet (Keel does not implement this field of oVirt's "
                              f"{ovirt_type}; leave it out)")
        raise bad_request(f"{where}: unknown field (oVirt's {ovirt_type} has no such field)")


__all__ = ["check", "register", "Reference"]
