"""VM pools (oVirt's): VMs made from one template through vms.add_vm, handed
to users on request (`allocatevm`). The engine worker (worker/pools.py)
brings each pool to its size, takes each new VM's clean snapshot, keeps
`prestarted_vms` of the free ones running, and in an automatic pool takes
back a VM its user has shut down, its changes discarded (the clean snapshot
restored through the snapshot service). A manual pool's VM stays with its
user.

A member's life: preparing -> free -> allocated -> (automatic) returning ->
free; removing when the pool shrinks or goes. Every change of a member's
state is a conditional UPDATE, so the worker and a request never both take
a VM. Storage work (a VM's disks, its snapshot, a restore, a removal) is
done one job at a time per pool: a pool of 20 does not make 20 disks at
once on one storage domain."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select, update

from ..errors import bad_request, conflict
from ..models import Cluster, Job, Permission, Role, Template, Vm, VmPool, VmPoolMember, utcnow
from . import access, events, lookup
from . import vms as vm_svc
from .lookup import Ref

log = logging.getLogger("keel.engine.pools")
TYPES = ("automatic", "manual")
MAX_SIZE = 1000
RUNNING = ("up", "powering_up", "wait_for_launch", "reboot_in_progress")


@dataclass(frozen=True)
class PoolSpec:
    name: str
    cluster: Ref
    template: Ref
    size: int = 1
    prestarted_vms: int = 0
    max_user_vms: int = 1
    type: str = "automatic"
    description: str = ""


@dataclass(frozen=True)
class PoolChanges:
    name: str | None = None
    description: str | None = None
    size: int | None = None
    prestarted_vms: int | None = None
    max_user_vms: int | None = None


def _check_numbers(size, prestarted, max_user):
    if not 1 <= size <= MAX_SIZE:
        raise bad_request(f"size: from 1 to {MAX_SIZE}, got {size}")
    if not 0 <= prestarted <= size:
        raise bad_request(f"prestarted_vms: from 0 to the pool's size ({size}), got {prestarted}")
    if not 1 <= max_user <= MAX_SIZE:
        raise bad_request(f"max_user_vms: from 1 to {MAX_SIZE}, got {max_user}")


def engine_of(ctx):
    """The pool's own doings (making, starting, cleaning its VMs) are the
    engine's: the user asked for the pool or a VM from it, and was checked."""
    return ctx.as_user(None)


def add_pool(ctx, s, spec: PoolSpec) -> VmPool:
    """The pool and its first VM now; the worker makes the others."""
    cluster = lookup.require(s, Cluster, spec.cluster, "cluster", "cluster")
    access.check_ref(ctx, s, "create_vm_pool", cluster, "cluster", spec.cluster)
    template = lookup.require(s, Template, spec.template, "template", "template")
    access.check_ref(ctx, s, "create_vm", template, "template", spec.template)
    lookup.unique_name(s, VmPool, spec.name, "VM pool")
    if spec.type not in TYPES:
        raise bad_request(f"type: expected one of {', '.join(TYPES)}, got '{spec.type}'")
    _check_numbers(spec.size, spec.prestarted_vms, spec.max_user_vms)
    pool = VmPool(name=spec.name, description=spec.description, cluster_id=cluster.id, template_id=template.id,
                  type=spec.type, size=spec.size, prestarted_vms=spec.prestarted_vms, max_user_vms=spec.max_user_vms)
    s.add(pool)
    s.flush()
    grow_one(engine_of(ctx), s, pool)
    events.add(s, events.OBJECT_ADDED, f"VM pool {pool.name} ({pool.type}, {pool.size} VM(s) from template "
               f"{template.name}, {pool.prestarted_vms} kept running) was added.", cluster_id=cluster.id,
               template_id=template.id, user_id=ctx.user_id)
    return pool


def grow_one(ctx, s, pool) -> VmPoolMember:
    """One more VM for the pool (its disks are made by a job)."""
    used = set(s.scalars(select(Vm.name).where(Vm.name.like(f"{pool.name}-%"))))
    k = 1
    while f"{pool.name}-{k}" in used:
        k += 1
    vm, job = vm_svc.add_vm(ctx, s, vm_svc.VmSpec(
        name=f"{pool.name}-{k}", cluster=Ref(id=pool.cluster_id), template=Ref(id=pool.template_id),
        description=f"VM of pool {pool.name}"))
    member = VmPoolMember(vm_id=vm.id, pool_id=pool.id, state="preparing", job_id=job.id if job else None)
    s.add(member)
    s.flush()
    return member


def members(s, pool_id, *states):
    q = select(VmPoolMember).where(VmPoolMember.pool_id == pool_id)
    if states:
        q = q.where(VmPoolMember.state.in_(states))
    return s.scalars(q).all()


