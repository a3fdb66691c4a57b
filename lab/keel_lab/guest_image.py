"""The test guest: a Debian cloud kernel and a busybox initramfs that the
engine's VMs boot directly (os.kernel, os.initrd, os.cmdline).

The guest
- loads the modules a VM's devices need: virtio (PCI, net, blk, scsi,
  virtio-serial), the IDE/SCSI CD-ROM stack and ISO 9660 (PCI hot-plug is
  built into this kernel: acpiphp and pciehp; a NIC hot-plugged later is
  brought up, each once). This cloud kernel has no AHCI driver: no SATA;
- applies a cloud-init NoCloud seed (a CD or disk whose ISO 9660 label is
  `cidata`) with a small reader of its own (`/etc/keel/cloud-init`): host
  name, `write_files`, `runcmd`, a `#!` user-data script, network-config
  version 1 and 2 (static addresses; DHCP is left alone);
- gives eth0 `keel.ip=ADDR/PREFIX` (and `keel.gw=ADDR`) from the kernel
  command line when cloud-init configured no address on it;
- then starts Debian's qemu-guest-agent on the `org.qemu.guest_agent.0`
  virtio-serial port: once the agent answers, cloud-init has finished;
- powers off on the ACPI power button and on the agent's guest-shutdown.

Every step is one console line starting with `keel-guest:`. The default host
name is `keel-guest`; `/etc/os-release` says `ID=keel-test-guest`.

`build()` is idempotent and safe from parallel processes (a lock file in the
cache): the initramfs is cached under a name keyed by a hash of its inputs
(the guest's scripts, the kernel modules, the agent's version).
"""
from __future__ import annotations

import fcntl
import gzip
import hashlib
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass

from keel_lab import image

log = logging.getLogger("keel_lab.guest_image")

DEFAULT_CACHE = image.DEFAULT_CACHE
CMDLINE = "console=ttyS0 panic=-1 quiet"
DEFAULT_HOSTNAME = "keel-guest"
AGENT_PACKAGE = "qemu-guest-agent"
AGENT_CHANNEL = "org.qemu.guest_agent.0"
LIB_DIR = "lib/x86_64-linux-gnu"      # where the agent's libraries go in the guest
# Bump when the way the image is put together changes (not its scripts,
# which are hashed themselves).
FORMAT = "3"

# The modules the guest loads (their dependencies are found in each module's
# .modinfo and loaded first). Names this kernel lacks are skipped: its cloud
# flavour has no AHCI (SATA) driver at all, for one.
MODULES = (
    "virtio_pci", "virtio_net", "virtio_blk", "virtio_scsi", "virtio_console",
    "ata_piix", "ata_generic", "ahci", "sd_mod", "sr_mod", "isofs", "nls_utf8",
    "evdev", "button",
)
# Scan SCSI buses while the module loads, so a CD-ROM present at boot has its
# /dev node before the seed is looked for.
MODULE_PARAMS = {"scsi_mod": "scan=sync"}

OS_RELEASE = """\
ID=keel-test-guest
NAME="Keel test guest"
VERSION_ID=1
VERSION="1"
PRETTY_NAME="Keel test guest 1"
"""

INIT = """\
#!/bin/busybox sh
# PID 1 first: install busybox's applets, then become busybox init
# (/etc/inittab), which reaps orphans, respawns the agent and powers off.
/bin/busybox --install -s /bin
exec /bin/busybox init
"""

INITTAB = """\
::sysinit:/etc/keel/rc
::respawn:/etc/keel/agent
::respawn:/etc/keel/netwatch
::ctrlaltdel:/bin/reboot
::shutdown:/etc/keel/stop
"""

# Shell helpers every guest script sources.
FUNCTIONS = """\
# say TEXT: one line on the console
say() { echo "keel-guest: $*" > /dev/console; }
"""

