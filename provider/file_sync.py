"""FileSync: a compile master's code kept in sync with the primary, as a dynamic resource.

Methods (provider/codesync/plan.py builds every file and command):
- rsync: a dedicated key made on the master, authorized on the primary for a read-only
  rsync of the environments only (`restrict,command="rrsync -ro ..."`); the same sync
  script runs once at create and then from cron;
- r10k: r10k.yaml pointing at the control repo, `r10k deploy environment --modules`
  at create and from cron;
- nfs: an fstab entry for the primary's export, mounted and checked with findmnt.
create returns only when the master's environments have the primary's digest, so a master
never serves stale code; delete removes the job, key or mount and keeps the code unless
remove_code_on_delete is set.

The global hiera.yaml lives in Puppet's confdir, outside the codedir every method syncs,
and Puppet Server reads it for every catalog: create and update copy the primary's to the
master when their sha256 differ (as peadm's add_compiler plan does), refresh reports a
difference as drift.
"""

from __future__ import annotations

import hashlib
import shlex
import threading
import time
from contextlib import ExitStack
from typing import Any, TypedDict

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from provider.codesync import plan
from provider.core import inputs
from provider.core.errors import DeadlineError, ProviderError, SshUnreachableError, at_boundary
from provider.core.progress import progress, resource_inputs
from provider.pe.generation import PUPPET_BINARIES
from provider.ssh.session import SshSession, host_keys_for

OUTPUT_KEYS = ("status", "digest", "files", "job", "sync_key", "mount", "hiera_digest")
AUTHORIZED_KEYS_LOCK = "/var/lock/pe-file-sync-authorized-keys.lock"  # RHEL 5/6 have no /run
FSTAB_LOCK = "/var/lock/pe-file-sync-fstab.lock"
# `puppet --version` and `puppet config print` are two Ruby start-ups on a busy host.
HIERA_PROBE_TIMEOUT = 180
HIERA_FILE_TIMEOUT = 60

# The primary's hiera_config (path and `puppet`), per SSH address, for the life of the
# provider process (one `pulumi up`): every master's FileSync needs it, and each read is
# two Ruby start-ups on the primary. Its digest is read afresh every time.
_primary_hiera: dict[tuple[str, int, str], plan.HieraFile] = {}
_primary_hiera_lock = threading.Lock()


