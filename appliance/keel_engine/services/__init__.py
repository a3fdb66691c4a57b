"""The service layer: everything the REST API and the web UI do, independent
of HTTP. Functions take a Context, a SQLAlchemy session and plain typed
parameters (the API and the UI only translate their wire formats into
those). The caller owns the transaction: services flush, never commit,
except the job steps the engine worker runs, which commit as they go."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config import EngineConfig

if TYPE_CHECKING:
    from .vm_leases import VmLeases


@dataclass
class Context:
    config: EngineConfig
    sessionmaker: object
    # the signed-in user; None is the engine itself (the worker, the command
    # line), which services/access.py lets do anything
    user_id: str | None = None
    # the HA VMs' sanlock leases: set in the engine worker, the only process
    # that starts VMs (web workers never talk to libvirt or a BMC)
    leases: VmLeases | None = None
    # oVirt's `Filter: true`: reads show only what the user's user roles give
    filtered: bool = False

    def as_user(self, user_id):
        return Context(self.config, self.sessionmaker, user_id, self.leases)