def update_pool(ctx, s, pool: VmPool, ch: PoolChanges) -> VmPool:
    """Name, description, limits, size: the worker then adds VMs, or removes
    free ones, until the pool has its size."""
    access.check(ctx, s, "edit_vm_pool_configuration", pool)
    if pool.removing:
        raise conflict(f"VM pool {pool.name} is being removed")
    size = pool.size if ch.size is None else ch.size
    prestarted = pool.prestarted_vms if ch.prestarted_vms is None else ch.prestarted_vms
    max_user = pool.max_user_vms if ch.max_user_vms is None else ch.max_user_vms
    _check_numbers(size, prestarted, max_user)
    if ch.name is not None and ch.name != pool.name:
        lookup.unique_name(s, VmPool, ch.name, "VM pool", exclude_id=pool.id)
        pool.name = ch.name
    if ch.description is not None:
        pool.description = ch.description
    pool.size, pool.prestarted_vms, pool.max_user_vms = size, prestarted, max_user
    events.add(s, events.OBJECT_UPDATED, f"VM pool {pool.name} was updated: {pool.size} VM(s), "
               f"{pool.prestarted_vms} kept running, at most {pool.max_user_vms} per user.",
               cluster_id=pool.cluster_id, user_id=ctx.user_id)
    return pool


def shrink_one(ctx, s, pool: VmPool) -> bool:
    """Remove one free (or new), down VM; False when there is none now."""
    for m in members(s, pool.id, "free", "preparing"):
        vm = s.get(Vm, m.vm_id)
        if vm is None or vm.status != "down":
            continue
        if claim(s, m, m.state, "removing"):
            job = vm_svc.remove_vm(ctx, s, vm)
            if job is not None:
                m.job_id = job.id
            return True
    return False


def remove_pool(ctx, s, pool: VmPool):
    """The pool and its VMs, which must all be down: the worker removes the
    VMs one after another, then the pool."""
    access.check(ctx, s, "delete_vm_pool", pool)
    running = sorted(v.name for v in (s.get(Vm, m.vm_id) for m in members(s, pool.id))
                     if v is not None and v.status != "down")
    if running:
        raise conflict(f"VM pool {pool.name} still has VMs that are not down: {', '.join(running[:10])}; "
                       "stop them first")
    for m in members(s, pool.id, "allocated"):
        give_back(ctx, s, m, "its pool is being removed")
        m.state = "free"
    pool.removing = True
    events.add(s, events.OBJECT_REMOVED, f"VM pool {pool.name} is being removed with its VMs.",
               user_id=ctx.user_id)


def claim(s, member, from_state, to_state, **values) -> bool:
    res = s.execute(update(VmPoolMember).where(VmPoolMember.vm_id == member.vm_id,
                                               VmPoolMember.state == from_state)
                    .values(state=to_state, **values).execution_options(synchronize_session=False))
    s.refresh(member)
    return res.rowcount == 1


def storage_busy(s, pool_id) -> bool:
    """A job of the pool's is making, cleaning or removing a VM's disks."""
    ids = [m.job_id for m in members(s, pool_id) if m.job_id]
    return bool(ids) and s.scalar(select(func.count()).select_from(Job).where(
        Job.id.in_(ids), Job.status == "started")) > 0


def allocate(ctx, s, pool: VmPool) -> tuple[Vm, object]:
    """Give the caller a free VM of the pool (a running one if there is one,
    else one that is started now), with UserRole on it. Returns (vm, the
    start's job or None)."""
    access.check(ctx, s, "vm_pool_basic_operations", pool)
    if pool.removing:
        raise conflict(f"VM pool {pool.name} is being removed")
    held = s.scalar(select(func.count()).select_from(VmPoolMember).where(
        VmPoolMember.pool_id == pool.id, VmPoolMember.user_id == ctx.user_id,
        VmPoolMember.state == "allocated"))
    if held >= pool.max_user_vms:
        raise conflict(f"you already hold {held} VM(s) of pool {pool.name}, its most per user")
    free = [(m, s.get(Vm, m.vm_id)) for m in members(s, pool.id, "free")]
    free = sorted(((m, v) for m, v in free if v is not None and (v.status in RUNNING or v.status == "down")),
                  key=lambda mv: (0 if mv[1].status == "up" else 1 if mv[1].status in RUNNING else 2, mv[1].name))
    role = s.scalar(select(Role).where(Role.name == "UserRole"))
    for m, vm in free:
        if not claim(s, m, "free", "allocated", user_id=ctx.user_id, allocated=utcnow(), used=False):
            continue
        perm = Permission(role_id=role.id, user_id=ctx.user_id, object_type="vm", object_id=vm.id)
        s.add(perm)
        s.flush()
        m.permission_id = perm.id
        job = None
        if vm.status == "down":   # as its user now (UserRole has run_vm), so the start is their job
            job = vm_svc.request_start(ctx, s, vm)
        events.add(s, events.OBJECT_UPDATED, f"VM {vm.name} of pool {pool.name} was given to its user"
                   f"{' and is starting' if job else ' (running already)'}.", vm_id=vm.id,
                   user_id=ctx.user_id)
        return vm, job
    raise conflict(f"VM pool {pool.name} has no free VM now; try again later or ask for a larger pool")


def give_back(ctx, s, member: VmPoolMember, reason: str):
    """Take a VM back from its user (its permission goes); the worker then
    makes it clean (automatic pools)."""
    if member.permission_id:
        perm = s.get(Permission, member.permission_id)
        if perm is not None:
            s.delete(perm)
    vm = s.get(Vm, member.vm_id)
    events.add(s, events.OBJECT_UPDATED, f"VM {vm.name} went back to its pool ({reason}).", vm_id=vm.id,
               user_id=member.user_id)
    member.user_id, member.permission_id, member.allocated, member.used = None, None, None, False
