"""FileSync's pure side: typed inputs, check() problems, and everything FileSync writes
or runs on a host, built from validated parts (the sync script, the cron entry, the
restricted authorized_keys line, r10k.yaml, the fstab line) plus the code digest.

The digest is how "in sync" is decided: sha256 of every file (and symlink target) under
the environments directory, by relative path, skipping VCS and r10k metadata that differ
per host by design, and the user's excludes. Same listing on both sides = same code.

The global hiera.yaml, which no code sync carries, has its own pure side:
provider/codesync/hiera.py.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

from provider.core import inputs, validation
from provider.ssh.deadline import with_deadline
from provider.ssh.trust import SshTarget

METHODS = ("rsync", "r10k", "nfs")
SECRET_KEYS = ("ssh_private_key", "primary_ssh_private_key")
# Code Manager on (peadm's code_manager_enabled task checks this file, pe-generations.md §9
# [S41]): PE's file-sync client then overwrites each compile master's live codedir.
CODE_MANAGER_CONF = "/etc/puppetlabs/puppetserver/conf.d/code-manager.conf"
REPLACE_KEYS = ("method", "host", "primary_host", "code_dir", "primary_code_dir", "state_dir", "nfs_export")
LOCAL_ONLY_KEYS = (
    "ssh_port",
    "ssh_user",
    "ssh_private_key",
    "ssh_host_key",
    "ssh_known_hosts",
    "primary_ssh_private_key",
    "connect_timeout",
    "sync_timeout",
    "remove_code_on_delete",
)
UPDATE_KEYS = (
    "schedule",
    "excludes",
    "r10k_remote",
    "r10k_config",
    "r10k_cachedir",
    "r10k_bin",
    "rrsync_path",
    "nfs_options",
    "primary_ssh_port",
    "primary_ssh_user",
    "primary_ssh_host_key",
    "primary_ssh_known_hosts",
    *LOCAL_ONLY_KEYS,
)
INPUT_KEYS = (*REPLACE_KEYS, *UPDATE_KEYS)
DEFAULTS: dict[str, Any] = {
    **inputs.ssh_defaults("ssh"),
    **inputs.ssh_defaults("primary_ssh"),
    "code_dir": "/etc/puppetlabs/code",
    "primary_code_dir": "",  # = code_dir
    "state_dir": "/etc/puppetlabs/pe-file-sync",
    "schedule": "*/5 * * * *",
    "excludes": [],
    "r10k_remote": "",
    "r10k_config": "/etc/puppetlabs/r10k/r10k.yaml",
    "r10k_cachedir": "/var/cache/r10k",
    "r10k_bin": "r10k",
    "rrsync_path": "/usr/bin/rrsync",
    "nfs_export": "",  # = <primary_code_dir>/environments
    "nfs_options": "ro",
    "connect_timeout": 30,
    "sync_timeout": 300,
    "remove_code_on_delete": False,
}
REQUIRED = ("method", "host", "ssh_private_key", "primary_host", "primary_ssh_private_key")
CRON_FILE = "/etc/cron.d/pe-file-sync"
JOB_TIMEOUT = 1800  # seconds one periodic sync may take before it is killed
IGNORED_NAMES = (".git", ".r10k-deploy.json")  # per-host metadata, never compared
_CRON_FIELD = re.compile(r"^[0-9*/,-]+$")
_PATTERN = re.compile(r"^[A-Za-z0-9._*?/\[\]-]+$")
_REMOTE = re.compile(r"^([A-Za-z0-9._~+-]+@)?[A-Za-z0-9._~:/+-]+$")
_NFS_OPTIONS = re.compile(r"^[a-z0-9_=.,]+$")


@dataclass(frozen=True)
class SyncConfig:
    resource_name: str
    method: str
    target: SshTarget
    primary: SshTarget
    code_dir: str
    primary_code_dir: str
    state_dir: str
    schedule: str
    excludes: list[str]
    r10k_remote: str
    r10k_config: str
    r10k_cachedir: str
    r10k_bin: str
    rrsync_path: str
    nfs_export: str
    nfs_options: str
    connect_timeout: float
    sync_timeout: float
    remove_code_on_delete: bool
    secrets: list[str] = field(repr=False)

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> SyncConfig:
        m = inputs.with_defaults(DEFAULTS, props)
        primary_code_dir = str(m["primary_code_dir"] or m["code_dir"])
        return cls(
            resource_name=str(m.get("resource_name") or f"file-sync-{m['host']}"),
            method=str(m["method"]),
            target=inputs.ssh_target(m, "ssh", "host"),
            primary=inputs.ssh_target(m, "primary_ssh", "primary_host"),
            code_dir=str(m["code_dir"]),
            primary_code_dir=primary_code_dir,
            state_dir=str(m["state_dir"]),
            schedule=str(m["schedule"]),
            excludes=[str(p) for p in m["excludes"]],
            r10k_remote=str(m["r10k_remote"]),
            r10k_config=str(m["r10k_config"]),
            r10k_cachedir=str(m["r10k_cachedir"]),
            r10k_bin=str(m["r10k_bin"]),
            rrsync_path=str(m["rrsync_path"]),
            nfs_export=str(m["nfs_export"] or f"{primary_code_dir}/environments"),
            nfs_options=str(m["nfs_options"]),
            connect_timeout=float(m["connect_timeout"]),
            sync_timeout=float(m["sync_timeout"]),
            remove_code_on_delete=bool(m["remove_code_on_delete"]),
            secrets=[str(m["ssh_private_key"]), str(m["primary_ssh_private_key"])],
        )

    @property
    def environments(self) -> str:
        return f"{self.code_dir}/environments"

    @property
    def primary_environments(self) -> str:
        return f"{self.primary_code_dir}/environments"

    @property
    def key_path(self) -> str:
        return f"{self.state_dir}/id_ed25519"

    @property
    def known_hosts_path(self) -> str:
        return f"{self.state_dir}/known_hosts"

    @property
    def script_path(self) -> str:
        return f"{self.state_dir}/sync"

    @property
    def marker(self) -> str:
        """Names this master's lines in shared files (authorized_keys, fstab)."""
        return f"pe-file-sync:{self.target.host}"

    @property
    def periodic(self) -> bool:
        return self.method in ("rsync", "r10k")


