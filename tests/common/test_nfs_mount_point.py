"""The one rule for where an NFS storage domain is mounted (oVirt's)."""
import re

import pytest

from keel_common import nfs


@pytest.mark.parametrize("root,address,export,expected", [
    ("/rhev/data-center/mnt", "198.51.100.1", "/shared", "/rhev/data-center/mnt/198.51.100.1:_shared"),
    ("/rhev/data-center/mnt", "nfs.example.test", "/exports/data",
     "/rhev/data-center/mnt/nfs.example.test:_exports_data"),
    # trailing and repeated slashes of the export and the root do not make a second mount point
    ("/rhev/data-center/mnt/", "198.51.100.1", "/shared/", "/rhev/data-center/mnt/198.51.100.1:_shared"),
    ("//rhev//data-center/mnt", "198.51.100.1", "//exports//data//",
     "/rhev/data-center/mnt/198.51.100.1:_exports_data"),
    # one server, one spelling
    ("/mnt/keel", "NFS.Example.TEST", "/a", "/mnt/keel/nfs.example.test:_a"),
    ("/mnt/keel", "2001:db8:0::1", "/a/b", "/mnt/keel/[2001:db8::1]:_a_b"),
])
def test_mount_point_follows_ovirts_convention(root, address, export, expected):
    assert nfs.mount_point(root, address, export) == expected


def test_the_default_root_is_ovirts():
    assert nfs.mount_point(nfs.DEFAULT_MOUNT_ROOT, "198.51.100.1", "/shared") == \
        "/rhev/data-center/mnt/198.51.100.1:_shared"


def test_export_spec_is_what_mount_takes():
    assert nfs.export_spec("198.51.100.1", "/shared//") == "198.51.100.1:/shared"
    assert nfs.export_spec("2001:db8::1", "/a") == "[2001:db8::1]:/a"


@pytest.mark.parametrize("export,needle", [
    ("shared", "not an absolute path"), ("", "not an absolute path"),
    ("/", "the server's root"), ("//", "the server's root"),
    ("/a/../etc", "'.' or '..'"), ("/a/./b", "'.' or '..'"), ("/..", "'.' or '..'"),
    ("/a b", "spaces or control characters"), ("/a\nb", "spaces or control characters"),
])
def test_bad_export_paths_are_refused_with_the_reason(export, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        nfs.export_path(export)


@pytest.mark.parametrize("address", ["", "nfs server", "198.51.100.1:2049", "nfs://198.51.100.1", "a/b", "300.1.1.1",
                                     "-o", "h\u00e9"])
def test_bad_server_addresses_are_refused(address):
    with pytest.raises(ValueError, match="not a host name or IP address"):
        nfs.mount_point("/rhev/data-center/mnt", address, "/shared")


def test_a_relative_mount_root_is_refused():
    with pytest.raises(ValueError, match="not an absolute path"):
        nfs.mount_point("rhev/mnt", "198.51.100.1", "/shared")


@pytest.mark.parametrize("text,expected", [
    ("198.51.100.1:/shared", ("198.51.100.1", "/shared")),
    ("NFS.example.test:/exports//data/", ("nfs.example.test", "/exports/data")),
    ("[2001:db8:0::1]:/a", ("2001:db8::1", "/a")),
    ("2001:db8::1:/a", ("2001:db8::1", "/a")),
    (" 198.51.100.1:/a:/b ", ("198.51.100.1", "/a:/b")),
])
def test_a_connection_is_parsed_into_server_and_export(text, expected):
    assert nfs.parse_connection(text) == expected
    assert nfs.parse_connection(nfs.export_spec(*expected)) == expected


@pytest.mark.parametrize("text,needle", [
    ("198.51.100.1", "is not SERVER:/EXPORT"), ("198.51.100.1:shared", "is not SERVER:/EXPORT"),
    (":/shared", "is not SERVER:/EXPORT"), ("", "is not SERVER:/EXPORT"), ("[2001:db8::1]/a", "is not SERVER:/EXPORT"),
    ("nfs://h:/a", "is not SERVER:/EXPORT"), ("nfs server:/a", "not a host name or IP address"),
    ("198.51.100.1:/", "the server's root"), ("198.51.100.1:/a/../b", "'.' or '..'"),
])
def test_a_bad_connection_is_refused_with_the_reason(text, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        nfs.parse_connection(text)
