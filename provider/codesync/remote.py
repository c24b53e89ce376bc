"""FileSync's remote work, piece by piece, on the master and the primary: the code
(compare digests, run the sync, its cron job), the global hiera.yaml, rsync's key on the
primary, and NFS's mount. provider/codesync/plan.py builds every command and file these
run; provider/file_sync.py's Sync puts them in order for create, delete and refresh."""

from __future__ import annotations

import hashlib
import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from provider.codesync import hiera, plan
from provider.core.errors import DeadlineError, ProviderError, SshUnreachableError
from provider.pe.generation import PUPPET_BINARIES
from provider.ssh.session import SshSession, host_keys_for, remote_lock

AUTHORIZED_KEYS_LOCK = "/var/lock/pe-file-sync-authorized-keys.lock"  # RHEL 5/6 have no /run
FSTAB_LOCK = "/var/lock/pe-file-sync-fstab.lock"
# `puppet config print` is a Ruby start-up (seconds on a busy host).
HIERA_PROBE_TIMEOUT = 180
HIERA_FILE_TIMEOUT = 60

# The primary's hiera_config (path and `puppet`), per SSH address, for the life of the
# provider process (one `pulumi up`): every master's FileSync needs it, and each read is
# a Ruby start-up on the primary. Its digest is read afresh every time.
_primary_hiera: dict[tuple[str, int, str], hiera.HieraFile] = {}
_primary_hiera_lock = threading.Lock()


@dataclass
class Remote:
    """One FileSync operation's sessions: the master's (None when a delete finds it
    unreachable) and the primary's."""

    cfg: plan.SyncConfig
    master: SshSession | None
    primary: SshSession
    log: Callable[[str, str], None]

    @property
    def host(self) -> SshSession:
        if self.master is None:
            raise SshUnreachableError(f"{self.cfg.target.label}: not connected")
        return self.master

    def write_if_changed(self, path: str, text: str, mode: int) -> bool:
        """Write a file on the master only when its content differs (safe to repeat)."""
        current = self.host.get(path)
        if current is not None and current.decode() == text:
            return False
        self.host.run(["mkdir", "-p", path.rsplit("/", 1)[0]], timeout=30).check("prepare")
        self.host.put(path, text.encode(), mode)
        return True


class Code(Remote):
    """The environments: what each method needs is there, the master's digest equals the
    primary's after a sync, and the periodic job keeps it so."""

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

    def install_job(self) -> None:
        changed = self.write_if_changed(plan.CRON_FILE, plan.cron_entry(self.cfg), 0o644)
        self.log("job", f"{plan.CRON_FILE}: `{self.cfg.schedule}`" + (" written" if changed else " unchanged"))