RC = """\
#!/bin/sh
# The guest's boot: mounts, modules, default host name, cloud-init, keel.ip.
export PATH=/sbin:/bin
. /etc/keel/functions
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /run /tmp /var/log /var/lib
[ -e /var/run ] || ln -s /run /var/run
chmod 1777 /tmp
# Modules in dependency order (/lib/modules/load: NAME [PARAMETERS])
while read -r m params; do
    insmod /lib/modules/$m.ko $params 2>/dev/null
done < /lib/modules/load
hostname -F /etc/hostname
ip link set lo up
for n in /sys/class/net/eth*; do [ -e "$n" ] && ip link set "${n##*/}" up; done
say "booted, kernel $(uname -r)"
/etc/keel/cloud-init
# keel.ip=ADDR/PREFIX [keel.gw=ADDR] on the kernel command line: eth0's
# address unless cloud-init gave it one
kip= kgw=
for w in $(cat /proc/cmdline); do
    case $w in keel.ip=*) kip=${w#keel.ip=};; keel.gw=*) kgw=${w#keel.gw=};; esac
done
if [ -n "$kip" ] && ! ip -4 addr show dev eth0 2>/dev/null | grep -q inet; then
    ip link set eth0 up && ip addr add "$kip" dev eth0 && say "eth0 $kip (keel.ip)"
    [ -n "$kgw" ] && ip route replace default via "$kgw" dev eth0 && say "default route via $kgw (keel.gw)"
fi
# The ACPI power button (libvirt's graceful shutdown) powers off:
# /etc/acpi/PWRF/00000080.
acpid -c /etc/acpi -l /var/log/acpid.log
"""

AGENT = """\
#!/bin/sh
# Started (and restarted) by init once the boot is done: Debian's qemu-ga on
# the virtio-serial port named org.qemu.guest_agent.0.
export PATH=/sbin:/bin
. /etc/keel/functions
if [ -e /run/keel-agent.started ]; then     # a restart: say why, do not spin
    say "guest agent exited: $(tail -n 2 /var/log/qemu-ga.log 2>/dev/null | tr '\\n' ' ')"
    sleep 5
fi
touch /run/keel-agent.started
port=
i=0
while [ $i -lt 50 ]; do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = "{channel}" ] || continue
        port=/dev/${{p##*/}}
        # devtmpfs makes the node; make it if it has not (yet)
        [ -c "$port" ] || mknod "$port" c $(sed 's/:/ /' "$p/dev")
        break 2
    done
    # ports appear as the driver probes; without a virtio-serial device, do not wait
    [ -d /sys/bus/virtio/drivers/virtio_console ] && ls /sys/bus/virtio/drivers/virtio_console | grep -q virtio || break
    i=$((i + 1))
    sleep 0.1
done
if [ -z "$port" ]; then
    say "no guest agent channel"
    exec sleep 2147483647
fi
say "guest agent on $port"
mkdir -p /run/qemu-ga
export LD_LIBRARY_PATH=/{lib_dir}
exec /usr/sbin/qemu-ga -m virtio-serial -p "$port" -t /run/qemu-ga -f /run/qemu-ga.pid \\
    -l /var/log/qemu-ga.log 2>>/var/log/qemu-ga.log
"""

# No udev here: a NIC hot-plugged into the running guest is brought up by this
# loop (each one once: a NIC set down on purpose stays down).
NETWATCH = """\
#!/bin/sh
export PATH=/sbin:/bin
. /etc/keel/functions
seen=" "
for n in /sys/class/net/*; do read -r i < "$n/ifindex"; seen="$seen$i "; done
while :; do
    for n in /sys/class/net/eth*; do
        read -r i 2>/dev/null < "$n/ifindex" || continue
        case $seen in *" $i "*) continue;; esac
        seen="$seen$i "
        ip link set "${n##*/}" up && say "${n##*/} up (hot-plugged, $(cat "$n/address"))"
    done
    sleep 2
done
"""

# qemu-ga's guest-shutdown runs "/sbin/shutdown -h -P +0 MESSAGE" (-r to
# reboot, -H to halt) and wants it to exit 0 before the guest goes down.
SHUTDOWN = """\
#!/bin/sh
export PATH=/sbin:/bin
action=poweroff
for a in "$@"; do
    case $a in -r) action=reboot;; -H) action=halt;; esac
done
. /etc/keel/functions
say "shutdown requested: $action"
(sleep 0.2; $action) </dev/null >/dev/null 2>&1 &
exit 0
"""

POWER_BUTTON = """\
#!/bin/sh
export PATH=/sbin:/bin
. /etc/keel/functions
say "power button, powering off"
poweroff
"""

# run by init before it ends every process and powers off (or reboots)
STOP = """\
#!/bin/sh
export PATH=/sbin:/bin
. /etc/keel/functions
say "going down"
sync
umount /run/cloud-init/seed 2>/dev/null
true
"""

