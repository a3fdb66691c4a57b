"""ISO images and the CD-ROM on real libvirt: ISO files put in the storage
domain's directory are listed through a host's pool, a down VM's CD is set
and the started domain has it, current=true changes (and ejects) the medium
of the running drive while the configuration stays (and a migration takes
it along), a configured ISO that is gone at start leaves the drive empty
instead of failing the start; and ovirt_vm's `cd_iso` and its clone from a
snapshot, run by Ansible unchanged (playbooks/cd_and_snapshot_clone.yml)."""
import json
import os
import subprocess
import xml.etree.ElementTree as ET

import ovirtsdk4
import ovirtsdk4.types as t
import pytest
import requests

from harness.wait import wait_for

from .cdstack import MiB, cd_engine, cleanup, live_xml

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture(scope="module")
def stack():
    with cd_engine() as found:
        yield found


def make_iso(directory, name, label):
    content = os.path.join(directory, f".{name}.d")
    os.makedirs(content, exist_ok=True)
    with open(os.path.join(content, "README"), "w") as f:
        f.write(f"{label}\n")
    subprocess.run(["genisoimage", "-quiet", "-V", label, "-o", os.path.join(directory, name), content],
                   check=True)
    return os.path.join(directory, name)


def drive(xml):
    """(bus, medium) of the domain's one CD-ROM drive."""
    cd, = ET.fromstring(xml).findall("devices/disk[@device='cdrom']")
    src = cd.find("source")
    return cd.find("target").get("bus"), (src.get("file") if src is not None else None)


def test_iso_images_and_the_cd_of_a_vm_down_and_running(stack):
    eng, sdk, setup = stack
    a, b = make_iso(eng.storage, "alpha.iso", "ALPHA"), make_iso(eng.storage, "beta.iso", "BETA")
    system = sdk.system_service()
    sd_service = system.storage_domains_service().storage_domain_service(setup["sd"].id)
    # listed as files, and as disks of content_type iso (where ovirt_vm's cd_iso looks on a data domain)
    assert sorted(f.id for f in sd_service.files_service().list()) == ["alpha.iso", "beta.iso"]
    isos = [d for d in system.storage_domains_service().storage_domain_service(setup["sd"].id)
            .disks_service().list() if d.content_type == t.DiskContentType.ISO]
    assert sorted(d.name for d in isos) == ["alpha.iso", "beta.iso"]

    vms = system.vms_service()
    vm = vms.add(t.Vm(name="cd1", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                      memory=64 * MiB))
    svc = vms.vm_service(vm.id)
    try:
        cdroms = svc.cdroms_service()
        cd = cdroms.list()[0]
        cd_service = cdroms.cdrom_service(cd.id)
        assert cd.file is None
        # an unknown file: a 404 naming it, nothing changed
        with pytest.raises(ovirtsdk4.Error) as e:
            cd_service.update(t.Cdrom(file=t.File(id="gamma.iso")))
        assert e.value.code == 404 and "ISO image 'gamma.iso' does not exist" in str(e.value)
        # current=true is for a running VM
        with pytest.raises(ovirtsdk4.Error) as e:
            cd_service.update(t.Cdrom(file=t.File(id="alpha.iso")), current=True)
        assert e.value.code == 409 and "current=true changes the CD of a running VM" in str(e.value)

        cd_service.update(t.Cdrom(file=t.File(id="alpha.iso")))
        assert cd_service.get().file.id == "alpha.iso"
        svc.start()
        assert svc.get().status == t.VmStatus.UP
        assert drive(live_xml(eng, setup, svc)) == ("ide", a)
        assert cd_service.get(current=True).file.id == "alpha.iso"

        # now, in the running drive only
        cd_service.update(t.Cdrom(file=t.File(id="beta.iso")), current=True)
        assert drive(live_xml(eng, setup, svc)) == ("ide", b)
        assert cd_service.get(current=True).file.id == "beta.iso"
        assert cd_service.get().file.id == "alpha.iso"           # the configuration stays
        # a live migration takes the running drive's medium along
        before = svc.get().host.id
        svc.migrate()
        wait_for(lambda: svc.get().status == t.VmStatus.UP and svc.get().host.id != before, 120, what="migrated")
        assert drive(live_xml(eng, setup, svc)) == ("ide", b)
        cd_service.update(t.Cdrom(file=t.File(id="")), current=True)
        assert drive(live_xml(eng, setup, svc)) == ("ide", None)
        assert cd_service.get(current=True).file is None

        # without current on a running VM: the next start's
        cd_service.update(t.Cdrom(file=t.File(id="beta.iso")))
        assert drive(live_xml(eng, setup, svc)) == ("ide", None)
        svc.stop()
        svc.start()
        assert drive(live_xml(eng, setup, svc)) == ("ide", b)
        svc.stop()

        # an ISO gone from the storage: the VM starts with an empty drive
        os.unlink(b)
        svc.start()
        assert drive(live_xml(eng, setup, svc)) == ("ide", None)
        svc.stop()
        said = [e.description for e in system.events_service().list(search="vm=cd1", max=100)]
        assert "CD beta.iso was inserted into running VM cd1 on host" in " ".join(said)
        assert any(x.startswith("The CD was ejected from running VM cd1") for x in said)
    finally:
        cleanup(svc)


