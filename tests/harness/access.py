"""For access-control tests: an in-process engine holding one object of every
kind (two clusters, each with a host, VMs, a template, a disk, a pool; a
storage domain, a network, a floating disk, a job, events, a group, a
directory, a custom role), internal users with the roles a test gives them,
and their tokens. Rows are written directly (no host answers here); every
decision still goes through the engine's own API and services."""
from __future__ import annotations

from dataclasses import dataclass, field

from keel_engine.models import (BLANK_TEMPLATE_ID, Cluster, DataCenter, Directory, Disk, DiskAttachment, Event,
                                FenceAgent, Group, Host, Job, Network, Nic, Role, Snapshot, Step, StorageDomain,
                                Template, User, Vm, VmPool, VmPoolMember, Volume)
from keel_engine.services import Context, roles, users

from .engineapp import ADMIN_PASSWORD, engine_app_with_host

API = "/ovirt-engine/api"
PASSWORD = "walker-pw-1"


@dataclass
class World:
    cfg: object
    app: object
    sm: object
    ids: dict = field(default_factory=dict)

    @property
    def engine(self):
        return Context(self.cfg, self.sm)

    def client(self):
        return self.app.test_client()

    def user(self, name, grants=()) -> str:
        """An internal user with (role name, object key in ids or None) permissions; its id."""
        with self.sm() as s:
            u = users.add_internal(self.engine, s, name, PASSWORD)
            for role_name, key in grants:
                self.grant(s, u, role_name, key)
            s.commit()
            return u.id

    def grant(self, s, principal, role_name, key):
        role = s.query(Role).filter_by(name=role_name).one()
        target = None
        if key is not None:
            kind, _, _ = key.partition(":")
            target = s.get(MODELS[kind], self.ids[key])
        if isinstance(principal, Group):
            return roles.add_permission(self.engine, s, role, target, group=principal)
        return roles.add_permission(self.engine, s, role, target, user=principal)

    def token(self, name, password=PASSWORD) -> dict:
        r = self.client().post("/ovirt-engine/sso/oauth/token", data={
            "grant_type": "password", "username": name, "password": password})
        assert r.status_code == 200, r.get_json()
        return {"Authorization": f"Bearer {r.get_json()['access_token']}", "Accept": "application/json"}

    def admin(self) -> dict:
        return self.token("admin@internal", ADMIN_PASSWORD)

    def get(self, h, path, **extra):
        return self.client().get(API + path, headers={**h, **extra})

    def send(self, h, method, path, body=None):
        import json
        return self.client().open(API + path, method=method, data=json.dumps(body or {}),
                                  headers={**h, "Content-Type": "application/json"})

    def names(self, h, path, tag, **extra):
        r = self.get(h, path, **extra)
        assert r.status_code == 200, (path, r.get_data())
        return sorted(x.get("name") or x.get("id") for x in r.get_json().get(tag, []))


MODELS = {"dc": DataCenter, "cluster": Cluster, "host": Host, "sd": StorageDomain, "template": Template,
          "vm": Vm, "pool": VmPool, "disk": Disk}