# The YAML subset of cloud-init seeds, flattened to "PATH<TAB>VALUE" lines.
YAML_FLAT = r"""
# yaml-flat: reads the YAML subset cloud-init seeds use and prints one line
# per value:   PATH<TAB>VALUE
# PATH joins mapping keys and sequence indexes with dots:
#   hostname                  ci-1
#   runcmd.0                  echo hi > /run/x
#   write_files.1.path        /etc/motd
#   config.0.subnets.0.address  198.51.100.7/24
#   ethernets.eth0.addresses.0  198.51.100.7/24
# Each line of a block scalar (key: | or key: >) is a line "PATH+<TAB>LINE".
# Understood: block mappings and sequences nested by indentation (a sequence
# may sit at its key's own indentation), "- key: value" items, plain, 'single'
# and "double" quoted scalars, one-line flow collections of scalars
# ([a, "b c"], {a: 1, "b": "x"}; so one-line JSON too), comments, "---".
# Not understood: anchors, aliases, tags, nested flow collections, scalars
# over several lines; a key with no value prints "PATH<TAB>".

function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t]+$/, "", s); return s }

function unquote(v,   out, i, c) {
    v = trim(v)
    if (v ~ /^'/) {
        sub(/^'/, "", v); sub(/'[^']*$/, "", v); gsub(/''/, "'", v)
        return v
    }
    if (v ~ /^"/) {
        out = ""
        for (i = 2; i <= length(v); i++) {
            c = substr(v, i, 1)
            if (c == "\"") break
            if (c == "\\") {
                i++; c = substr(v, i, 1)
                if (c == "t") c = "\t"
            }
            out = out c
        }
        return out
    }
    sub(/(^|[ \t]+)#.*$/, "", v)       # a comment after a plain scalar
    return trim(v)
}

# split_flow("[a, 'b, c']", items) -> 2: items[1] = "a", items[2] = "'b, c'"
# (the inside of a flow collection, split at the commas outside quotes)
function split_flow(v, items,   i, c, q, item, n) {
    v = trim(v); v = substr(v, 2); sub(/[]}][ \t]*(#.*)?$/, "", v)
    n = 0; item = ""; q = ""
    for (i = 1; i <= length(v); i++) {
        c = substr(v, i, 1)
        if (q != "") {
            if (c == "\\" && q == "\"") { item = item c; i++; c = substr(v, i, 1) }
            else if (c == q) q = ""
        } else if (c == "\"" || c == "'") q = c
        else if (c == ",") { items[++n] = trim(item); item = ""; continue }
        item = item c
    }
    if (trim(item) != "") items[++n] = trim(item)
    return n
}

# [a, "b c"] -> PATH.0 a, PATH.1 b c
function flow(path, v,   items, n, i) {
    n = split_flow(v, items)
    for (i = 1; i <= n; i++) print path "." (i - 1) "\t" unquote(items[i])
}

# {a: 1, "b": "x"} -> PATH.a 1, PATH.b x (one line, nothing nested)
function flowmap(path, v,   items, n, i) {
    n = split_flow(v, items)
    for (i = 1; i <= n; i++) if (iskey(items[i])) keyval(1000000, items[i], path)
}

# Is BODY "key: value" or "key:"?
function iskey(body) {
    if (body ~ /^"[^"]*"[ \t]*:/ || body ~ /^'[^']*'[ \t]*:/) return 1
    if (body ~ /^[\[{"'#|>&*!%@`-]/) return 0
    return body ~ /^[^ \t][^:]*:([ \t]|$)/
}

# A "key: value" line at indentation IND of the mapping whose path is BASE.
function keyval(ind, body, base,   k, v, i, c, path) {
    if (body ~ /^["']/) {
        i = index(substr(body, 2), substr(body, 1, 1)) + 1
        k = substr(body, 2, i - 2); v = substr(body, i + 1); sub(/^[ \t]*:/, "", v)
    } else {
        i = index(body, ":")
        while (i > 0 && i < length(body) && substr(body, i + 1, 1) !~ /[ \t]/) {
            c = index(substr(body, i + 1), ":")
            i = c ? i + c : 0
        }
        k = trim(substr(body, 1, i - 1)); v = substr(body, i + 1)
    }
    path = (base == "" ? "" : base ".") k
    value(ind, path, v)
}

# The value V of PATH, written on a line at indentation IND.
function value(ind, path, v) {
    v = trim(v)
    if (v == "" || v ~ /^#/) { pend = path; pind = ind }        # a block follows
    else if (v ~ /^[|>][-+0-9]*([ \t]+#.*)?$/) { blk = path; bkind = ind; bind = -1 }
    else if (v ~ /^\[/) flow(path, v)
    else if (v ~ /^[{].*[}][ \t]*(#.*)?$/) flowmap(path, v)
    else print path "\t" unquote(v)
}

BEGIN { n = 0; pend = ""; blk = "" }

{
    sub(/\r$/, "")
    line = $0
    match(line, /^ */); ind = RLENGTH
    body = substr(line, ind + 1)
    if (blk != "") {                                  # inside a block scalar
        if (trim(body) == "" || ind > bkind) {
            if (bind < 0 && trim(body) != "") bind = ind
            print blk "+\t" (bind < 0 ? "" : substr(line, bind + 1))
            next
        }
        blk = ""
    }
    if (trim(body) == "" || body ~ /^#/ || line ~ /^(---|\.\.\.)/) next
    isitem = body ~ /^-([ \t]|$)/
    if (n == 0) { n = 1; li[1] = ind; lp[1] = ""; ls[1] = isitem; lc[1] = -1 }
    # a "key:" with no value opened a block: is this line in it?
    if (pend != "") {
        if ((isitem && ind >= pind) || (!isitem && ind > pind)) {
            n++; li[n] = ind; lp[n] = pend; ls[n] = isitem; lc[n] = -1
        } else print pend "\t"
        pend = ""
    }
    # leave the blocks this line is outside of
    while (n > 1 && (li[n] > ind || (li[n] == ind && ls[n] != isitem))) n--
    if (!isitem) {
        if (iskey(body)) keyval(ind, body, lp[n])
        else if (n == 1 && body ~ /^[{].*[}][ \t]*$/) flowmap("", body)    # a one-line JSON document
        next
    }
    # a sequence item: "- scalar", "- [flow]", "- key: value", "-"
    lc[n]++
    path = (lp[n] == "" ? "" : lp[n] ".") lc[n]
    rest = substr(body, 2); match(rest, /^[ \t]*/); iind = ind + 1 + RLENGTH
    rest = trim(rest)
    if (iskey(rest)) {
        n++; li[n] = iind; lp[n] = path; ls[n] = 0; lc[n] = -1
        keyval(iind, rest, path)
    } else value(ind, path, rest)
}

END { if (pend != "") print pend "\t" }
"""