class Sync:
    """One operation's view of the master and the primary."""

    def __init__(self, cfg: plan.SyncConfig, master: SshSession | None, primary: SshSession):
        self.cfg = cfg
        self.master = master
        self.primary = primary
        self.log = progress(cfg.resource_name)

    @property
    def host(self) -> SshSession:
        if self.master is None:
            raise SshUnreachableError(f"{self.cfg.target.label}: not connected")
        return self.master

    # --- shared ------------------------------------------------------------------------
    def preflight(self) -> None:
        cfg = self.cfg
        tools = {"rsync": ["rsync", "flock"], "r10k": [cfg.r10k_bin, "git", "flock"], "nfs": ["mount"]}
        # The job's deadline: timeout(1), or Perl where coreutils has none (provider.ssh.deadline).
        deadline = "command -v timeout >/dev/null || command -v perl >/dev/null || echo timeout-or-perl"
        missing = self.host.run(
            f"for t in {shlex.join(tools[cfg.method])}; do command -v $t >/dev/null || echo $t; done"
            + (f"; {deadline}" if cfg.method != "nfs" else ""),
            timeout=30,
        ).stdout.split()
        if missing:
            raise ProviderError(f"[{cfg.target.label}] preflight: {', '.join(missing)} not installed on the master")
        owned = self.primary.run(["test", "-e", plan.CODE_MANAGER_CONF], timeout=30)
        if owned.exit_status == 0:
            raise ProviderError(
                f"[{cfg.primary.label}] preflight: Code Manager is configured on the primary ({plan.CODE_MANAGER_CONF}"
                f" exists), so PE file sync owns the live codedir of every compile master and overwrites what "
                f"{cfg.method} writes there (PE 2015.3+). Let file sync deliver the code: remove pe:fileSync from "
                "the stack, or turn Code Manager off first."
            )
        found = self.primary.run(["test", "-d", cfg.primary_environments], timeout=30)
        if found.exit_status != 0:
            raise ProviderError(f"[{cfg.primary.label}] preflight: no {cfg.primary_environments} on the primary")
        if cfg.method == "rsync":
            rrsync = self.primary.run(["test", "-x", cfg.rrsync_path], timeout=30)
            if rrsync.exit_status != 0:
                raise ProviderError(
                    f"[{cfg.primary.label}] preflight: {cfg.rrsync_path} (rsync's restricted-key helper) is missing "
                    "on the primary; install it or set rrsync_path"
                )

    def listing(self, session: SshSession, environments: str) -> dict[str, str]:
        result = session.run(plan.digest_command(environments), timeout=600)
        result.check("code digest", f"cannot list {environments}")
        return plan.parse_listing(result.stdout, self.cfg.excludes)

    def compare(self) -> tuple[dict[str, str], list[str]]:
        primary = self.listing(self.primary, self.cfg.primary_environments)
        master = self.listing(self.host, self.cfg.environments)
        return master, plan.differences(primary, master)

    def run_sync(self) -> None:
        self.host.run([self.cfg.script_path], timeout=plan.JOB_TIMEOUT + 60).check(
            f"{self.cfg.method} sync", f"the sync from {self.cfg.primary.host} failed"
        )

    def wait_in_sync(self) -> dict[str, str]:
        """Sync, compare digests; repeat until equal or the deadline (the primary may be
        mid-deploy). Never returns while the master's code differs."""
        deadline = time.monotonic() + self.cfg.sync_timeout
        while True:
            if self.cfg.periodic:
                self.run_sync()
            listing, diff = self.compare()
            if not diff:
                self.log("verify", f"{len(listing)} files, digest {plan.digest_of(listing)[:16]}: same as the primary")
                return listing
            if time.monotonic() >= deadline:
                raise DeadlineError(
                    f"[{self.cfg.target.label}] verify: the master's {self.cfg.environments} still differs from "
                    f"{self.cfg.primary.host}:{self.cfg.primary_environments} after {self.cfg.sync_timeout:.0f}s ("
                    + "; ".join(diff)
                    + "). Make the primary's code consistent with the sync source, then run `pulumi up` again; "
                    "the sync job stays installed and keeps syncing."
                )
            self.log("verify", f"not in sync yet ({diff[0]}); syncing again")
            time.sleep(2)

    def write_if_changed(self, path: str, text: str, mode: int) -> bool:
        current = self.host.get(path)
        if current is not None and current.decode() == text:
            return False
        self.host.run(["mkdir", "-p", path.rsplit("/", 1)[0]], timeout=30).check("prepare")
        self.host.put(path, text.encode(), mode)
        return True

    def install_job(self) -> None:
        changed = self.write_if_changed(plan.CRON_FILE, plan.cron_entry(self.cfg), 0o644)
        self.log("job", f"{plan.CRON_FILE}: `{self.cfg.schedule}`" + (" written" if changed else " unchanged"))

    # --- the global hiera.yaml -----------------------------------------------------------
    def probe_hiera(self, session: SshSession, fallback: str) -> plan.HieraFile:
        result = session.run(plan.hiera_probe_command(fallback), timeout=HIERA_PROBE_TIMEOUT)
        result.check("hiera.yaml", "cannot read Puppet's hiera_config (`puppet config print`) or hash that file")
        try:
            return plan.parse_hiera_probe(result.stdout)
        except ValueError as exc:
            raise ProviderError(f"[{session.target.label}] hiera.yaml: {exc}") from None

    def hiera_digest_at(self, session: SshSession, path: str) -> str:
        result = session.run(plan.hiera_digest_command(path), timeout=HIERA_FILE_TIMEOUT)
        result.check("hiera.yaml", f"cannot hash {path}")
        try:
            return plan.parse_hiera_digest(result.stdout)
        except ValueError as exc:
            raise ProviderError(f"[{session.target.label}] hiera.yaml: {path}: {exc}") from None

    def primary_hiera(self) -> plan.HieraFile:
        """The primary's hiera.yaml: its path from its own `puppet` (once per process), its
        digest now. A PE primary without `puppet` at either path is not one we can read."""
        target = self.cfg.primary
        key = (target.host, target.port, target.user)
        with _primary_hiera_lock:
            known = _primary_hiera.get(key)
        if known is not None:
            return plan.HieraFile(known.path, self.hiera_digest_at(self.primary, known.path), known.puppet)
        found = self.probe_hiera(self.primary, "")
        if not found.puppet:
            raise ProviderError(
                f"[{target.label}] hiera.yaml: no `puppet` on the primary (neither "
                + " nor ".join(PUPPET_BINARIES)
                + "), so its hiera_config is unknown; is this the PE primary?"
            )
        with _primary_hiera_lock:
            _primary_hiera[key] = found
        return found

    def hiera_files(self) -> tuple[plan.HieraFile, plan.HieraFile]:
        """(primary's, master's): one command on each host. A master without `puppet` yet
        (its agent comes after its code) gets the primary's path, PE's path on both."""
        primary = self.primary_hiera()
        return primary, self.probe_hiera(self.host, primary.path)

    def read_primary_hiera(self, path: str) -> bytes:
        """The primary's file; its content is never logged nor put in an error."""
        result = self.primary.run(plan.hiera_read_command(path), timeout=HIERA_FILE_TIMEOUT)
        if result.exit_status != 0:
            raise ProviderError(
                f"[{self.cfg.primary.label}] hiera.yaml: cannot read {path} (exit {result.exit_status}): "
                + result.stderr.strip()[-300:]
            )
        try:
            return plan.decode_hiera_read(result.stdout)
        except ValueError as exc:
            raise ProviderError(f"[{self.cfg.primary.label}] hiera.yaml: {exc}") from None

    def sync_hiera(self) -> str:
        """Check both digests, copy only when they differ, verify the copy: safe to repeat.
        Returns the master's digest ("" when the primary has no hiera.yaml)."""
        primary, master = self.hiera_files()
        action = plan.hiera_action(primary, master)
        if action == "leave":
            self.log("hiera.yaml", f"the primary has no {primary.path}: the master's {master.path} is left alone")
            return ""
        if action == "same":
            self.log("hiera.yaml", f"{master.path}: sha256 {primary.digest[:16]}, same as the primary's")
            return primary.digest
        data = self.read_primary_hiera(primary.path)
        digest = hashlib.sha256(data).hexdigest()  # the primary may have changed since its probe
        self.host.run(plan.hiera_write_command(master.path), timeout=HIERA_FILE_TIMEOUT, stdin=data).check(
            "hiera.yaml", f"cannot write {master.path}"
        )
        written = self.hiera_digest_at(self.host, master.path)
        if written != digest:
            raise ProviderError(
                f"[{self.cfg.target.label}] hiera.yaml: {master.path} has sha256 {written or 'none'} after the copy, "
                f"not the primary's {digest}; is something else writing it?"
            )
        self.log(
            "hiera.yaml",
            f"{master.path}: copied from {self.cfg.primary.host}:{primary.path}, sha256 "
            f"{master.digest[:16] or '(none)'} -> {digest[:16]}",
        )
        return digest

    # --- rsync ---------------------------------------------------------------------------
    def ensure_key(self) -> str:
        cfg = self.cfg
        self.host.run(["mkdir", "-p", "-m", "0700", cfg.state_dir], timeout=30).check("prepare")
        if self.host.get(cfg.key_path + ".pub") is None:
            self.host.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", cfg.marker, "-f", cfg.key_path], timeout=60
            ).check("sync key")
            self.log("sync key", f"made {cfg.key_path}")
        public = (self.host.get(cfg.key_path + ".pub") or b"").decode().strip()
        # The master trusts exactly the primary's pinned host key.
        keys = host_keys_for(cfg.primary)
        name = cfg.primary.host if cfg.primary.port == 22 else f"[{cfg.primary.host}]:{cfg.primary.port}"
        self.write_if_changed(
            cfg.known_hosts_path, "".join(f"{name} {k.get_name()} {k.get_base64()}\n" for k in keys), 0o644
        )
        return public

    def authorize(self, line: str | None) -> None:
        """Add (or with None remove) this master's key line on the primary, under a lock."""
        cfg = self.cfg
        home = self.primary.run('printf %s "$HOME"', timeout=30).check("primary home").stdout
        path = f"{home}/.ssh/authorized_keys"
        with self.primary.remote_lock(AUTHORIZED_KEYS_LOCK, 120, "authorize sync key"):
            current = (self.primary.get(path) or b"").decode()
            wanted = plan.authorized_keys_with(current, cfg.marker, line)
            if wanted != current:
                self.primary.run(["mkdir", "-p", "-m", "0700", f"{home}/.ssh"], timeout=30).check("authorize")
                self.primary.put(path, wanted.encode(), 0o600)
                self.log("sync key", ("authorized" if line else "removed") + f" on {cfg.primary.host} ({cfg.marker})")

    def key_authorized(self, public: str) -> bool:
        home = self.primary.run('printf %s "$HOME"', timeout=30).check("primary home").stdout
        text = (self.primary.get(f"{home}/.ssh/authorized_keys") or b"").decode()
        return plan.authorized_key_line(self.cfg, public) in text.splitlines() if public else False

    # --- nfs -----------------------------------------------------------------------------
    def mounted(self) -> str:
        found = self.host.run(
            ["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--mountpoint", self.cfg.environments], timeout=30
        )
        return found.stdout.strip() if found.exit_status == 0 else ""

    def edit_fstab(self, present: bool) -> None:
        with self.host.remote_lock(FSTAB_LOCK, 120, "fstab"):
            current = (self.host.get("/etc/fstab") or b"").decode()
            wanted = plan.fstab_with(current, self.cfg, present)
            if wanted != current:
                self.host.run("cp -p /etc/fstab /etc/fstab.pe-file-sync.bak", timeout=30).check("fstab backup")
                self.host.run(["tee", "/etc/fstab"], timeout=30, stdin=wanted.encode()).check("fstab")
                self.log("fstab", ("entry added" if present else "entry removed") + f" for {self.cfg.environments}")

    def mount(self) -> str:
        cfg = self.cfg
        self.edit_fstab(True)
        if not self.mounted():
            self.host.run(["mkdir", "-p", cfg.environments], timeout=30).check("mount")
            self.host.run(["mount", cfg.environments], timeout=120).check(
                "mount", f"cannot mount {cfg.primary.host}:{cfg.nfs_export} (is it exported to this master?)"
            )
        where = self.mounted()
        if not where:
            raise ProviderError(f"[{cfg.target.label}] mount: findmnt does not show {cfg.environments} mounted")
        self.log("mount", f"{cfg.environments}: {where}")
        return where

    # --- converge / remove -----------------------------------------------------------------
    def converge(self) -> dict[str, Any]:
        cfg = self.cfg
        self.preflight()
        public, where = "", ""
        if cfg.method == "rsync":
            public = self.ensure_key()
            self.authorize(plan.authorized_key_line(cfg, public))
        elif cfg.method == "r10k":
            self.write_if_changed(cfg.r10k_config, plan.r10k_yaml(cfg), 0o644)
        if cfg.periodic:
            self.write_if_changed(cfg.script_path, plan.sync_script(cfg), 0o755)
        else:
            where = self.mount()
        listing = self.wait_in_sync()
        if cfg.periodic:
            self.install_job()
        hiera_digest = self.sync_hiera()
        return {
            "status": "in sync",
            "digest": plan.digest_of(listing),
            "files": len(listing),
            "job": plan.cron_entry(cfg).splitlines()[-1] if cfg.periodic else "",
            "sync_key": public,
            "mount": where,
            "hiera_digest": hiera_digest,
        }

    def remove(self, public: str) -> None:
        cfg = self.cfg
        if cfg.method == "rsync" and public:
            self.authorize(None)  # first: even with the master unreachable, its key loses access
        if self.master is None:
            self.log("remove", "master unreachable: its job/mount are left; the primary no longer trusts its key")
            return
        if cfg.periodic:
            self.host.run(["rm", "-f", plan.CRON_FILE], timeout=30).check("remove job")
            self.host.run(["rm", "-rf", cfg.state_dir], timeout=30).check("remove sync state")
            if cfg.method == "r10k":
                current = (self.host.get(cfg.r10k_config) or b"").decode()
                if current.startswith("# Managed by pe-compile-masters FileSync"):
                    self.host.run(["rm", "-f", cfg.r10k_config], timeout=30).check("remove r10k.yaml")
            self.log("remove", f"periodic {cfg.method} job and its key/config removed")
        else:
            if self.mounted():
                self.host.run(["umount", cfg.environments], timeout=120).check(
                    "unmount", "the code directory is busy; stop what uses it and retry"
                )
            self.edit_fstab(False)
            self.log("remove", f"{cfg.environments} unmounted and its fstab entry removed")
        if cfg.remove_code_on_delete:
            self.host.run(f"find {shlex.quote(cfg.environments)} -mindepth 1 -delete", timeout=600).check("remove code")
            self.log("remove", f"code under {cfg.environments} removed (remove_code_on_delete)")

    def drift(self, props: dict[str, Any]) -> tuple[list[str], str]:
        """What differs from what create set up, and the master's hiera.yaml digest now
        ("" when the primary has none, so nothing is kept equal)."""
        cfg = self.cfg
        out = []
        if cfg.periodic:
            current = (self.host.get(plan.CRON_FILE) or b"").decode()
            if current != plan.cron_entry(cfg):
                out.append("periodic job missing" if not current else "periodic job changed")
            if self.host.get(cfg.script_path) is None:
                out.append("sync script missing")
            if cfg.method == "rsync" and not self.key_authorized(str(props.get("sync_key") or "")):
                out.append("sync key not authorized on the primary")
        else:
            if not self.mounted():
                out.append("not mounted")
            if plan.fstab_lines(cfg)[1] not in (self.host.get("/etc/fstab") or b"").decode().splitlines():
                out.append("fstab entry missing")
        _, diff = self.compare()
        if diff:
            out.append(f"code differs from the primary ({diff[0]})")
        primary, master = self.hiera_files()
        hiera = plan.hiera_drift(primary, master)
        if hiera:
            out.append(hiera)
        return out, master.digest if primary.digest else ""


