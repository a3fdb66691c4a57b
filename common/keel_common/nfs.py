"""Where an NFS storage domain is mounted: the one rule every Keel part uses
(the engine, the lab, the appliance seed, an installer).

oVirt's convention: every host mounts the export SERVER:/EXPORT at
`{mount_root}/{SERVER}:{EXPORT with each '/' replaced by '_'}`, e.g.
198.51.100.1:/shared under /rhev/data-center/mnt ->
/rhev/data-center/mnt/198.51.100.1:_shared. One export has one mount point
everywhere, so a disk or lease path names the same file on every host.
"""
from __future__ import annotations

import ipaddress
import posixpath

from .ini import is_host_address

DEFAULT_MOUNT_ROOT = "/rhev/data-center/mnt"


def server_address(address: str) -> str:
    """The NFS server's host name or IP address in one spelling (names in
    lower case, IPv6 compressed), so one server is not two; ValueError if it
    is neither."""
    if not is_host_address(address):
        raise ValueError(f"'{address}' is not a host name or IP address")
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return address.lower()


def export_path(path: str) -> str:
    """The export's path on the server, canonical: absolute, no '.' or '..'
    components, not '/'; repeated and trailing slashes dropped. ValueError
    with a one-line reason otherwise."""
    if not path.startswith("/"):
        raise ValueError(f"'{path}' is not an absolute path")
    parts = [p for p in path.split("/") if p]
    if "." in parts or ".." in parts:
        raise ValueError(f"'{path}' must not contain '.' or '..' components")
    if not parts:
        raise ValueError(f"'{path}' is the server's root; give the exported directory")
    if any(c.isspace() or not c.isprintable() for c in path):
        raise ValueError(f"{path!r} must not contain spaces or control characters")
    return "/" + "/".join(parts)


def export_spec(address: str, export: str) -> str:
    """SERVER:/EXPORT as `mount` takes it (an IPv6 server in brackets)."""
    server = server_address(address)
    host = f"[{server}]" if ":" in server else server
    return f"{host}:{export_path(export)}"


def mount_point(mount_root: str, address: str, export: str) -> str:
    """The local directory where every host (and the engine) has the export."""
    if not posixpath.isabs(mount_root):
        raise ValueError(f"mount root '{mount_root}' is not an absolute path")
    root = "/" + posixpath.normpath(mount_root).lstrip("/")    # POSIX keeps a leading '//'
    return posixpath.join(root, export_spec(address, export).replace("/", "_"))


def parse_connection(text: str) -> tuple[str, str]:
    """'SERVER:/EXPORT' (an IPv6 server bare or in brackets) as (server,
    export), both canonical (see server_address, export_path); ValueError
    with a one-line reason otherwise."""
    text = text.strip()
    if text.startswith("["):
        server, sep, export = text[1:].partition("]:")
    else:
        # a server (name or address) has no '/', so the first ':/' ends it
        at = text.find(":/")
        server, sep, export = (text[:at], ":", text[at + 1:]) if at > 0 else (text, "", "")
    if not sep or not export.startswith("/") or export.startswith("//"):   # '//': a URL
        raise ValueError(f"'{text}' is not SERVER:/EXPORT")
    return server_address(server), export_path(export)