CLOUD_INIT = r"""#!/bin/sh
# A cloud-init NoCloud reader for the test guest (a subset of cloud-init).
#
# The seed: a block device holding an ISO 9660 file system labelled "cidata"
# (any case), e.g. `genisoimage -volid cidata -joliet -rock`. It is mounted
# read-only on /run/cloud-init/seed and these files are applied, in order:
#   meta-data       instance-id (recorded), local-hostname
#   user-data       "#cloud-config": hostname, fqdn, timezone (recorded),
#                   write_files (path, content, encoding b64, permissions,
#                   append), runcmd (each item run with sh, in order; an item
#                   that is a list is quoted word by word); users, chpasswd,
#                   ssh_authorized_keys and other keys are ignored.
#                   "#!...": a script, run once.
#   network-config  version 1 (config: physical, subnets static/static6 with
#                   address A/P or address + netmask, gateway,
#                   dns_nameservers; dhcp is left alone; type nameserver) and
#                   version 2 (ethernets: NAME: addresses, gateway4,
#                   routes to default, nameservers, match macaddress)
# The host name is fqdn, else hostname, else local-hostname. Output of
# runcmd and scripts goes to /var/log/cloud-init-output.log.
# The YAML is read by /etc/keel/yaml-flat (see there for the subset).
export PATH=/sbin:/bin
. /etc/keel/functions
RUN=/run/cloud-init
SEED=$RUN/seed
OUT=/var/log/cloud-init-output.log
mkdir -p $RUN

# flat FILE: FILE's YAML as PATH<TAB>VALUE lines
flat() { awk -f /etc/keel/yaml-flat "$1"; }
# yget FLAT PATH: the scalar at PATH; fails if there is none
yget() {
    awk -F '\t' -v p="$2" '$1 == p { v = substr($0, length(p) + 2); f = 1 }
        END { if (f) print v; else exit 1 }' "$1"
}
# yhas FLAT PATH: is there anything at PATH or under it?
yhas() {
    awk -F '\t' -v p="$2" '$1 == p || $1 == p "+" || index($1, p ".") == 1 { f = 1 }
        END { exit !f }' "$1"
}
# yblock FLAT PATH: the lines of a block scalar at PATH
yblock() {
    awk -F '\t' -v p="$2+" '$1 == p { print substr($0, length(p) + 2); f = 1 }
        END { exit !f }' "$1"
}
# ykeys FLAT PATH: the keys of the mapping at PATH, one a line
ykeys() {
    awk -F '\t' -v p="$2." 'index($1, p) == 1 { k = substr($1, length(p) + 1); sub(/[.+].*/, "", k)
        if (!(k in seen)) { seen[k] = 1; print k } }' "$1"
}
# yargs FLAT PATH: the sequence at PATH as shell words, each quoted
yargs() {
    awk -F '\t' -v p="$2." 'index($1, p) == 1 && substr($1, length(p) + 1) ~ /^[0-9]+$/ {
        w = substr($0, index($0, "\t") + 1); gsub(/'\''/, "'\''\\'\'''\''", w)
        printf "%s'\''%s'\''", (n++ ? " " : ""), w } END { print "" }' "$1"
}

# find_seed: the device of the cidata seed, if there is one
find_seed() {
    for b in /sys/block/*; do
        d=/dev/${b##*/}
        case ${b##*/} in loop*|ram*|zram*) continue;; esac
        [ -b "$d" ] || continue
        [ "$(dd if="$d" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || continue
        label=$(dd if="$d" bs=1 skip=32808 count=32 2>/dev/null | tr -d ' \0' | tr A-Z a-z)
        [ "$label" = cidata ] && { echo "$d"; return 0; }
    done
    return 1
}

# iface NAME MAC: the interface with that MAC, else NAME
iface() {
    if [ -n "$2" ]; then
        want=$(echo "$2" | tr A-F a-f)
        for n in /sys/class/net/*; do
            [ "$(cat "$n/address" 2>/dev/null)" = "$want" ] && { echo "${n##*/}"; return; }
        done
    fi
    echo "$1"
}

# address IFACE ADDR NETMASK GATEWAY: a static address (and default route)
address() {
    a=$2
    case $a in
        */*) ;;
        *:*) a=$a/64 ;;
        *) if [ -n "$3" ]; then eval "$(ipcalc -p "$a" "$3")"; a=$a/$PREFIX; else a=$a/24; fi ;;
    esac
    ip link set "$1" up
    if ip addr add "$a" dev "$1"; then say "cloud-init: $1 $a"; else say "cloud-init: $1 $a failed"; fi
    if [ -n "$4" ]; then
        if ip route replace default via "$4" dev "$1"; then say "cloud-init: default route via $4"
        else say "cloud-init: default route via $4 failed"; fi
    fi
}

# nameservers FLAT PATH: add the sequence at PATH to /etc/resolv.conf
nameservers() {
    j=0
    while ns=$(yget "$1" "$2.$j"); do
        echo "nameserver $ns" >> /etc/resolv.conf
        say "cloud-init: nameserver $ns"
        j=$((j + 1))
    done
}

network_v1() {
    f=$1 i=0
    while yhas "$f" "config.$i"; do
        c=config.$i
        case $(yget "$f" $c.type) in
        physical)
            ifc=$(iface "$(yget "$f" $c.name)" "$(yget "$f" $c.mac_address)")
            j=0
            while yhas "$f" "$c.subnets.$j"; do
                s=$c.subnets.$j
                case $(yget "$f" $s.type) in
                static|static6)
                    address "$ifc" "$(yget "$f" $s.address)" "$(yget "$f" $s.netmask)" \
                        "$(yget "$f" $s.gateway)"
                    nameservers "$f" $s.dns_nameservers ;;
                *) say "cloud-init: $ifc $(yget "$f" $s.type) left alone" ;;
                esac
                j=$((j + 1))
            done ;;
        nameserver) nameservers "$f" $c.address ;;
        esac
        i=$((i + 1))
    done
}

network_v2() {
    f=$1
    for name in $(ykeys "$f" ethernets); do
        e=ethernets.$name
        ifc=$(iface "$(yget "$f" $e.set-name || echo "$name")" "$(yget "$f" $e.match.macaddress)")
        gw=$(yget "$f" $e.gateway4)
        j=0
        while yhas "$f" "$e.routes.$j"; do
            case $(yget "$f" $e.routes.$j.to) in
                default|0.0.0.0/0) gw=$(yget "$f" $e.routes.$j.via) ;;
            esac
            j=$((j + 1))
        done
        j=0
        while a=$(yget "$f" $e.addresses.$j); do
            address "$ifc" "$a" "" "$gw"
            gw=
            j=$((j + 1))
        done
        [ "$(yget "$f" $e.dhcp4)" = true ] && say "cloud-init: $ifc dhcp left alone"
        nameservers "$f" $e.nameservers.addresses
    done
}

write_files() {
    f=$1 i=0
    while yhas "$f" "write_files.$i"; do
        w=write_files.$i
        p=$(yget "$f" $w.path)
        if [ -n "$p" ]; then
            mkdir -p "$(dirname "$p")"
            t=$RUN/write.tmp
            yblock "$f" $w.content > $t || printf '%s' "$(yget "$f" $w.content)" > $t
            case $(yget "$f" $w.encoding) in
                b64|base64) base64 -d $t > $t.d && mv $t.d $t ;;
            esac
            if [ "$(yget "$f" $w.append)" = true ]; then cat $t >> "$p"; rm -f $t
            else mv $t "$p"; fi
            chmod "$(yget "$f" $w.permissions || echo 0644)" "$p"
            say "cloud-init: wrote $p"
        fi
        i=$((i + 1))
    done
}

runcmd() {
    f=$1 i=0
    while yhas "$f" "runcmd.$i"; do
        cmd=$(yget "$f" runcmd.$i) || cmd=$(yblock "$f" runcmd.$i) || cmd=$(yargs "$f" runcmd.$i)
        sh -c "$cmd" </dev/null >>$OUT 2>&1
        rc=$?
        if [ $rc = 0 ]; then say "cloud-init: runcmd $((i + 1)) ran"
        else say "cloud-init: runcmd $((i + 1)) failed (exit $rc)"; fi
        i=$((i + 1))
    done
}

dev=$(find_seed)
if [ -z "$dev" ]; then
    say "no cloud-init seed"
    exit 0
fi
mkdir -p $SEED
if ! mount -t iso9660 -o ro "$dev" $SEED; then
    say "cloud-init: cannot mount $dev"
    exit 0
fi
say "cloud-init: seed $dev"
md=$RUN/meta-data.flat ud=$RUN/user-data.flat nc=$RUN/network-config.flat
: > $md; : > $ud; : > $nc
[ -f $SEED/meta-data ] && flat $SEED/meta-data > $md
if id=$(yget $md instance-id); then
    echo "$id" > $RUN/instance-id
    say "cloud-init: instance-id $id"
fi

# user-data: #cloud-config, a #! script, or something else (ignored)
script=
if [ -f $SEED/user-data ]; then
    case $(head -n 1 $SEED/user-data) in
        "#cloud-config"*) flat $SEED/user-data > $ud ;;
        "#!"*) script=$RUN/user-data.script; cp $SEED/user-data $script; chmod 700 $script ;;
        *) [ -s $SEED/user-data ] && say "cloud-init: user-data of an unknown kind ignored" ;;
    esac
fi

name=$(yget $ud fqdn || yget $ud hostname || yget $md local-hostname)
if [ -n "$name" ]; then
    hostname "$name"
    echo "$name" > /etc/hostname
    echo "127.0.1.1 $name ${name%%.*}" >> /etc/hosts
    say "cloud-init: host name $name"
fi
if tz=$(yget $ud timezone); then
    echo "$tz" > /etc/timezone
    say "cloud-init: timezone $tz (recorded)"
fi

if [ -f $SEED/network-config ]; then
    # the whole document may sit under a "network:" key
    flat $SEED/network-config | sed 's/^network\.//' > $nc
    case $(yget $nc version) in
        1) network_v1 $nc ;;
        2) network_v2 $nc ;;
        *) say "cloud-init: network-config version $(yget $nc version) not understood" ;;
    esac
fi

write_files $ud
runcmd $ud
if [ -n "$script" ]; then
    if $script </dev/null >>$OUT 2>&1 || { [ $? = 127 ] && sh $script </dev/null >>$OUT 2>&1; }; then
        say "cloud-init: user-data script ran"
    else
        say "cloud-init: user-data script failed"
    fi
fi
say "cloud-init done"
"""