def _open(cfg: plan.SyncConfig, stack: ExitStack, master_required: bool = True) -> Sync:
    primary = stack.enter_context(SshSession(cfg.primary, cfg.connect_timeout, cfg.secrets))
    try:
        master: SshSession | None = stack.enter_context(SshSession(cfg.target, cfg.connect_timeout, cfg.secrets))
    except SshUnreachableError:
        if master_required:
            raise
        master = None
    return Sync(cfg, master, primary)


class FileSyncProvider(ResourceProvider):
    @at_boundary
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        return CheckResult(news, [CheckFailure(p, r) for p, r in plan.problems(news)])

    @at_boundary
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """Inputs only, no remote call: a new method/place replaces; schedule etc. update."""
        changed = inputs.changed_keys(plan.INPUT_KEYS, olds, news, plan.DEFAULTS)
        replaces = [k for k in changed if k in plan.REPLACE_KEYS]
        drifted = olds.get("status") not in (None, "in sync")
        return DiffResult(changes=bool(changed) or drifted, replaces=replaces, delete_before_replace=True)

    @at_boundary
    def create(self, props: dict[str, Any]) -> CreateResult:
        failures = plan.problems(props)
        if failures:
            raise ProviderError("; ".join(f"{p}: {r}" for p, r in failures))
        cfg = plan.SyncConfig.from_props(props)
        with ExitStack() as stack:
            outputs = _open(cfg, stack).converge()
        return CreateResult(f"{cfg.target.host}:{cfg.environments}", self.merged(props, outputs))

    @at_boundary
    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        cfg = plan.SyncConfig.from_props(news)
        changed = inputs.changed_keys(plan.INPUT_KEYS, olds, news, plan.DEFAULTS)
        if olds.get("status") == "in sync" and all(k in plan.LOCAL_ONLY_KEYS for k in changed):
            return UpdateResult(self.merged(news, {k: olds.get(k) for k in OUTPUT_KEYS}))
        with ExitStack() as stack:
            outputs = _open(cfg, stack).converge()
        return UpdateResult(self.merged(news, outputs))

    @at_boundary
    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        cfg = plan.SyncConfig.from_props(props)
        with ExitStack() as stack:
            sync = _open(cfg, stack)
            drift, hiera_digest = sync.drift(props)
            status = "in sync" if not drift else "drifted: " + "; ".join(drift)
            if drift:
                sync.log("refresh", status)
        return ReadResult(id_, {**props, "status": status, "hiera_digest": hiera_digest})

    @at_boundary
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        cfg = plan.SyncConfig.from_props(props)
        with ExitStack() as stack:
            _open(cfg, stack, master_required=False).remove(str(props.get("sync_key") or ""))

    @staticmethod
    def merged(props: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in props.items() if k != "__provider"}, **outputs}


