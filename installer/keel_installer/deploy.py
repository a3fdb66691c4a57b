"""`hosted-engine --deploy` and `--clean-deploy` on the first host.

The deploy asks its questions (or reads answer files), shows a summary,
asks once for confirmation, then runs its steps (`steps.py`) with their
progress. A failed or interrupted deploy can be run again: it resumes
with the answers it recorded; `--clean-deploy` removes what it made.
A full log goes to /var/lib/keel/deploy.log.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import time

from .record import DEPLOYED, FAILED, IN_PROGRESS, DeployRecord
from .runner import Progress, Stopped, StepFailed, run_steps
from . import steps

log = logging.getLogger("keel_installer.deploy")
LOG_PATH = os.path.join(steps.STATE_DIR, "deploy.log")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STOPPED = 0, 1, 2, 130


def _log_to_file() -> None:
    os.makedirs(steps.STATE_DIR, exist_ok=True)
    h = logging.FileHandler(LOG_PATH)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(h)
    root.setLevel(logging.INFO)


def _appliance(answers):
    from keel_appliance.build import ApplianceImage, default_cache
    directory = answers.appliance or os.path.join(default_cache(), "current")
    try:
        return ApplianceImage.load(directory)
    except (OSError, ValueError, KeyError, TypeError):
        raise StepFailed(f"no engine appliance image in {directory}",
                         "build it with `keel-engine-appliance build` or give [engine_vm] appliance") from None


def main(args, out=sys.stdout) -> int:
    from .cli import CliError
    if os.geteuid() != 0:
        raise CliError("the deploy must run as root")
    if args.clean_deploy:
        return clean(out)
    if args.join_bundle:
        from .join import JoinError, write_bundle
        try:
            print(write_bundle(args.join_bundle), file=out)
        except (JoinError, OSError) as e:
            raise CliError(f"cannot write the join bundle: {e}") from None
        return EXIT_OK
    return deploy(args, out)


def deploy(args, out) -> int:
    from .answers import AnswerError, HostFacts, load_answer_files, render_answer_file
    from .questions import collect, confirm, summary
    from .cli import CliError
    record = _load_record()
    if record is not None and record.status == DEPLOYED:
        raise CliError(f"this host is deployed already (since {time.ctime(record.finished or record.started)}); "
                       "hosted-engine --vm-status shows it. To start over: hosted-engine --clean-deploy")
    if record is None and os.path.exists(steps.HOST_CONFIG):
        raise CliError(f"{steps.HOST_CONFIG} exists: this host is configured already, not by a deploy; "
                       "remove it first only if it is not in use")
    from .join import JoinError, preset_of, read_bundle, STEPS as JOIN_STEPS
    bundle = None
    if args.join:
        try:
            bundle = read_bundle(args.join)
        except JoinError as e:
            raise CliError(str(e), EXIT_USAGE) from None
    elif record is not None and "host_id" in record.answers:
        raise CliError("the unfinished deploy here was a join: run it again with --join=FILE", EXIT_USAGE)
    interactive = sys.stdin.isatty()
    try:
        preset = load_answer_files(args.config_append, allow_passwords=args.answer_file_passwords)
        if bundle is not None:
            preset = _keep(preset_of(bundle), preset, "the cluster (the join bundle)")
        if record is not None:
            preset = _resume_preset(record, preset)
            print(f"A deploy started {time.ctime(record.started)} did not finish "
                  f"({record.failure or record.status}); resuming it with its answers.", file=out)
        facts = HostFacts.probe()
        answers = collect(preset, facts, interactive=interactive,
                          source=args.config_append[-1] if args.config_append else "")
    except AnswerError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    except KeyboardInterrupt:
        print("\nStopped; nothing was changed.", file=out)
        return EXIT_STOPPED
    if args.generate_answer:
        _write_answer_file(args.generate_answer, render_answer_file(answers))
        print(f"Answers written to {args.generate_answer} (passwords left out).", file=out)
    print("\n" + summary(answers), file=out)
    if interactive:
        try:
            if not confirm(out=out):
                print("Nothing was changed.", file=out)
                return EXIT_FAILED
        except (KeyboardInterrupt, EOFError):
            print("\nStopped; nothing was changed.", file=out)
            return EXIT_STOPPED
    services = _service_manager()
    _log_to_file()
    record = record or DeployRecord()
    record.status, record.answers, record.failure = IN_PROGRESS, answers.public(), ""
    record.save()
    log.info("deploy started: %s", answers.public())
    progress = Progress(out)
    try:
        ctx = steps.Context(answers=answers, facts=facts, record=record, services=services,
                            appliance=None if bundle else _appliance(answers), bundle=bundle)
        step_list = JOIN_STEPS if bundle else steps.STEPS
        what = f"Joining {answers.host_name} to the cluster of {bundle['by']}" if bundle \
            else f"Deploying the hosted engine on {answers.host_name}"
        print(f"\n{what} ({len(step_list)} steps; log: {LOG_PATH})\n", file=out, flush=True)
        total = run_steps(steps.bind(ctx, step_list), progress,
                          on_done=lambda i, s, t: (record.step_done(s.name),
                                                   log.info("step %d (%s) done in %.1f s", i + 1, s.name, t)))
    except StepFailed as e:
        where = getattr(e, "step", "before the first step")
        record.status, record.failure = FAILED, f"failed at {where}: {e.why}"
        record.save()
        log.error("deploy failed at %s: %s", where, e.why, exc_info=e.__cause__ is not None)
        print(f"\nThe deploy failed at {where}:\n  {e.why}", file=out)
        if e.todo:
            print(f"  What to do: {e.todo}", file=out)
        print("Nothing after this step ran. Run hosted-engine --deploy again to resume once the cause is "
              "fixed, or hosted-engine --clean-deploy to remove what this deploy made.", file=out)
        return EXIT_FAILED
    except Stopped as e:
        record.status, record.failure = FAILED, f"stopped by Ctrl-C at {e}"
        record.save()
        log.warning("deploy stopped by the user at %s", e)
        print(f"\nStopped at {e}. Run hosted-engine --deploy again to resume, or "
              "hosted-engine --clean-deploy to remove what this deploy made.", file=out)
        return EXIT_STOPPED
    except Exception as e:      # a bug of ours: one paragraph here, the traceback in the log
        record.status, record.failure = FAILED, f"unexpected error: {e.__class__.__name__}: {e}"
        record.save()
        log.exception("deploy failed unexpectedly")
        print(f"\nThe deploy failed unexpectedly: {e.__class__.__name__}: {e}\n"
              f"The details are in {LOG_PATH}. Run hosted-engine --deploy again to resume, or "
              "hosted-engine --clean-deploy to remove what this deploy made.", file=out)
        return EXIT_FAILED
    record.status, record.finished = DEPLOYED, time.time()
    record.save()
    log.info("deploy finished in %.1f s", total)
    a = answers
    if bundle:
        print(f"\n{a.host_name} joined the cluster as host id {ctx.host_id} ({total:.0f} s).\n"
              f"  HA state:  hosted-engine --vm-status\n  Log:       {LOG_PATH}", file=out)
        return EXIT_OK
    password_at = f"in {a.admin_password_file}" if a.admin_password_file else "the one you entered"
    print(f"\nThe hosted engine is deployed ({total:.0f} s).\n"
          f"  Engine:    {ctx.engine_url}/ovirt-engine/  (API: {ctx.engine_url}/ovirt-engine/api)\n"
          f"  Sign in:   {steps.ADMIN_USER}, password {password_at}\n"
          f"  HA state:  hosted-engine --vm-status\n"
          f"  Log:       {LOG_PATH}", file=out)
    return EXIT_OK


def _load_record() -> DeployRecord | None:
    from .cli import CliError
    try:
        return DeployRecord.load()
    except ValueError as e:
        raise CliError(str(e)) from None


def _service_manager():
    from .cli import CliError
    from .services import ServiceError, detect
    try:
        return detect()
    except ServiceError as e:
        raise CliError(str(e)) from None


def _resume_preset(record: DeployRecord, preset: dict) -> dict:
    """The recorded answers, which answer files given now may not change."""
    from .answers import BY_FIELD
    recorded = {k: v for k, v in record.answers.items() if k in BY_FIELD}
    return _keep(recorded, preset, "an unfinished deploy here")


def _keep(fixed: dict, preset: dict, whose: str) -> dict:
    """`fixed` answers with `preset` added; `preset` may not change them."""
    from .answers import AnswerError
    merged = dict(fixed)
    for key, value in preset.items():
        if key in merged and merged[key] != value:
            raise AnswerError(f"{whose} has {key} = {merged[key]!r}, not {value!r}; "
                              "leave it out of the answer file (or run hosted-engine --clean-deploy "
                              "first to deploy with other answers)")
        merged[key] = value
    return merged


def _write_answer_file(path: str, text: str) -> None:
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


# ------------------------------------------------------------------ --clean-deploy

def clean(out) -> int:
    from .etcd_member import EtcdMemberError
    from .join import JoinError
    from .services import ServiceError
    record = _load_record()
    if record is None:
        print("Nothing to clean: no deploy ran on this host.", file=out)
        return EXIT_OK
    services = _service_manager()
    made = list(reversed(record.made))
    # The agent first (it would restart the engine VM), then the VM (its
    # lease must go before the broker leaves the lockspace), then the rest.
    order = sorted(made, key=lambda m: 0 if m == {"kind": "unit", "what": steps.AGENT_UNIT}
                   else 1 if m["kind"] == "vm" else 2)
    problems = []
    for m in order:
        try:
            done = _undo(m, services)
        except (OSError, ServiceError, subprocess.SubprocessError, JoinError, EtcdMemberError) as e:
            problems.append(f"{m['kind']} {m['what']}: {e}")
            continue
        if done:
            print(f"  {done}", file=out, flush=True)
    if problems:
        print("Some things could not be removed:\n  " + "\n  ".join(problems) +
              "\nFix the cause and run hosted-engine --clean-deploy again.", file=out)
        record.save()
        return EXIT_FAILED
    record.remove()
    print(f"This host is clean: everything the deploy made is removed (its log stays in {LOG_PATH}).", file=out)
    return EXIT_OK


def _retrying(fn, timeout: float = 60.0):
    """etcd refuses a member's removal for a few seconds after a member
    (re)joined, and a cluster electing a leader does not answer at once."""
    from .etcd_member import EtcdMemberError
    from .join import JoinError
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except (EtcdMemberError, JoinError):
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _undo(m: dict, services) -> str:
    kind, what = m["kind"], m["what"]
    if kind == "unit":
        if not os.path.exists(os.path.join("/etc/systemd/system", what)):
            return ""
        services.remove_unit(what)
        return f"stopped and removed {what}"
    if kind == "vm":
        if not steps._libvirt_domain_active(what):
            return ""
        import libvirt
        conn = libvirt.open("qemu:///system")
        try:
            conn.lookupByName(what).destroy()
        finally:
            conn.close()
        return f"powered off the engine VM {what}"
    if kind in ("etcd-member", "host-id"):
        from .etcd_member import client_config, remove_member
        from .join import release_host_id
        from .pki import Pki
        *head, endpoints = what.split(" ")
        cfg = client_config(Pki(steps.PKI_DIR), endpoints.split(","))
        if kind == "etcd-member":
            return _retrying(lambda: f"removed etcd member {head[0]}" if remove_member(cfg, head[0], 30) else "")
        host_id, name = int(head[0]), head[1]
        return _retrying(lambda: f"gave host id {host_id} back" if release_host_id(cfg, host_id, name) else "")
    if kind == "lockspace":
        import sanlock
        name, host_id, path = what.split(":", 2)
        try:
            sanlock.rem_lockspace(name.encode(), int(host_id), path)
        except sanlock.SanlockException as e:
            if e.errno == errno.ENOENT:      # not joined (the host rebooted, or it never was)
                return ""
            raise OSError(f"sanlock cannot leave lockspace {name}: {e}") from None
        return f"left the sanlock lockspace {name} (host id {host_id})"
    if kind == "mount":
        if not steps.is_mount_point(what):
            return ""
        cp = subprocess.run(["umount", what], capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            raise OSError(cp.stderr.strip() or f"umount exit {cp.returncode}")
        os.rmdir(what)
        return f"unmounted {what}"
    if kind in ("file", "shared-file", "dir"):
        removed = []
        for path in (what, what + ".new", what + ".tmp"):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
                removed.append(path)
            elif os.path.lexists(path):
                os.unlink(path)
                removed.append(path)
        return f"removed {', '.join(removed)}" if removed else ""
    raise OSError(f"unknown kind {kind!r} in the deploy record")