def build(tmp_path, address="127.0.8.29") -> World:
    """Data center dc1; clusters A (host hA, VMs a1 a2, template tA with a
    disk, pool pA with VM pA-1) and B (host hB, VM b1); storage domain sd1,
    network net1, floating disk fd1; a job, an event per VM, a directory, a
    group, a custom role."""
    cfg, app, sm, host_id = engine_app_with_host(tmp_path, address)
    w = World(cfg, app, sm)
    ids = w.ids
    with sm() as s:
        hA = s.get(Host, host_id)
        hA.name = "hA"
        clA = s.get(Cluster, hA.cluster_id)
        clA.name = "A"
        dc = s.get(DataCenter, clA.data_center_id)
        clB = Cluster(name="B", data_center_id=dc.id)
        s.add(clB)
        s.flush()
        hB = Host(name="hB", address="127.0.8.28", libvirt_uri="qemu+tcp://127.0.8.28/system", cluster_id=clB.id,
                  status="up")
        sd = StorageDomain(name="sd1", path=str(tmp_path / "sd1"), status="active", data_center_id=dc.id)
        net = Network(name="net1", data_center_id=dc.id)
        s.add_all([hB, sd, net])
        s.flush()
        tA = Template(name="tA", cluster_id=clA.id)
        s.add(tA)
        s.flush()
        vms = {}
        for name, cl in (("a1", clA), ("a2", clA), ("b1", clB), ("pA-1", clA)):
            vms[name] = Vm(name=name, cluster_id=cl.id, template_id=BLANK_TEMPLATE_ID, memory=64 << 20)
            s.add(vms[name])
        s.flush()
        disks = {}
        for name, size in (("a1_Disk1", 1 << 20), ("tA_Disk1", 1 << 20), ("fd1", 1 << 20)):
            d = Disk(name=name, storage_domain_id=sd.id, provisioned_size=size, active_volume=f"{name}.v")
            s.add(d)
            s.flush()
            s.add(Volume(name=d.active_volume, disk_id=d.id))
            disks[name] = d
        s.add(DiskAttachment(id=disks["a1_Disk1"].id, disk_id=disks["a1_Disk1"].id, vm_id=vms["a1"].id))
        s.add(DiskAttachment(id=disks["tA_Disk1"].id, disk_id=disks["tA_Disk1"].id, template_id=tA.id))
        nic = Nic(vm_id=vms["a1"].id, name="nic1", mac="56:6f:00:00:00:01", network_id=net.id)
        snap = Snapshot(vm_id=vms["a1"].id, description="s1", volumes={}, memory=64 << 20, cpus=1)
        pool = VmPool(name="pA", cluster_id=clA.id, template_id=BLANK_TEMPLATE_ID, size=1, max_user_vms=1)
        agent = FenceAgent(host_id=hA.id, address="127.0.8.27", username="u", password_encrypted="x", options={})
        job = Job(description="a job of admin's", kind=None, status="finished", params={}, result={})
        s.add_all([nic, snap, pool, agent, job])
        s.flush()
        s.add(VmPoolMember(vm_id=vms["pA-1"].id, pool_id=pool.id, state="free"))
        s.add(Step(job_id=job.id, number=1, description="a step"))
        for v in vms.values():
            s.add(Event(code=9999, description=f"about {v.name}", vm_id=v.id))
        s.add(Event(code=9999, description="about nothing in particular"))
        d = Directory(name="example.org", profile="openldap", urls="ldap://127.0.8.26:1", tls="none",
                      base_dn="dc=example,dc=org", timeout=1.0)
        group = Group(name="staff", domain="example.org", external_id="6d0b0c5e-0000-4000-8000-000000000001")
        s.add_all([d, group])
        s.flush()
        custom = roles.add_role(w.engine, s, roles.RoleSpec(name="Starter", permits=("login", "run_vm")))
        s.flush()
        ids.update({"dc": dc.id, "cluster:A": clA.id, "cluster:B": clB.id, "host:A": hA.id, "host:B": hB.id,
                    "sd": sd.id, "net": net.id, "template:A": tA.id, "nic": nic.id, "snapshot": snap.id,
                    "pool:A": pool.id, "agent": agent.id, "job": job.id, "directory": d.id, "group": group.id,
                    "role:custom": custom.id, "disk:a1": disks["a1_Disk1"].id, "disk:tA": disks["tA_Disk1"].id,
                    "disk:floating": disks["fd1"].id,
                    "admin": s.query(User).filter_by(name="admin").one().id})
        ids.update({f"vm:{n}": v.id for n, v in vms.items()})
        ids["event:a1"] = s.query(Event).filter_by(vm_id=vms["a1"].id).one().id
        s.commit()
    return w
