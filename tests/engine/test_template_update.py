"""Template update (PUT /templates/{id}) through the SDK against a real
engine: the stored configuration, what a VM made afterwards gets, and the
refusals (oVirt fields Keel lacks, another cluster, the Blank template)."""
import ovirtsdk4
import ovirtsdk4.types as t
import pytest
import requests

from .test_vm_lifecycle import MiB, cleanup, new_vm

pytestmark = [pytest.mark.slow, pytest.mark.root]


def put(engine, token, path, body):
    return requests.put(f"{engine.url}{path}", data=body, timeout=60, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/xml", "Accept": "application/xml"})


def test_template_update_and_refusals(sdk, engine, token, cluster_setup):
    system = sdk.system_service()
    src = new_vm(sdk, cluster_setup, "tupsrc")
    templates = system.templates_service()
    vm2 = None
    try:
        # the configuration given at creation is the template's, not the VM's
        tpl = templates.add(t.Template(name="tup1", vm=t.Vm(id=src.get().id), memory=96 * MiB))
        svc = templates.template_service(tpl.id)
        assert svc.get().memory == 96 * MiB and svc.get().cpu.topology.sockets == 1

        out = svc.update(t.Template(name="tup2", description="web servers", memory=128 * MiB,
                                    cpu=t.Cpu(topology=t.CpuTopology(sockets=2, cores=1, threads=1)),
                                    os=t.OperatingSystem(type="rhel_9x64"), cluster=t.Cluster(name="Default"),
                                    vm=t.Vm(name="tupsrc")))
        assert (out.name, out.description, out.memory) == ("tup2", "web servers", 128 * MiB)
        got = svc.get()
        assert (got.name, got.description, got.memory, got.cpu.topology.sockets, got.os.type) == \
            ("tup2", "web servers", 128 * MiB, 2, "rhel_9x64")
        assert got.status == t.TemplateStatus.OK
        assert [x.description for x in system.events_service().list(max=20)
                if x.description.startswith("Template tup2 was updated")]

        # a VM made now gets the new configuration
        vm2 = system.vms_service().add(t.Vm(name="tupvm", cluster=t.Cluster(name="Default"),
                                            template=t.Template(name="tup2")))
        vm2 = system.vms_service().vm_service(vm2.id)
        assert vm2.get().memory == 128 * MiB and vm2.get().cpu.topology.sockets == 2

        # refused, naming the field
        r = put(engine, token, f"/templates/{tpl.id}", "<template><stateless>true</stateless></template>")
        assert r.status_code == 400 and "stateless: not supported yet" in r.text, r.text
        r = put(engine, token, f"/templates/{tpl.id}", "<template><colour>red</colour></template>")
        assert r.status_code == 400 and "colour: unknown field" in r.text, r.text
        r = put(engine, token, f"/templates/{tpl.id}", "<template><memory>1</memory></template>")
        assert r.status_code == 400 and "memory" in r.text, r.text
        system.clusters_service().add(t.Cluster(name="tupother", data_center=t.DataCenter(name="Default")))
        r = put(engine, token, f"/templates/{tpl.id}", "<template><cluster><name>tupother</name></cluster></template>")
        assert r.status_code == 400 and "cluster" in r.text, r.text
        r = put(engine, token, f"/templates/{tpl.id}", "<template><vm><name>tupvm</name></vm></template>")
        assert r.status_code == 400 and "vm:" in r.text, r.text
        with pytest.raises(ovirtsdk4.Error) as e:
            svc.update(t.Template(name="Blank"))
        assert e.value.code == 409 and "already exists" in str(e.value)
        with pytest.raises(ovirtsdk4.Error) as e:
            templates.template_service("00000000-0000-0000-0000-000000000000").update(
                t.Template(description="x"))
        assert e.value.code == 409 and "Blank" in str(e.value)
        assert svc.get().name == "tup2"   # nothing of the refused updates was kept
    finally:
        if vm2 is not None:
            cleanup(vm2)
        try:
            templates.template_service(tpl.id).remove()
        except (ovirtsdk4.Error, NameError):
            pass
        cl = system.clusters_service().list(search="name=tupother")
        if cl:
            system.clusters_service().cluster_service(cl[0].id).remove()
        cleanup(src)


def test_update_of_an_unknown_template_is_404(engine, token, cluster_setup):
    r = put(engine, token, "/templates/00000000-0000-0000-0000-00000000dead", "<template><description>x"
            "</description></template>")
    assert r.status_code == 404
