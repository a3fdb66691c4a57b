"""VM pools (`vmpools`) and their allocatevm action, in oVirt's shapes."""
from ..models import VmPool
from ..services import pools as pool_svc
from ..services import reads
from . import access_views as av
from . import schemas
from .common import listing, obj, row
from .fields import Int, Name, Obj, Reference, Text, required
from .framework import action_answer, action_job, body, created, ctx, removed, render, route, session
from .views import ref

POOL = Obj(name=Name(), description=Text(4000), cluster=Reference(), template=Reference(),
           size=Int(1, pool_svc.MAX_SIZE), prestarted_vms=Int(0, pool_svc.MAX_SIZE),
           max_user_vms=Int(1, pool_svc.MAX_SIZE), type=Text(16, pool_svc.TYPES))


@route("/vmpools", ["GET"], "List VM pools (search: name, description, cluster)", query=("search", "max"))
def pools_list():
    return listing("vm_pools", "vm_pool", reads.POOLS, lambda p, _e: av.vm_pool(p))


@route("/vmpools", ["POST"], "Add a VM pool (its VMs are made from the template by jobs)", body=POOL,
       created=True)
def pools_add():
    b = body(POOL)
    pool = pool_svc.add_pool(ctx(), session(), pool_svc.PoolSpec(
        name=required(b, "name"), cluster=required(b, "cluster"), template=required(b, "template"),
        size=b.get("size", 1), prestarted_vms=b.get("prestarted_vms", 0), max_user_vms=b.get("max_user_vms", 1),
        type=b.get("type", "automatic"), description=b.get("description", "")))
    return created("vm_pool", None, lambda: av.vm_pool(pool), None)


@route("/vmpools/<ident>", ["GET"], "Get a VM pool")
def pool_get(ident):
    return render("vm_pool", av.vm_pool(row(reads.POOLS, ident)))


@route("/vmpools/<ident>", ["PUT"], "Update a VM pool (size: VMs are added or free ones removed)", body=POOL)
def pool_update(ident):
    b = body(POOL)
    pool = pool_svc.update_pool(ctx(), session(), obj(VmPool, ident, "VM pool"), pool_svc.PoolChanges(
        name=b.get("name"), description=b.get("description"), size=b.get("size"),
        prestarted_vms=b.get("prestarted_vms"), max_user_vms=b.get("max_user_vms")))
    return render("vm_pool", av.vm_pool(pool))


@route("/vmpools/<ident>", ["DELETE"], "Remove a VM pool and its VMs (all down)")
def pool_remove(ident):
    pool_svc.remove_pool(ctx(), session(), obj(VmPool, ident, "VM pool"))
    return removed()


@route("/vmpools/<ident>/allocatevm", ["POST"], "Take a VM from the pool (a running one if any; you get "
       "UserRole on it)", body=schemas.ACTION, query=("async",), job=True)
def pool_allocate(ident):
    b = body(schemas.ACTION)
    vm, job = pool_svc.allocate(ctx(), session(), obj(VmPool, ident, "VM pool"))
    if job is None:
        return action_answer(extra={"vm": ref("vms", vm.id)})
    return action_job(job, b, lambda _j: {"vm": ref("vms", vm.id)})