@dataclass(frozen=True)
class GuestImage:
    kernel: str     # absolute path, world-readable
    initrd: str     # absolute path, world-readable
    cmdline: str    # kernel parameters; append keel.ip=ADDR/PREFIX keel.gw=ADDR for a static eth0


# guest path -> (text, mode)
def _guest_files() -> dict[str, tuple[str, int]]:
    return {
        "init": (INIT, 0o755),
        "etc/inittab": (INITTAB, 0o644),
        "etc/keel/functions": (FUNCTIONS, 0o644),
        "etc/keel/rc": (RC, 0o755),
        "etc/keel/agent": (AGENT.format(channel=AGENT_CHANNEL, lib_dir=LIB_DIR), 0o755),
        "etc/keel/stop": (STOP, 0o755),
        "etc/keel/netwatch": (NETWATCH, 0o755),
        "etc/keel/cloud-init": (CLOUD_INIT, 0o755),
        "etc/keel/yaml-flat": (YAML_FLAT, 0o644),
        "etc/acpi/PWRF/00000080": (POWER_BUTTON, 0o755),
        "sbin/shutdown": (SHUTDOWN, 0o755),
        "etc/os-release": (OS_RELEASE, 0o644),
        "etc/hostname": (DEFAULT_HOSTNAME + "\n", 0o644),
        "etc/hosts": ("127.0.0.1 localhost\n", 0o644),
        "etc/passwd": ("root:x:0:0:root:/root:/bin/sh\n", 0o644),
        "etc/group": ("root:x:0:\n", 0o644),
    }


