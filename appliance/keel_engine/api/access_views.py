"""Users, groups, roles, permits, permissions, domains and VM pools as oVirt
shows them (pure, like api/views.py)."""
import uuid

from ..representation import Many
from ..services.access import OBJECT_TYPES
from .views import API, links, ref

INTERNAL_DOMAIN_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "keel:domain:internal"))


def user(u):
    base = f"{API}/users/{u.id}"
    return {"id": u.id, "href": base, "name": u.first_name or u.name, "last_name": u.last_name or None,
            "email": u.email or None, "user_name": f"{u.name}@{u.domain}", "principal": u.name,
            "namespace": "*", "domain_entry_id": u.external_id, "domain": {"name": u.domain},
            "link": links(base, "permissions", "groups")}


def group(g):
    base = f"{API}/groups/{g.id}"
    return {"id": g.id, "href": base, "name": g.name, "namespace": g.namespace or "*",
            "domain_entry_id": g.external_id, "domain": {"name": g.domain}, "link": links(base, "permissions")}


def permit(p, role_id=None):
    out = {"id": str(p.id), "name": p.name, "administrative": p.administrative}
    if role_id is not None:
        out["href"] = f"{API}/roles/{role_id}/permits/{p.id}"
        out["role"] = ref("roles", role_id)
    return out


def role(r, permits=None):
    base = f"{API}/roles/{r.id}"
    out = {"id": r.id, "href": base, "name": r.name, "description": r.description,
           "administrative": r.administrative, "mutable": r.mutable, "link": links(base, "permits")}
    if permits is not None:
        out["permits"] = Many("permit", [permit(p, r.id) for p in permits])
    return out


def permission(p):
    """<permission> with its role, its user or group, and the object it is on
    (none: the system)."""
    if p.object_type:
        href = f"{API}/{OBJECT_TYPES.get(p.object_type, p.object_type + 's')}/{p.object_id}/permissions/{p.id}"
    else:
        href = f"{API}/permissions/{p.id}"
    out = {"id": p.id, "href": href, "role": ref("roles", p.role_id)}
    if p.user_id:
        out["user"] = ref("users", p.user_id)
    if p.group_id:
        out["group"] = ref("groups", p.group_id)
    if p.object_type:
        out[p.object_type] = ref(OBJECT_TYPES.get(p.object_type, p.object_type + "s"), p.object_id)
    return out


def domain(ident, name):
    base = f"{API}/domains/{ident}"
    return {"id": ident, "href": base, "name": name, "link": links(base, "users", "groups")}


def domain_user(domain_id, domain_name, a):
    """An account of a directory (not yet, or already, a user of the engine)."""
    return {"id": a.external_id, "href": f"{API}/domains/{domain_id}/users/{a.external_id}",
            "name": a.first_name or a.login, "last_name": a.last_name or None, "email": a.email or None,
            "user_name": f"{a.login}@{domain_name}", "principal": a.login, "namespace": "*",
            "domain_entry_id": a.external_id, "domain": {"id": domain_id, "href": f"{API}/domains/{domain_id}",
                                                         "name": domain_name}}


def domain_group(domain_id, domain_name, a):
    return {"id": a.external_id, "href": f"{API}/domains/{domain_id}/groups/{a.external_id}", "name": a.login,
            "namespace": "*", "domain_entry_id": a.external_id,
            "domain": {"id": domain_id, "href": f"{API}/domains/{domain_id}", "name": domain_name}}


def vm_pool(p):
    base = f"{API}/vmpools/{p.id}"
    return {"id": p.id, "href": base, "name": p.name, "description": p.description,
            "cluster": ref("clusters", p.cluster_id), "template": ref("templates", p.template_id),
            "size": p.size, "prestarted_vms": p.prestarted_vms, "max_user_vms": p.max_user_vms, "type": p.type,
            "stateful": False, "link": links(base, "permissions")}