def schedule_error(value: object) -> str | None:
    if value in ("@hourly", "@daily"):
        return None
    fields = value.split() if isinstance(value, str) and value.isprintable() else []  # no newline: one cron line
    if len(fields) != 5 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
        return f"schedule must be five cron fields of digits and */,- (e.g. '*/5 * * * *'), not {value!r}"
    return None


def problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    """Every reason these inputs cannot work, as (property, reason), before any change."""
    out = inputs.required_problems(props, REQUIRED)
    out += inputs.ssh_problems(props, "ssh", "host")
    out += inputs.ssh_problems(props, "primary_ssh", "primary_host")
    present = inputs.known(props)
    m = inputs.with_defaults(DEFAULTS, present)
    method = m.get("method")
    if "method" in present and method not in METHODS:
        out.append(("method", f"method must be one of {', '.join(METHODS)} (got {method!r})"))
    for key in ("code_dir", "state_dir", "r10k_config", "r10k_cachedir", "rrsync_path"):
        error = validation.path_error(m[key], key)
        if error:
            out.append((key, error))
    for key in ("primary_code_dir", "nfs_export"):
        if m[key]:
            error = validation.path_error(m[key], key)
            if error:
                out.append((key, error))
    if m["r10k_bin"] != "r10k":
        error = validation.path_error(m["r10k_bin"], "r10k_bin")
        if error:
            out.append(("r10k_bin", error))
    error = schedule_error(m["schedule"])
    if error:
        out.append(("schedule", error))
    excludes = m["excludes"]
    if not isinstance(excludes, list) or not all(isinstance(p, str) and _PATTERN.fullmatch(p) for p in excludes):
        out.append(("excludes", "excludes must be a list of patterns of letters, digits and ._*?/[]-"))
    if method == "r10k" and not inputs.is_unknown(props.get("r10k_remote")):
        remote = m["r10k_remote"]
        if not remote:
            out.append(("r10k_remote", "method r10k needs r10k_remote (the control repository's git URL)"))
        elif not _REMOTE.fullmatch(str(remote)) or str(remote).startswith("-") or "::" in str(remote):
            # '-...' would be an option to git; '<helper>::...' (ext::) runs a command
            out.append(("r10k_remote", f"r10k_remote must be a plain git URL or path, not {remote!r}"))
    if not _NFS_OPTIONS.fullmatch(str(m["nfs_options"])):
        out.append(("nfs_options", f"nfs_options must be mount options like 'ro,hard', not {m['nfs_options']!r}"))
    out += inputs.timeout_problems(props, ("connect_timeout", "sync_timeout"))
    return out


