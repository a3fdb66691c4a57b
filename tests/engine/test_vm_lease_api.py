"""HA priority and VM leases through the API (oVirt's ``high_availability.priority``
and ``lease.storage_domain``), with the unmodified oVirt SDK and raw HTTP."""
import pytest

from .test_api_raw import call

pytestmark = [pytest.mark.slow, pytest.mark.root]


def test_priority_and_lease_round_trip_with_the_sdk(sdk, cluster_setup):
    import ovirtsdk4.types as t
    vms = sdk.system_service().vms_service()
    vm = vms.add(t.Vm(name="leased-ha", cluster=t.Cluster(name="Default"), template=t.Template(name="Blank"),
                      memory=64 * 2 ** 20,
                      high_availability=t.HighAvailability(enabled=True, priority=50),
                      lease=t.StorageDomainLease(storage_domain=t.StorageDomain(id=cluster_setup["sd"].id))))
    try:
        got = vms.vm_service(vm.id).get()
        assert got.high_availability.enabled is True and got.high_availability.priority == 50
        assert got.lease.storage_domain.id == cluster_setup["sd"].id
        vms.vm_service(vm.id).update(t.Vm(high_availability=t.HighAvailability(priority=100)))
        got = vms.vm_service(vm.id).get()
        assert got.high_availability.priority == 100 and got.lease.storage_domain.id == cluster_setup["sd"].id
    finally:
        vms.vm_service(vm.id).remove()


def test_bad_priority_and_lease_are_400_and_change_nothing(engine, token, cluster_setup):
    r = call(engine, token, "POST", "/vms", "<vm><name>badprio</name><cluster><name>Default</name></cluster>"
             "<high_availability><enabled>true</enabled><priority>101</priority></high_availability></vm>")
    assert r.status_code == 400 and "high_availability.priority: must be at most 100" in r.text
    r = call(engine, token, "POST", "/vms", "<vm><name>badlease</name><cluster><name>Default</name></cluster>"
             "<lease><storage_domain id='00000000-0000-0000-0000-000000000000'/></lease></vm>")
    assert r.status_code == 400 and "lease.storage_domain" in r.text
    names = [v["name"] for v in call(engine, token, "GET", "/vms", json_out=True).json().get("vm", [])]
    assert "badprio" not in names and "badlease" not in names


def test_leased_vm_keeps_its_storage_domain_and_cannot_start_without_vm_lease_support(
        engine, token, cluster_setup):
    sd_id = cluster_setup["sd"].id
    r = call(engine, token, "POST", "/vms", f'{{"name": "lease-nostart", "cluster": {{"name": "Default"}}, '
             f'"memory": 67108864, "lease": {{"storage_domain": {{"id": "{sd_id}"}}}}}}',
             json_out=True, ctype="application/json")
    assert r.status_code == 201, r.text
    vm_id = r.json()["id"]
    try:
        r = call(engine, token, "DELETE", f"/storagedomains/{sd_id}")
        assert r.status_code == 409 and "lease of VM lease-nostart" in r.text
        # this engine runs without vm_lease_lockspace: a VM that asks for a lease must
        # not run without one
        r = call(engine, token, "POST", f"/vms/{vm_id}/start", "<action/>")
        assert r.status_code == 409 and "VM leases are not enabled" in r.text, r.text
        vm = call(engine, token, "GET", f"/vms/{vm_id}", json_out=True).json()
        assert vm["status"] == "down" and "host" not in vm
        # an empty <lease/> removes it
        r = call(engine, token, "PUT", f"/vms/{vm_id}", "<vm><lease/></vm>")
        assert r.status_code == 200, r.text
        assert "lease" not in call(engine, token, "GET", f"/vms/{vm_id}", json_out=True).json()
    finally:
        call(engine, token, "DELETE", f"/vms/{vm_id}")