@contextmanager
def _locked(path: str):
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError:         # another user's cache: a read-only lock is a lock too
        fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _kernel(cache: str) -> tuple[str, str]:
    # image.build_image may unpack the same kernel at the same moment, without
    # our lock: its rename then fails here, and the other one's result is used.
    for attempt in range(3):
        try:
            return image.fetch_kernel(cache)
        except OSError:
            if attempt == 2:
                raise
            time.sleep(2)
    raise AssertionError("unreachable")


# ---- kernel modules ------------------------------------------------------

def _module_files(modules_dir: str) -> dict[str, str]:
    found = {}
    for dp, _dirs, fns in os.walk(modules_dir):
        for fn in fns:
            if fn.endswith(".ko"):
                found[fn[:-3].replace("-", "_")] = os.path.join(dp, fn)
    return found


def _depends(path: str) -> list[str]:
    """A module's dependencies, read from its .modinfo section (no modinfo
    tool needed: the section is NUL-separated key=value strings)."""
    with open(path, "rb") as f:
        data = f.read()
    m = re.search(rb"\0depends=([^\0]*)\0", data)
    if not m or not m.group(1):
        return []
    return [d.decode().replace("-", "_") for d in m.group(1).split(b",") if d]


def module_order(modules_dir: str, wanted=MODULES) -> list[tuple[str, str]]:
    """[(name, path)] of the wanted modules this kernel has as modules, each
    after its dependencies."""
    files = _module_files(modules_dir)
    order: list[str] = []

    def visit(name: str, chain: tuple = ()) -> None:
        if name in order or name in chain:
            return
        if name not in files:
            raise RuntimeError(f"kernel module {name} needed but not found under {modules_dir}")
        for dep in _depends(files[name]):
            visit(dep, chain + (name,))
        order.append(name)

    for name in wanted:
        if name in files:
            visit(name)
        else:
            log.debug("module %s: not a module of this kernel, skipped", name)
    return [(n, files[n]) for n in order]


