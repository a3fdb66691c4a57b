"""What a deploy did on this host, kept in `/var/lib/keel/deploy.json`:
the answers (no secrets), the steps done, and everything it made, each
written down *before* it is made. A re-run resumes from it;
`--clean-deploy` undoes exactly what it lists, newest first."""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

DEFAULT_PATH = "/var/lib/keel/deploy.json"
IN_PROGRESS, FAILED, DEPLOYED = "in-progress", "failed", "deployed"

# What can be made, and how --clean-deploy undoes it:
#   file / dir        removed (a dir with what is in it)
#   shared-file       removed from the shared storage (this deploy created it there)
#   mount             unmounted
#   unit              stopped, disabled and removed
#   vm                the engine VM destroyed on this host, if it runs here
#   lockspace         this host leaves the sanlock lockspace (the broker joined it)
#   etcd-member       "NAME ENDPOINTS": the member removed from the cluster (a joined host)
#   host-id           "ID NAME ENDPOINTS": the sanlock host id given back (a joined host)
KINDS = ("file", "dir", "shared-file", "mount", "unit", "vm", "lockspace", "etcd-member", "host-id")


@dataclass
class DeployRecord:
    path: str = DEFAULT_PATH
    status: str = IN_PROGRESS
    answers: dict = field(default_factory=dict)
    steps_done: list = field(default_factory=list)
    made: list = field(default_factory=list)       # [{"kind": ..., "what": ...}]
    started: float = field(default_factory=time.time)
    finished: float | None = None
    failure: str = ""

    @classmethod
    def load(cls, path: str = DEFAULT_PATH) -> "DeployRecord | None":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is unreadable ({e}); remove it only if no deploy ran here") from None
        data.pop("path", None)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(path=path, **known)

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        data = asdict(self)
        data.pop("path")
        tmp = self.path + ".tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def will_make(self, kind: str, what: str) -> None:
        """Write down a thing before making it, so that a crash half-way
        still leaves it listed for --clean-deploy."""
        assert kind in KINDS, kind
        entry = {"kind": kind, "what": what}
        if entry not in self.made:
            self.made.append(entry)
            self.save()

    def step_done(self, name: str) -> None:
        if name not in self.steps_done:
            self.steps_done.append(name)
            self.save()

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