# --- what FileSync writes on the hosts ------------------------------------------------------
def sync_command(cfg: SyncConfig) -> list[str]:
    """The one command that brings the master's environments up to date."""
    if cfg.method == "rsync":
        # rsync splits -e itself (spaces, honouring quotes): quote the paths inside it too.
        ssh = (
            f"ssh -i {shlex.quote(cfg.key_path)} -p {cfg.primary.port} -o BatchMode=yes -o IdentitiesOnly=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(cfg.known_hosts_path)} "
            "-o ConnectTimeout=30"
        )
        excludes = [f"--exclude={p}" for p in cfg.excludes]
        # The key's forced command (rrsync -ro <primary environments>) roots the path at ".".
        source = f"{cfg.primary.user}@{cfg.primary.host}:./"
        return ["rsync", "-a", "--delete", *excludes, "-e", ssh, source, f"{cfg.environments}/"]
    if cfg.method == "r10k":
        return [cfg.r10k_bin, "deploy", "environment", "--config", cfg.r10k_config, "--modules", "--verbose", "warn"]
    raise ValueError(f"method {cfg.method} has no sync command")


def sync_script(cfg: SyncConfig) -> str:
    """The script the periodic job and create both run: one sync at a time (flock),
    bounded in time, its last result recorded for refresh."""
    command = shlex.join(sync_command(cfg))
    last = shlex.quote(f"{cfg.state_dir}/last-run")
    return (
        "#!/bin/sh\n"
        f"# Managed by pe-compile-masters FileSync ({cfg.method} from {cfg.primary.host}); do not edit.\n"
        "set -u\n"
        f"mkdir -p {shlex.quote(cfg.environments)}\n"
        # /var/lock: RHEL 5 and 6 (PE master platforms up to 2018.1) have no /run.
        "exec 9>/var/lock/pe-file-sync.lock\n"
        "flock -w 600 9 || { echo 'another sync still runs' >&2; exit 75; }\n"
        "rc=0\n"
        # timeout(1) or, without coreutils 7.0 (RHEL 5, SLES 11), Perl: provider.ssh.deadline.
        f"( {with_deadline(command, JOB_TIMEOUT, 10, interpreter='/bin/sh')} ) || rc=$?\n"
        f'echo "$(date +%s) $rc" > {last}.tmp && mv -f {last}.tmp {last}\n'
        'exit "$rc"\n'
    )


def cron_entry(cfg: SyncConfig) -> str:
    name = " ".join(cfg.resource_name.split())  # a comment stays one line, whatever the resource is called
    return (
        f"# Managed by pe-compile-masters FileSync ({name}): {cfg.method} from {cfg.primary.host}\n"
        "SHELL=/bin/sh\n"
        "PATH=/opt/puppetlabs/puppet/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
        f"{cfg.schedule} root {shlex.quote(cfg.script_path)} >/dev/null 2>&1\n"
    )


