"""Test harness: real daemons (etcd, sanlock) for the integration tests."""
