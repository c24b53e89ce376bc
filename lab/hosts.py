"""Lab hosts: one sshd per host in its own mount + UTS namespace on a loopback address.

Each host sees the machine's binaries (the Puppet agent, Puppet Server, HAProxy, rsync,
r10k are installed machine-wide) but its own hostname, its own /run (a tmpfs, so init
scripts and pid files are per host), and its own Puppet, Puppet Server, HAProxy and root
home directories, bind-mounted from <root>/hosts/<short>/. Every process a host starts
(over SSH or by `nsenter`) lives in that mount namespace, which is how `lab down` finds and
stops all of them: it records the namespace id at start and kills every member.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.config import HostSpec

# (host directory name, mount point) bound into every host's namespace.
BIND_DIRS: tuple[tuple[str, str], ...] = (
    ("etc-puppet", "/etc/puppet"),
    ("etc-puppetlabs", "/etc/puppetlabs"),
    ("var-lib-puppet", "/var/lib/puppet"),
    ("var-cache-puppet", "/var/cache/puppet"),
    ("var-log-puppet", "/var/log/puppet"),
    ("var-lib-puppetserver", "/var/lib/puppetserver"),
    ("var-log-puppetserver", "/var/log/puppetserver"),
    ("etc-haproxy", "/etc/haproxy"),
    ("etc-cron.d", "/etc/cron.d"),
    ("etc-init.d", "/etc/init.d"),
    ("root", "/root"),
    # What a PE install creates: /opt/puppetlabs (AIO) or /opt/puppet (3.x), and its links in
    # /usr/local/bin. Empty on a bare host: the machine's own /usr/local/bin is not seen.
    ("opt-puppetlabs", "/opt/puppetlabs"),
    ("opt-puppet", "/opt/puppet"),
    ("usr-local-bin", "/usr/local/bin"),
    # `puppet resource service ... enable=` runs update-rc.d: keep its links per host.
    *((f"etc-rc{level}.d", f"/etc/rc{level}.d") for level in "0123456S"),
)
BIND_FILES: tuple[tuple[str, str], ...] = (
    ("etc-default-puppetserver", "/etc/default/puppetserver"),
    # FileSync's NFS method writes fstab; each host's cron reads its own crontab.
    ("etc-fstab", "/etc/fstab"),
    ("etc-crontab", "/etc/crontab"),
)
# Each host's own /etc/crontab: no run-parts of the machine's cron.hourly/daily.
HOST_CRONTAB = "SHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin\n"
# Mount points the lab may have to create on the machine (removed again by `lab down`).
CREATED_MOUNTPOINTS = ("/etc/puppetlabs", "/opt/puppetlabs", "/opt/puppet")
# Debian's Puppet entry points, hidden in every host (an overlay of /usr/bin with these
# whited out): a PE host has no /usr/bin/puppet, and a bare host no `puppet` at all until
# install.bash puts PE's layout in place (lab/generations.py). The lab's own tools reach
# the real Puppet 7 through inhost/bin/pelab-puppet and inhost/real/.
HIDDEN_BINARIES = ("puppet", "facter", "hiera", "puppetserver")
# Tools a PE master had in its platform's version, not Debian 12's: /usr/bin/curl and
# /usr/bin/openssl in every host are the reference-platform gate (lab/platforms.py,
# inhost/bin/pelab-gate), which refuses what the profile's platform lacked.
GATED_TOOLS = ("curl", "openssl")


def default_signals() -> None:
    """preexec_fn for every long-running process the lab starts: SIGHUP back to its default.
    A lab started under `nohup` (or any parent ignoring HUP) would otherwise hand SIG_IGN
    down to Puppet Server's and PuppetDB's JVMs, which then never install their HUP handler
    (HotSpot leaves an ignored HUP ignored): a reload (`service ... reload`, PE 2015.3+)
    would do nothing."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def gate_wrapper(inhost: Path, tool: str) -> str:
    return (
        "#!/bin/sh\n# The lab's reference-platform gate (lab/platforms.py): the profile's platform's options only.\n"
        f'exec /usr/bin/python3 {shlex.quote(str(inhost / "bin" / "pelab-gate"))} {tool} "$@"\n'
    )


# Directories copied from the machine's pristine package state into a new host.
PRISTINE_COPIES = {
    "etc-puppet": "/etc/puppet",
    "var-lib-puppet": "/var/lib/puppet",
    "var-cache-puppet": "/var/cache/puppet",
    "var-log-puppet": "/var/log/puppet",
    "var-lib-puppetserver": "/var/lib/puppetserver",
    "var-log-puppetserver": "/var/log/puppetserver",
    "etc-haproxy": "/etc/haproxy",
    "etc-init.d": "/etc/init.d",
    **{f"etc-rc{level}.d": f"/etc/rc{level}.d" for level in "0123456S"},
}