def authorized_key_line(cfg: SyncConfig, public_key: str) -> str:
    """The master's sync key on the primary: read-only rsync of the environments, nothing else."""
    kind, blob = public_key.split()[:2]
    return f'restrict,command="{cfg.rrsync_path} -ro {cfg.primary_environments}" {kind} {blob} {cfg.marker}'


def authorized_keys_with(text: str, marker: str, line: str | None) -> str:
    """authorized_keys with this master's line replaced (or removed when line is None)."""
    kept = [raw for raw in text.splitlines() if not raw.rstrip().endswith(f" {marker}")]
    if line:
        kept.append(line)
    return "\n".join(kept) + ("\n" if kept else "")


def r10k_yaml(cfg: SyncConfig) -> str:
    body = {
        "cachedir": cfg.r10k_cachedir,
        "sources": {"puppet": {"remote": cfg.r10k_remote, "basedir": cfg.environments}},
    }
    return "# Managed by pe-compile-masters FileSync; do not edit.\n" + yaml.safe_dump(body, sort_keys=True)


def fstab_lines(cfg: SyncConfig) -> list[str]:
    return [
        f"# {cfg.marker} (managed by pe-compile-masters FileSync)",
        f"{cfg.primary.host}:{cfg.nfs_export} {cfg.environments} nfs {cfg.nfs_options} 0 0",
    ]


def fstab_with(text: str, cfg: SyncConfig, present: bool) -> str:
    lines = text.splitlines()
    ours = fstab_lines(cfg)
    out, skip = [], False
    for line in lines:
        if skip:
            skip = False
            continue
        if line == ours[0]:
            skip = True  # our entry is the line after the marker
            continue
        out.append(line)
    if present:
        out += ours
    return "\n".join(out) + "\n"


# --- the digest --------------------------------------------------------------------------------
def digest_command(environments: str) -> str:
    """Lines `<sha256>  ./path` for files and `link ./path -> target` for symlinks."""
    env = shlex.quote(environments)
    prune = "-name .git -prune -o"
    return (
        f"cd {env} && "
        f"find . {prune} -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum -- && "
        f"find . {prune} -type l -printf 'link %p -> %l\\n'"
    )


def parse_listing(text: str, excludes: list[str]) -> dict[str, str]:
    """The digest command's output -> {relative path: content digest}, minus ignored files."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("link "):
            path, _, target = line[5:].partition(" -> ")
            value = "link:" + target
        elif len(line) > 66 and line[64:66] == "  ":
            value, path = line[:64], line[66:]
        elif line.startswith("\\") and len(line) > 67:  # sha256sum escapes odd names
            value, path = line[1:65], line[67:].replace("\\n", "\n").replace("\\\\", "\\")
        else:
            continue
        path = path[2:] if path.startswith("./") else path
        if not is_excluded(path, excludes):
            out[path] = value
    return out


def is_excluded(path: str, excludes: list[str]) -> bool:
    """Per-host metadata, or an rsync-style exclude: a pattern without '/' matches any
    path component; one with '/' matches from the top (a leading '/' anchors it)."""
    parts = path.split("/")
    if any(part in IGNORED_NAMES for part in parts):
        return True
    for pattern in excludes:
        if "/" not in pattern.rstrip("/"):
            if any(fnmatch.fnmatchcase(part, pattern.rstrip("/")) for part in parts):
                return True
        else:
            anchored = pattern.lstrip("/").rstrip("/")
            if fnmatch.fnmatchcase(path, anchored) or fnmatch.fnmatchcase(path, anchored + "/*"):
                return True
    return False


def digest_of(listing: dict[str, str]) -> str:
    text = "".join(f"{path}\0{value}\n" for path, value in sorted(listing.items()))
    return hashlib.sha256(text.encode()).hexdigest()


def differences(primary: dict[str, str], master: dict[str, str], limit: int = 8) -> list[str]:
    out = []
    for path in sorted(set(primary) | set(master)):
        if path not in master:
            out.append(f"missing on the master: {path}")
        elif path not in primary:
            out.append(f"only on the master: {path}")
        elif primary[path] != master[path]:
            out.append(f"differs: {path}")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])
