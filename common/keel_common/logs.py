"""Logging set-up shared by the daemons: one line per event, readable in
journalctl (which adds its own timestamp when stderr goes to the journal)."""
from __future__ import annotations

import logging
import os
import sys


def setup_logging(name: str, debug: bool = False) -> logging.Logger:
    under_journal = bool(os.environ.get("JOURNAL_STREAM")) or bool(os.environ.get("INVOCATION_ID"))
    fmt = "%(levelname)s %(name)s: %(message)s" if under_journal else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # etcd3/grpc are chatty at INFO about reconnects we already report.
    for noisy in ("grpc", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return logging.getLogger(name)