def test_what_ovirt_vm_sends_for_cd_iso_on_a_running_vm(stack):
    """ovirt_vm (cd_iso, state running): the ISO by name among the data domain's
    disks of content_type iso, then GET and PUT of the CD-ROM with current=true."""
    eng, sdk, setup = stack
    make_iso(eng.storage, "tools.iso", "TOOLS")
    system = sdk.system_service()
    vms = system.vms_service()
    svc = vms.vm_service(vms.add(t.Vm(name="cd2", cluster=t.Cluster(name="Default"),
                                      template=t.Template(name="Blank"), memory=64 * MiB)).id)
    try:
        svc.start()
        sds = system.storage_domains_service().list(search='name="*"')
        found = []
        for sd in sds:
            found += [d for d in sdk.follow_link(sd.disks)
                      if d.name == "tools.iso" and d.content_type == t.DiskContentType.ISO]
        iso_id = found[0].id
        cd_service = svc.cdroms_service().cdrom_service(svc.cdroms_service().list()[0].id)
        assert getattr(cd_service.get(current=True).file, "id", "") != iso_id
        cd_service.update(cdrom=t.Cdrom(file=t.File(id=iso_id)), current=True)
        assert cd_service.get(current=True).file.id == "tools.iso"
        assert drive(live_xml(eng, setup, svc))[1] == os.path.join(eng.storage, "tools.iso")
        # a job for each read and change, visible while it runs and after
        descriptions = [j.description for j in system.jobs_service().list()]
        assert "Inserting tools.iso into running VM cd2" in descriptions
        assert "Reading the CD of running VM cd2" in descriptions
        # a raw PUT without the file element says what to send
        token = requests.post(eng.url.replace("/api", "/sso/oauth/token"), timeout=30, data={
            "grant_type": "password", "username": "admin@internal", "password": "keel-test-pw",
            "scope": "ovirt-app-api"}).json()["access_token"]
        r = requests.put(f"{eng.url}/vms/{svc.get().id}/cdroms/{cd_service.get().id}", data="<cdrom/>", timeout=60,
                         headers={"Authorization": f"Bearer {token}", "Content-Type": "application/xml"})
        assert r.status_code == 400 and "cdrom.file: required" in r.text, r.text
        wait_for(lambda: svc.get().status == t.VmStatus.UP, 30, what="cd2 still up")
    finally:
        cleanup(svc)


ANSIBLE_VENV = os.path.join(os.path.dirname(__file__), "..", "..", ".venv-ansible")
PLAYBOOK = os.path.join(os.path.dirname(__file__), "playbooks", "cd_and_snapshot_clone.yml")


def test_ovirt_vm_cd_iso_and_clone_from_a_snapshot_run_unchanged(stack, tmp_path):
    eng, sdk, setup = stack
    playbook = os.path.abspath(os.path.join(ANSIBLE_VENV, "bin", "ansible-playbook"))
    if not os.path.exists(playbook):
        pytest.fail("the Ansible venv is missing: run scripts/setup-ansible.sh (make setup does)")
    for name, label in (("alpha.iso", "ALPHA"), ("beta.iso", "BETA")):
        if not os.path.exists(os.path.join(eng.storage, name)):
            make_iso(eng.storage, name, label)
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCALHOST_WARNING": "False",
           "ANSIBLE_PYTHON_INTERPRETER": os.path.join(os.path.dirname(playbook), "python")}
    run = subprocess.run([playbook, PLAYBOOK, "-e", f"engine_url={eng.url}", "-e", "engine_password=keel-test-pw",
                          "-e", f"facts_dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0 and "failed=0" in run.stdout, run.stdout[-6000:] + run.stderr[-2000:]
    facts = json.loads((tmp_path / "facts.json").read_text())
    vms = sdk.system_service().vms_service()
    cd_vm = vms.vm_service(vms.list(search="name=pbcd")[0].id)
    clone = vms.vm_service(facts["clone"])
    try:
        cd_service = cd_vm.cdroms_service().cdrom_service(cd_vm.cdroms_service().list()[0].id)
        # set while it was down (its configuration), then alpha.iso in the running drive only
        assert cd_service.get().file.id == "beta.iso"
        assert cd_service.get(current=True).file.id == "alpha.iso"
        assert drive(live_xml(eng, setup, cd_vm)) == ("ide", os.path.join(eng.storage, "alpha.iso"))
        assert facts["cd_again"] is False and facts["cd_live"] is True
        got = clone.get()
        assert got.name == "pbclone" and got.status == t.VmStatus.DOWN
        att, = clone.disk_attachments_service().list()
        assert att.bootable is True
    finally:
        cleanup(cd_vm)
        cleanup(clone)
        cleanup(vms.vm_service(vms.list(search="name=pbsrc")[0].id))