class Hiera(Remote):
    """The global hiera.yaml (in Puppet's confdir, outside the synced codedir): copied from
    the primary when the sha256 differ, as peadm's add_compiler plan does."""

    def probe(self, session: SshSession, fallback: str) -> hiera.HieraFile:
        result = session.run(hiera.probe_command(fallback), timeout=HIERA_PROBE_TIMEOUT)
        result.check("hiera.yaml", "cannot read Puppet's hiera_config (`puppet config print`) or hash that file")
        try:
            return hiera.parse_probe(result.stdout)
        except ValueError as exc:
            raise ProviderError(f"[{session.target.label}] hiera.yaml: {exc}") from None

    def digest_at(self, session: SshSession, path: str) -> str:
        result = session.run(hiera.digest_command(path), timeout=HIERA_FILE_TIMEOUT)
        result.check("hiera.yaml", f"cannot hash {path}")
        try:
            return hiera.parse_digest(result.stdout)
        except ValueError as exc:
            raise ProviderError(f"[{session.target.label}] hiera.yaml: {path}: {exc}") from None

    def primary_file(self) -> hiera.HieraFile:
        """The primary's hiera.yaml: its path from its own `puppet` (once per process), its
        digest now. A PE primary without `puppet` at either path is not one we can read."""
        target = self.cfg.primary
        key = (target.host, target.port, target.user)
        with _primary_hiera_lock:
            known = _primary_hiera.get(key)
        if known is not None:
            return hiera.HieraFile(known.path, self.digest_at(self.primary, known.path), known.puppet)
        found = self.probe(self.primary, "")
        if not found.puppet:
            raise ProviderError(
                f"[{target.label}] hiera.yaml: no `puppet` on the primary (neither "
                + " nor ".join(PUPPET_BINARIES)
                + "), so its hiera_config is unknown; is this the PE primary?"
            )
        with _primary_hiera_lock:
            _primary_hiera[key] = found
        return found

    def files(self) -> tuple[hiera.HieraFile, hiera.HieraFile]:
        """(primary's, master's): one command on each host. A master without `puppet` yet
        (its agent comes after its code) gets the primary's path, PE's path on both."""
        primary = self.primary_file()
        return primary, self.probe(self.host, primary.path)

    def read_primary(self, path: str) -> bytes:
        """The primary's file; its content is never logged nor put in an error."""
        result = self.primary.run(hiera.read_command(path), timeout=HIERA_FILE_TIMEOUT)
        if result.exit_status != 0:
            raise ProviderError(
                f"[{self.cfg.primary.label}] hiera.yaml: cannot read {path} (exit {result.exit_status}): "
                + result.stderr.strip()[-300:]
            )
        try:
            return hiera.decode_read(result.stdout)
        except ValueError as exc:
            raise ProviderError(f"[{self.cfg.primary.label}] hiera.yaml: {exc}") from None

    def sync(self) -> str:
        """Check both digests, copy only when they differ, verify the copy: safe to repeat.
        Returns the master's digest ("" when the primary has no hiera.yaml)."""
        primary, master = self.files()
        action = hiera.action(primary, master)
        if action == "leave":
            self.log("hiera.yaml", f"the primary has no {primary.path}: the master's {master.path} is left alone")
            return ""
        if action == "same":
            self.log("hiera.yaml", f"{master.path}: sha256 {primary.digest[:16]}, same as the primary's")
            return primary.digest
        data = self.read_primary(primary.path)
        digest = hashlib.sha256(data).hexdigest()  # the primary may have changed since its probe
        self.host.run(hiera.write_command(master.path), timeout=HIERA_FILE_TIMEOUT, stdin=data).check(
            "hiera.yaml", f"cannot write {master.path}"
        )
        written = self.digest_at(self.host, master.path)
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


class SyncKey(Remote):
    """rsync's dedicated key: made on the master, authorized on the primary for a read-only
    rsync of the environments only."""

    def ensure(self) -> str:
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
        with remote_lock(self.primary, AUTHORIZED_KEYS_LOCK, 120, "authorize sync key"):
            current = (self.primary.get(path) or b"").decode()
            wanted = plan.authorized_keys_with(current, cfg.marker, line)
            if wanted != current:
                self.primary.run(["mkdir", "-p", "-m", "0700", f"{home}/.ssh"], timeout=30).check("authorize")
                self.primary.put(path, wanted.encode(), 0o600)
                self.log("sync key", ("authorized" if line else "removed") + f" on {cfg.primary.host} ({cfg.marker})")

    def authorized(self, public: str) -> bool:
        home = self.primary.run('printf %s "$HOME"', timeout=30).check("primary home").stdout
        text = (self.primary.get(f"{home}/.ssh/authorized_keys") or b"").decode()
        return plan.authorized_key_line(self.cfg, public) in text.splitlines() if public else False


class NfsMount(Remote):
    """NFS: the fstab entry for the primary's export, mounted and checked with findmnt."""

    def mounted(self) -> str:
        found = self.host.run(
            ["findmnt", "-n", "-o", "SOURCE,FSTYPE,OPTIONS", "--mountpoint", self.cfg.environments], timeout=30
        )
        return found.stdout.strip() if found.exit_status == 0 else ""

    def edit_fstab(self, present: bool) -> None:
        with remote_lock(self.host, FSTAB_LOCK, 120, "fstab"):
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