# ---- qemu-guest-agent ----------------------------------------------------

def _apt_download(package: str, cache: str, dest: str) -> str:
    """Download `package` (not installing it) and unpack it into `dest`;
    return its version."""
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        # apt's sandbox user cannot write here; the download is still verified.
        r = subprocess.run(["apt-get", "download", "-o", "APT::Sandbox::User=root", package],
                           cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"apt-get download {package} failed (apt-get update first?): "
                               f"{r.stderr.strip()}")
        deb = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".deb"))
        version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        staging = os.path.join(tmp, "x")
        subprocess.run(["dpkg-deb", "-x", deb, staging], check=True)
        with open(os.path.join(staging, ".version"), "w") as f:
            f.write(version + "\n")
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        os.rename(staging, dest)
    return version


def _fetch_agent(cache: str) -> tuple[str, str]:
    """Debian's qemu-guest-agent unpacked in the cache: (root, version)."""
    root = os.path.join(cache, AGENT_PACKAGE)
    if not os.path.exists(os.path.join(root, "usr/sbin/qemu-ga")):
        log.info("downloading %s into %s", AGENT_PACKAGE, cache)
        _apt_download(AGENT_PACKAGE, cache, root)
    with open(os.path.join(root, ".version")) as f:
        return root, f.read().strip()


def _installed(package: str) -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return r.returncode == 0 and "install ok installed" in r.stdout


def _package_depends(package: str) -> list[str]:
    out = subprocess.run(["apt-cache", "depends", package], capture_output=True, text=True,
                         check=True).stdout
    return [ln.split()[1] for ln in out.splitlines()
            if ln.strip().startswith(("Depends:", "PreDepends:")) and "<" not in ln]


def _ldd(binary: str, lib_path: list[str]) -> tuple[dict[str, str], list[str]]:
    """ldd's answer: ({soname or loader path: file}, [sonames not found])."""
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(lib_path)) if lib_path else None
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True, env=env).stdout
    libs, missing = {}, []
    for line in out.splitlines():
        line = line.strip()
        if "=> not found" in line:
            missing.append(line.split()[0])
        elif "=>" in line:
            name, rest = line.split("=>", 1)
            target = rest.split("(")[0].strip()
            if target:
                libs[name.strip()] = target
        elif line.startswith("/"):
            libs[line.split()[0]] = line.split()[0]      # the dynamic loader
    return libs, missing


