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

import shlex
from contextlib import ExitStack
from typing import Any

import pulumi
from pulumi import dynamic

from provider.codesync import hiera, plan, remote
from provider.core import inputs
from provider.core.access import HostAccess, PrimaryAccess
from provider.core.errors import SshUnreachableError, at_boundary
from provider.core.progress import progress, resource_inputs, without_provider
from provider.ssh.session import SshSession

OUTPUT_KEYS = ("status", "digest", "files", "job", "sync_key", "mount", "hiera_digest")


class Sync:
    """One operation's view of the master and the primary: the remote pieces
    (provider/codesync/remote.py) in order for create, delete and refresh."""

    def __init__(self, cfg: plan.SyncConfig, master: SshSession | None, primary: SshSession):
        self.cfg = cfg
        self.master = master
        log = progress(cfg.resource_name)
        self.log = log
        self.code = remote.Code(cfg, master, primary, log)
        self.hiera = remote.Hiera(cfg, master, primary, log)
        self.key = remote.SyncKey(cfg, master, primary, log)
        self.nfs = remote.NfsMount(cfg, master, primary, log)

    @property
    def host(self) -> SshSession:
        return self.code.host

    def converge(self) -> dict[str, Any]:
        cfg = self.cfg
        self.code.preflight()
        public, where = "", ""
        if cfg.method == "rsync":
            public = self.key.ensure()
            self.key.authorize(plan.authorized_key_line(cfg, public))
        elif cfg.method == "r10k":
            self.code.write_if_changed(cfg.r10k_config, plan.r10k_yaml(cfg), 0o644)
        if cfg.periodic:
            self.code.write_if_changed(cfg.script_path, plan.sync_script(cfg), 0o755)
        else:
            where = self.nfs.mount()
        listing = self.code.wait_in_sync()
        if cfg.periodic:
            self.code.install_job()
        hiera_digest = self.hiera.sync()
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
            self.key.authorize(None)  # first: even with the master unreachable, its key loses access
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
            if self.nfs.mounted():
                self.host.run(["umount", cfg.environments], timeout=120).check(
                    "unmount", "the code directory is busy; stop what uses it and retry"
                )
            self.nfs.edit_fstab(False)
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
            if cfg.method == "rsync" and not self.key.authorized(str(props.get("sync_key") or "")):
                out.append("sync key not authorized on the primary")
        else:
            if not self.nfs.mounted():
                out.append("not mounted")
            if plan.fstab_lines(cfg)[1] not in (self.host.get("/etc/fstab") or b"").decode().splitlines():
                out.append("fstab entry missing")
        _, diff = self.code.compare()
        if diff:
            out.append(f"code differs from the primary ({diff[0]})")
        primary, master = self.hiera.files()
        drifted = hiera.drift(primary, master)
        if drifted:
            out.append(drifted)
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


class FileSyncProvider(dynamic.ResourceProvider):
    @at_boundary
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        return dynamic.CheckResult(news, [dynamic.CheckFailure(p, r) for p, r in plan.problems(news)])

    @at_boundary
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        """Inputs only, no remote call: a new method/place replaces; schedule etc. update."""
        changed = inputs.changed_keys(plan.INPUT_KEYS, olds, news, plan.DEFAULTS)
        replaces = [k for k in changed if k in plan.REPLACE_KEYS]
        drifted = olds.get("status") not in (None, "in sync")
        return dynamic.DiffResult(changes=bool(changed) or drifted, replaces=replaces, delete_before_replace=True)

    @at_boundary
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        cfg = inputs.parse(props, plan.problems, plan.SyncConfig.from_props)
        with ExitStack() as stack:
            outputs = _open(cfg, stack).converge()
        return dynamic.CreateResult(f"{cfg.target.host}:{cfg.environments}", self.merged(props, outputs))

    @at_boundary
    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        cfg = plan.SyncConfig.from_props(news)
        changed = inputs.changed_keys(plan.INPUT_KEYS, olds, news, plan.DEFAULTS)
        if olds.get("status") == "in sync" and all(k in plan.LOCAL_ONLY_KEYS for k in changed):
            return dynamic.UpdateResult(self.merged(news, {k: olds.get(k) for k in OUTPUT_KEYS}))
        with ExitStack() as stack:
            outputs = _open(cfg, stack).converge()
        return dynamic.UpdateResult(self.merged(news, outputs))

    @at_boundary
    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        cfg = plan.SyncConfig.from_props(props)
        with ExitStack() as stack:
            sync = _open(cfg, stack)
            drift, hiera_digest = sync.drift(props)
            status = "in sync" if not drift else "drifted: " + "; ".join(drift)
            if drift:
                sync.log("refresh", status)
        return dynamic.ReadResult(id_, {**props, "status": status, "hiera_digest": hiera_digest})

    @at_boundary
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        cfg = plan.SyncConfig.from_props(props)
        with ExitStack() as stack:
            _open(cfg, stack, master_required=False).remove(str(props.get("sync_key") or ""))

    @staticmethod
    def merged(props: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        return {**without_provider(props), **outputs}


class FileSyncArgs(HostAccess, PrimaryAccess, total=False):
    """The inputs (see docs/resources/file-sync.md); validated in check()."""

    method: pulumi.Input[str]
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


class FileSync(dynamic.Resource):
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