@dataclass(frozen=True)
class HostPaths:
    root: Path
    spec: HostSpec

    @property
    def dir(self) -> Path:
        return self.root / "hosts" / self.spec.short

    @property
    def pidfile(self) -> Path:
        return self.root / "run" / f"{self.spec.short}.pid"

    @property
    def nsfile(self) -> Path:
        return self.root / "run" / f"{self.spec.short}.mntns"

    @property
    def log(self) -> Path:
        return self.dir / "log" / "sshd.log"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh" / "ssh_host_ed25519_key"

    def inner(self, path: str) -> Path:
        """Where a path inside the host lives on the machine (for bind-mounted dirs)."""
        for name, mountpoint in BIND_FILES:
            if path == mountpoint:
                return self.dir / name
        for name, mountpoint in BIND_DIRS:
            if path == mountpoint or path.startswith(mountpoint + "/"):
                return self.dir / name / path[len(mountpoint) :].lstrip("/")
        raise ValueError(f"{path} is not inside a per-host directory")


def ensure_mountpoints(root: Path) -> None:
    """Create the mount points the machine lacks, remembering which ones we made."""
    record = root / "run" / "created-mountpoints"
    record.parent.mkdir(parents=True, exist_ok=True)
    made = set(record.read_text().split()) if record.exists() else set()
    for mountpoint in CREATED_MOUNTPOINTS:
        if not os.path.isdir(mountpoint):
            os.makedirs(mountpoint)
            made.add(mountpoint)
    record.write_text("".join(f"{m}\n" for m in sorted(made)))


def remove_created_mountpoints(root: Path) -> None:
    """Undo ensure_mountpoints: only the empty directories that the lab itself created."""
    record = root / "run" / "created-mountpoints"
    if not record.exists():
        return
    for mountpoint in record.read_text().split():
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(mountpoint)
    record.unlink()


def sshd_config(paths: HostPaths) -> str:
    return "\n".join(
        [
            f"ListenAddress {paths.spec.address}:22",
            f"HostKey {paths.host_key}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "PidFile /run/sshd.pid",
            "MaxStartups 200:30:400",
            "MaxSessions 100",
            "LogLevel ERROR",
            "AcceptEnv LANG LC_*",
            "Subsystem sftp /usr/lib/openssh/sftp-server",
            "",
        ]
    )


def boot_script(paths: HostPaths) -> str:
    """The namespace's init: private mounts, hostname, per-host dirs, then exec sshd."""
    lines = [
        "#!/bin/sh",
        "set -eu",
        f"hostname {shlex.quote(paths.spec.fqdn)}",
        "mount -t tmpfs -o mode=0755,size=64m pelab-run /run",
        "mkdir -p /run/sshd /run/puppet /run/puppetserver /run/haproxy /run/lock",
        "chown puppet:puppet /run/puppet /run/puppetserver",
    ]
    for name, mountpoint in BIND_DIRS + BIND_FILES:
        lines.append(f"mount --bind {shlex.quote(str(paths.dir / name))} {shlex.quote(mountpoint)}")
    upper, work = (shlex.quote(str(paths.dir / n)) for n in ("usr-bin-upper", "usr-bin-work"))
    lines.append(f"mount -t overlay pelab-usr-bin -o lowerdir=/usr/bin,upperdir={upper},workdir={work} /usr/bin")
    # The host's cron (FileSync's periodic jobs in /etc/cron.d); its pid file is in /run.
    lines.append("/usr/sbin/cron")
    lines.append(f"exec /usr/sbin/sshd -D -e -f {shlex.quote(str(paths.dir / 'ssh' / 'sshd_config'))}")
    return "\n".join(lines) + "\n"