def _agent_libraries(cache: str, binary: str) -> dict[str, str]:
    """Every shared library qemu-ga needs, {soname or loader path: file},
    following ldd; libraries this machine lacks come from their Debian
    packages, downloaded and unpacked into the cache (never installed)."""
    lib_path: list[str] = []
    tried: set[str] = set()
    pending = [AGENT_PACKAGE]
    while True:
        libs, missing = _ldd(binary, lib_path)
        if not missing:
            return libs
        # unpack the (transitive) dependencies this machine has not installed
        progress = False
        while pending:
            for dep in _package_depends(pending.pop()):
                if dep in tried:
                    continue
                tried.add(dep)
                pending.append(dep)
                if _installed(dep):
                    continue
                dest = os.path.join(cache, "debs", dep)
                if not os.path.isdir(dest):
                    log.info("downloading %s (a library qemu-ga needs) into %s", dep, cache)
                    _apt_download(dep, cache, dest)
                for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"):
                    if os.path.isdir(os.path.join(dest, d)):
                        lib_path.append(os.path.join(dest, d))
                progress = True
        if not progress:
            raise RuntimeError(f"qemu-ga needs {', '.join(missing)}, found in no dependency package")


# ---- the initramfs -------------------------------------------------------

def _input_key(files: dict[str, tuple[str, int]], modules: list[tuple[str, str]],
               kernel_version: str, agent_version: str) -> str:
    h = hashlib.sha256()
    h.update(f"format {FORMAT}\nkernel {kernel_version}\nagent {agent_version}\n".encode())
    for name, _path in modules:
        h.update(f"module {name} {MODULE_PARAMS.get(name, '')}\n".encode())
    for path in sorted(files):
        text, mode = files[path]
        h.update(f"file {path} {mode:o} {len(text)}\n".encode() + text.encode())
    return h.hexdigest()[:16]


def _write_initramfs(path: str, files: dict[str, tuple[str, int]],
                     modules: list[tuple[str, str]], agent_root: str,
                     libs: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        for d in ("bin", "sbin", "dev", "proc", "sys", "run", "tmp", "root",
                  "var/log", "lib/modules", "usr/sbin", LIB_DIR, "lib64"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        shutil.copy("/bin/busybox", os.path.join(root, "bin/busybox"))
        for rel, (text, mode) in files.items():
            full = os.path.join(root, rel)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "w") as f:
                f.write(text)
            os.chmod(full, mode)
        with open(os.path.join(root, "lib/modules/load"), "w") as f:
            for name, _ in modules:
                f.write(f"{name} {MODULE_PARAMS.get(name, '')}".rstrip() + "\n")
        for name, src in modules:
            shutil.copy(src, os.path.join(root, "lib/modules", name + ".ko"))
        shutil.copy(os.path.join(agent_root, "usr/sbin/qemu-ga"), os.path.join(root, "usr/sbin/qemu-ga"))
        for name, src in libs.items():
            # the loader at the path programs name; libraries where LD_LIBRARY_PATH looks
            dest = name if name.startswith("/") else os.path.join("/", LIB_DIR, name)
            shutil.copy(src, os.path.join(root, dest.lstrip("/")))     # follows symlinks
            os.chmod(os.path.join(root, dest.lstrip("/")), 0o755)
        cpio = image.newc_archive(root)
    tmp = f"{path}.{os.getpid()}.tmp"
    with gzip.open(tmp, "wb", compresslevel=6) as f:
        f.write(cpio)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def build(cache: str = DEFAULT_CACHE) -> GuestImage:
    """Build (or reuse) the test guest's kernel + initramfs in `cache`."""
    os.makedirs(cache, exist_ok=True)
    with _locked(os.path.join(cache, "guest-image.lock")):
        vmlinuz, modules_dir = _kernel(cache)
        agent_root, agent_version = _fetch_agent(cache)
        modules = module_order(modules_dir)
        files = _guest_files()
        key = _input_key(files, modules, os.path.basename(modules_dir), agent_version)
        initrd = os.path.join(cache, f"guest-{key}.initrd.gz")
        if not os.path.exists(initrd):
            log.info("building the test guest's initramfs %s", initrd)
            libs = _agent_libraries(cache, os.path.join(agent_root, "usr/sbin/qemu-ga"))
            _write_initramfs(initrd, files, modules, agent_root, libs)
        for p in (vmlinuz, initrd):
            mode = os.stat(p).st_mode
            if mode & 0o044 != 0o044:
                os.chmod(p, mode | stat.S_IRGRP | stat.S_IROTH)
    return GuestImage(kernel=os.path.abspath(vmlinuz), initrd=os.path.abspath(initrd), cmdline=CMDLINE)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    img = build()
    print(f"kernel {img.kernel}\ninitrd {img.initrd}\ncmdline {img.cmdline}")


if __name__ == "__main__":
    main()
