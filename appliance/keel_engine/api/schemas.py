"""The request bodies the API accepts, declared with api.fields: each parses
a body and documents it in the OpenAPI document. Limits come from the
service layer, which checks them again for every other caller."""
from ..services import consoles
from ..services import disks as disk_svc
from ..services import vms as vm_svc
from ..services.inventory import SCHEDULING_POLICIES, STORAGE_TYPES
from .fields import Bool, Int, ListOf, Name, Obj, Reference, Text

ID_OR_NAME = Reference()
DESCRIPTION = Text(maxlen=4000)
TOPOLOGY = Obj(sockets=Int(1, 64), cores=Int(1, 64), threads=Int(1, 8))
HIGH_AVAILABILITY = Obj(enabled=Bool(), priority=Int(0, 100))
PLACEMENT = Obj(hosts=ListOf("host", ID_OR_NAME, max_items=16))

DATA_CENTER = Obj(name=Name(), description=DESCRIPTION, local=Bool())
CLUSTER = Obj(name=Name(), description=DESCRIPTION, data_center=ID_OR_NAME,
              scheduling_policy=Obj(name=Text(64, SCHEDULING_POLICIES)))
NETWORK = Obj(name=Name(), description=DESCRIPTION, data_center=ID_OR_NAME, vlan=Obj(id=Int(1, 4094)),
              mtu=Int(0, 65535))
STORAGE_DOMAIN = Obj(name=Name(), description=DESCRIPTION, type=Text(16, ("data",)),
                     storage=Obj(type=Text(16, STORAGE_TYPES), path=Text(1024), address=Text(255)),
                     data_center=ID_OR_NAME, host=ID_OR_NAME)
ATTACH_STORAGE_DOMAIN = Obj(id=Text(64), name=Name())
HOST = Obj(name=Name(), address=Text(255), cluster=ID_OR_NAME,
           # oVirt clients send these for host deployment; Keel reaches hosts through libvirt
           root_password=Text(1024), port=Int(1, 65535))
FENCE_AGENT = Obj(type=Text(32, ("ipmilan",)), address=Text(255), port=Int(1, 65535), username=Text(255),
                  password=Text(255), order=Int(1, 100), encrypt_options=Bool(),
                  options=ListOf("option", Obj(name=Text(64), value=Text(255)), max_items=16))
DISK = Obj(name=Name(), alias=Name(), description=DESCRIPTION, format=Text(8, ("cow", "raw")),
           provisioned_size=Int(disk_svc.MIN_DISK, disk_svc.MAX_DISK),
           storage_domains=ListOf("storage_domain", ID_OR_NAME, max_items=1), id=Text(64),
           # what every Keel disk is: sparse (thin qcow2) data disks; anything else is refused
           content_type=Text(16, ("data",)), sparse=Bool())
DISK_ATTACHMENT = Obj(interface=Text(16, vm_svc.DISK_INTERFACES), bootable=Bool(), active=Bool(), disk=DISK)
NIC = Obj(name=Name(), interface=Text(16, vm_svc.NIC_MODELS), mac=Obj(address=Text(32)),
          vnic_profile=ID_OR_NAME, network=ID_OR_NAME, plugged=Bool())
# cloud-init (services/cloud_init.py checks the values); ipv6 and the Windows (sysprep) fields are refused
INITIALIZATION = Obj(
    host_name=Text(255), user_name=Text(64), root_password=Text(1024), authorized_ssh_keys=Text(16384),
    custom_script=Text(65536), dns_servers=Text(1024), dns_search=Text(1024), timezone=Text(64),
    nic_configurations=ListOf("nic_configuration", Obj(
        name=Text(64), boot_protocol=Text(16, ("none", "dhcp", "static")), on_boot=Bool(),
        ip=Obj(address=Text(64), netmask=Text(64), gateway=Text(64), version=Text(4, ("v4",)))), max_items=16))
VM = Obj(name=Name(), description=DESCRIPTION, cluster=ID_OR_NAME, template=ID_OR_NAME,
         memory=Int(vm_svc.MIN_MEMORY, vm_svc.MAX_MEMORY), cpu=Obj(topology=TOPOLOGY),
         os=Obj(type=Text(64), kernel=Text(1024), initrd=Text(1024), cmdline=Text(4000)),
         high_availability=HIGH_AVAILABILITY,
         lease=Obj(storage_domain=ID_OR_NAME), placement_policy=PLACEMENT, initialization=INITIALIZATION,
         # POST: a new VM from this snapshot of another (services/vm_from_snapshot.py); PUT ignores it
         snapshots=ListOf("snapshot", Obj(id=Text(64)), max_items=1))
TEMPLATE = Obj(name=Name(), description=DESCRIPTION, vm=ID_OR_NAME, cluster=ID_OR_NAME,
               memory=Int(vm_svc.MIN_MEMORY, vm_svc.MAX_MEMORY), cpu=Obj(topology=TOPOLOGY), os=Obj(type=Text(64)))
SNAPSHOT = Obj(description=Text(1024), persist_memorystate=Bool())
EVENT = Obj(description=Text(4000), severity=Text(16, ("normal", "warning", "error", "alert")),
            origin=Text(255), custom_id=Int(0, 2 ** 31 - 1), vm=ID_OR_NAME, host=ID_OR_NAME, cluster=ID_OR_NAME)

# actions: <action>...</action>
ACTION = Obj(**{"async": Bool()})
START = Obj(**{"async": Bool()}, vm=Obj(placement_policy=PLACEMENT, initialization=INITIALIZATION),
            use_cloud_init=Bool())
MIGRATE = Obj(**{"async": Bool()}, host=ID_OR_NAME, force=Bool())
# memory snapshots are not taken, so there is no memory to restore (false only)
PREVIEW_SNAPSHOT = Obj(**{"async": Bool()}, snapshot=Obj(id=Text(64)), restore_memory=Bool())
CLONE = Obj(**{"async": Bool()}, vm=Obj(name=Name()))
FENCE = Obj(**{"async": Bool()}, fence_type=Text(16))
# a console ticket is of use only to whoever waits for it: no async; the
# password is always the engine's own (a ticket.value is refused)
TICKET = Obj(ticket=Obj(expiry=Int(1, consoles.MAX_EXPIRY)))
CONSOLE_FILE = Obj()