def prepare(paths: HostPaths, authorized_key: str, known_hosts: str) -> None:
    """Create the host's directories once (idempotent: existing state is kept)."""
    d = paths.dir
    (d / "log").mkdir(parents=True, exist_ok=True)
    (d / "ssh").mkdir(parents=True, exist_ok=True)
    for name, source in PRISTINE_COPIES.items():
        target = d / name
        if not target.exists():
            subprocess.run(["cp", "-a", source, str(target)], check=True)
    for name in ("etc-puppetlabs", "etc-cron.d", "opt-puppetlabs", "opt-puppet", "usr-local-bin", "usr-bin-work"):
        (d / name).mkdir(exist_ok=True)
    upper = d / "usr-bin-upper"
    upper.mkdir(exist_ok=True)
    for name in HIDDEN_BINARIES:  # overlayfs whiteouts: character devices 0/0
        if not (upper / name).exists():
            os.mknod(upper / name, 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    for tool in GATED_TOOLS:  # written before the host boots (a mounted overlay's upper is not edited)
        wrapper = upper / tool
        text = gate_wrapper(paths.root / "inhost", tool)
        if running_pid(paths) is None and (not wrapper.is_file() or wrapper.read_text() != text):
            wrapper.write_text(text)
            wrapper.chmod(0o755)
    # No host has Debian's agent package: its init script (DAEMON=/usr/bin/puppet) goes, and
    # PE's layout brings its own (install.bash on compile hosts, `lab up` on the others).
    if not (d / ".initialised").exists():
        for script in ("puppet", "pe-puppet"):
            (d / "etc-init.d" / script).unlink(missing_ok=True)
    # A bare host: the agent binaries exist machine-wide, but nothing is configured.
    conf = d / "etc-puppet" / "puppet.conf"
    if paths.spec.role != "primary" and not (d / ".initialised").exists():
        conf.write_text("# puppet.conf of a bare lab host: no agent configured yet\n")
    home = d / "root"
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    (home / ".ssh" / "authorized_keys").write_text(authorized_key)
    (home / ".ssh" / "known_hosts").write_text(known_hosts)
    os.chmod(home, 0o700)
    default = d / "etc-default-puppetserver"
    if not default.exists():
        text = Path("/etc/default/puppetserver").read_text()
        heap = "-Xms512m -Xmx1g" if paths.spec.role == "primary" else "-Xms256m -Xmx640m"
        text = text.replace("-Xms1g -Xmx1g", heap)
        default.write_text(text)
    if not (d / "etc-fstab").exists():
        (d / "etc-fstab").write_text("# /etc/fstab of a lab host (the machine's is not shared)\n")
    if not (d / "etc-crontab").exists():
        (d / "etc-crontab").write_text(HOST_CRONTAB)
    if not paths.host_key.exists():
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", paths.spec.fqdn, "-f", str(paths.host_key)],
            check=True,
        )
    (d / "ssh" / "sshd_config").write_text(sshd_config(paths))
    boot = d / "boot.sh"
    boot.write_text(boot_script(paths))
    boot.chmod(0o755)
    (d / ".initialised").touch()


def host_public_key(paths: HostPaths) -> str:
    """'ssh-ed25519 AAAA...' of the host (what a pinned host key or known_hosts holds)."""
    kind, key = Path(str(paths.host_key) + ".pub").read_text().split()[:2]
    return f"{kind} {key}"


def mount_ns_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def running_pid(paths: HostPaths) -> int | None:
    """The host's sshd pid if it is alive and still in the namespace we recorded."""
    try:
        pid = int(paths.pidfile.read_text())
        recorded = paths.nsfile.read_text().strip()
    except (OSError, ValueError):
        return None
    return pid if mount_ns_of(pid) == recorded else None


def start(paths: HostPaths) -> int:
    """Start the host's namespace and sshd (no-op if it already runs)."""
    pid = running_pid(paths)
    if pid:
        return pid
    stop(paths)  # clear leftovers of a half-dead host before starting anew
    paths.pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen(
            ["unshare", "--mount", "--uts", "--propagation", "private", "--", "/bin/sh", str(paths.dir / "boot.sh")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=default_signals,
        )
    deadline = time.monotonic() + 10
    own_ns = mount_ns_of(os.getpid())
    while time.monotonic() < deadline:
        ns = mount_ns_of(proc.pid)
        if ns and ns != own_ns and _listening(paths.spec.address, 22):
            paths.pidfile.write_text(str(proc.pid))
            paths.nsfile.write_text(ns)
            return proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"lab host {paths.spec.short} did not start; see {paths.log}:\n{_tail(paths.log)}")


def members(ns_id: str) -> list[int]:
    """Every process in the given mount namespace."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and mount_ns_of(int(entry)) == ns_id:
            pids.append(int(entry))
    return pids


def stop(paths: HostPaths, grace: float = 10.0) -> None:
    """Kill every process of the host's namespace (TERM, then KILL after `grace`)."""
    try:
        ns_id = paths.nsfile.read_text().strip()
    except OSError:
        return
    if ns_id == mount_ns_of(os.getpid()):
        raise RuntimeError("refusing to kill our own mount namespace")
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = members(ns_id)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while members(ns_id) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not members(ns_id):
            break
    if members(ns_id):
        raise RuntimeError(f"processes of lab host {paths.spec.short} survived SIGKILL: {members(ns_id)}")
    paths.pidfile.unlink(missing_ok=True)
    paths.nsfile.unlink(missing_ok=True)


def nsenter(pid: int, argv: list[str]) -> list[str]:
    """argv that runs a command inside the host's namespaces (as root, no SSH)."""
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--", *argv]


def _listening(address: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((address, port)) == 0


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