class FileSyncArgs(TypedDict, total=False):
    """The inputs (see docs/resources/file-sync.md); validated in check()."""

    method: pulumi.Input[str]
    host: pulumi.Input[str]
    ssh_port: pulumi.Input[int]
    ssh_user: pulumi.Input[str]
    ssh_private_key: pulumi.Input[str]
    ssh_host_key: pulumi.Input[str]
    ssh_known_hosts: pulumi.Input[str]
    primary_host: pulumi.Input[str]
    primary_ssh_port: pulumi.Input[int]
    primary_ssh_user: pulumi.Input[str]
    primary_ssh_private_key: pulumi.Input[str]
    primary_ssh_host_key: pulumi.Input[str]
    primary_ssh_known_hosts: pulumi.Input[str]
    code_dir: pulumi.Input[str]
    primary_code_dir: pulumi.Input[str]
    state_dir: pulumi.Input[str]
    schedule: pulumi.Input[str]
    excludes: pulumi.Input[list[pulumi.Input[str]]]
    r10k_remote: pulumi.Input[str]
    r10k_config: pulumi.Input[str]
    r10k_cachedir: pulumi.Input[str]
    r10k_bin: pulumi.Input[str]
    rrsync_path: pulumi.Input[str]
    nfs_export: pulumi.Input[str]
    nfs_options: pulumi.Input[str]
    connect_timeout: pulumi.Input[float]
    sync_timeout: pulumi.Input[float]
    remove_code_on_delete: pulumi.Input[bool]


class FileSync(Resource):
    """Code on one compile master kept in sync with the primary; SSH keys stay secret."""

    status: pulumi.Output[str]
    digest: pulumi.Output[str]
    files: pulumi.Output[int]
    job: pulumi.Output[str]
    sync_key: pulumi.Output[str]
    mount: pulumi.Output[str]
    hiera_digest: pulumi.Output[str]

    def __init__(self, name: str, props: FileSyncArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args = resource_inputs(name, dict(props), plan.SECRET_KEYS, OUTPUT_KEYS)
        options = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True))
        super().__init__(FileSyncProvider(), name, args, options)
