"""Vocabulary shared by Keel's parts: configuration, the etcd key layout and
host-record schema, logging and systemd notification. A part owns its logic;
this package owns only what the parts must agree on."""
