"""`lab up` / `lab down`: bring the PE-shaped deployment up idempotently, and take it away.

Order of `up` (each step checks first, so re-running only does what is missing):
  1. state dir, lab.json, the lab SSH key, the in-host programs, /etc/hosts block;
  2. every host's namespace + sshd;
  3. the primary: Puppet Server as CA and compiler (ENC -> console, reports -> PuppetDB,
     install.bash through static-content), started and waited for;
  4. console, PuppetDB and load balancer hosts get certificates from the real CA
     (autosigned: their names are the only ones in autosign.conf);
  5. console (4433) and PuppetDB (8081) services, HAProxy (8140 frontend), on the hosts the
     layout gives them (lab/config.py LAYOUTS: split, monolithic, extra-large);
  6. real agent runs on PuppetDB's host then the console's (once where they are one host):
     the whitelists are written by Puppet.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from lab import hosts as labhosts
from lab.config import (
    INFRA_ROLES,
    HostSpec,
    LabSettings,
    etc_hosts_block,
    host_by_short,
    infra_certnames,
    lab_root,
    replace_etc_hosts_block,
    roster,
)
from lab.generations import LAB_CA_PORT, Profile, other_allowlists
from lab.platforms import platform_for

LAB_DIR = Path(__file__).resolve().parent
ETC_HOSTS = Path("/etc/hosts")
PUPPETSERVER_START_DEADLINE = 240.0
# A HUP is seconds on an idle machine; past this a busy one gets a restart instead.
RELOAD_DEADLINE = 120.0
NFS_HELPER = "/usr/sbin/mount.nfs"
# The primary's file sync settings (PE 2015.3+, Profile.file_sync_conf).
FILE_SYNC_CONF = "/etc/puppetlabs/puppetserver/conf.d/file-sync.conf"


_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"lab [{time.monotonic() - _T0:6.1f}s]: {msg}", flush=True)


class Lab:
    """The lab on this machine, rooted at lab_root()."""

    def __init__(self, root: Path | None = None):
        self.root = root or lab_root()

    # --- paths and settings ---------------------------------------------------------
    @property
    def key(self) -> Path:
        return self.root / "keys" / "lab_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "keys" / "known_hosts"

    @property
    def inhost(self) -> Path:
        return self.root / "inhost"

    def paths(self, short: str) -> labhosts.HostPaths:
        return labhosts.HostPaths(self.root, host_by_short(short))

    def settings(self) -> LabSettings:
        path = self.root / "lab.json"
        return LabSettings.from_json(path.read_text()) if path.exists() else LabSettings()

    def save_settings(self, settings: LabSettings) -> None:
        (self.root / "lab.json").write_text(settings.to_json(self.root))

    # --- running commands in hosts ----------------------------------------------------
    def pid(self, short: str) -> int:
        pid = labhosts.running_pid(self.paths(short))
        if pid is None:
            raise RuntimeError(f"lab host {short} is not running (lab up)")
        return pid

    def run(
        self, short: str, argv: list[str], check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside a host's namespaces as root (the lab's back door; tests of the
        product go through SSH instead)."""
        proc = subprocess.run(
            labhosts.nsenter(self.pid(short), argv), capture_output=True, text=True, timeout=timeout, input=input
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"[{short}] {' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
        return proc

    def spawn(self, short: str, argv: list[str], logfile: Path, pidfile: Path, user: str | None = None) -> None:
        """Start a long-running service inside a host, detached, logging to logfile."""
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(logfile, "ab") as out:
            proc = subprocess.Popen(
                labhosts.nsenter(self.pid(short), argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
                preexec_fn=labhosts.default_signals,
            )
        pidfile.write_text(str(proc.pid))

    def puppet(
        self, short: str, args: list[str], check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """The real Puppet 7 in a host, by the lab's own route (hosts hide Debian's binaries;
        the product meets the generation's CLI instead)."""
        return self.run(short, [str(self.inhost / "bin" / "pelab-puppet"), *args], check=check, timeout=timeout)

    # --- up ---------------------------------------------------------------------------
    def up(self, settings: LabSettings | None = None) -> None:
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for sub in ("run", "state", "keys", "packages/current"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        current = settings or self.settings()
        self.save_settings(current)
        self.install_inhost()
        self.ensure_keys()
        self.write_etc_hosts()
        labhosts.ensure_mountpoints(self.root)
        self.install_nfs_helper()
        self.start_hosts()
        self.apply_profile()
        self.setup_primary(current)
        self.bootstrap_infra_certs()
        self.stop_strays()
        self.start_database()
        self.start_console_and_puppetdb()
        self.setup_lb()
        self.setup_control_repo()
        self.wait_for_puppetdb()
        self.infra_runs()
        log(f"up in {time.monotonic() - started:.1f}s")

    def role_host(self, role: str) -> HostSpec:
        """The host holding an infrastructure role (puppetdb, console, database) now."""
        return self.settings().role_host(role)

    def infra_runs(self) -> None:
        """Agent runs on PuppetDB's host, then the console's (one run where they are one
        host, as on a monolithic primary): the runs write their whitelists."""
        shorts = dict.fromkeys(self.role_host(role).short for role in ("puppetdb", "console"))
        for short in shorts:
            self.agent_run(short)
        log(f"agent runs on {', '.join(shorts)} done (whitelists written by Puppet)")

    def install_inhost(self) -> None:
        """Copy the in-host programs and render the templates (always: code may change)."""
        target = self.inhost
        # Copy over, never remove: the primary bind-mounts bin/puppet-legacy, and a bind
        # mount keeps pointing at a deleted file's old inode.
        shutil.copytree(LAB_DIR / "inhost", target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        # The real Puppet 7 entry points, which every host hides (lab/hosts.py): the lab's
        # own route (bin/pelab-puppet) and what a host's PE layout links to.
        (target / "real").mkdir(exist_ok=True)
        for name in (*labhosts.HIDDEN_BINARIES, *labhosts.GATED_TOOLS, "timeout"):
            shutil.copy2(f"/usr/bin/{name}", target / "real" / name)
        shutil.copy2(LAB_DIR / "generations.py", target / "pelab_generations.py")
        shutil.copy2(LAB_DIR / "platforms.py", target / "pelab_platforms.py")
        (target / "templates").mkdir(exist_ok=True)
        shutil.copy2(LAB_DIR / "templates" / "pe-agent.init", target / "templates" / "pe-agent.init")
        for path in target.rglob("*"):
            if path.is_file() and path.parent.name == "bin":
                text = path.read_text()
                if "@INHOST@" in text:
                    path.write_text(self.render(text))  # in place: keeps the bind-mounted inode
            executable = path.is_dir() or path.parent.name in ("bin", "real")
            os.chmod(path, 0o755 if executable else 0o644)
        os.chmod(target, 0o755)
        install = (LAB_DIR / "templates" / "install.bash").read_text()
        dest = self.root / "packages" / "current" / "install.bash"
        dest.write_text(self.render(install))
        dest.chmod(0o644)

    def install_nfs_helper(self) -> None:
        """mount(8) hands `-t nfs` to /sbin/mount.nfs: make that the lab's simulated NFS,
        unless the machine has a real one (then NFS mounts are real, and need a server)."""
        helper = Path(NFS_HELPER)
        record = self.root / "run" / "created-nfs-helper"
        ours = self.inhost / "bin" / "pelab-mount-nfs"
        if helper.is_symlink() and os.readlink(helper).endswith("/inhost/bin/pelab-mount-nfs"):
            helper.unlink()  # a lab's helper, maybe another root's: point it at this lab
        if not helper.exists():
            helper.symlink_to(ours)
            record.write_text(NFS_HELPER)

    def render(self, text: str) -> str:
        return (
            text.replace("@PRIMARY@", host_by_short("primary").fqdn)
            .replace("@PUPPETDB@", self.role_host("puppetdb").fqdn)
            .replace("@DATABASE@", self.role_host("database").fqdn)
            .replace("@INHOST@", str(self.inhost))
            .replace("@ROOT@", str(self.root))
        )

    def ensure_keys(self) -> None:
        if not self.key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pelab", "-f", str(self.key)], check=True
            )

    def write_etc_hosts(self) -> None:
        text = ETC_HOSTS.read_text()
        new = replace_etc_hosts_block(text, etc_hosts_block(roster()))
        if new != text:
            # /etc/hosts may be a bind mount (containers): rewrite in place, never replace.
            with open(ETC_HOSTS, "w") as f:
                f.write(new)

    def start_hosts(self) -> None:
        pub = Path(str(self.key) + ".pub").read_text()
        specs = roster()
        for spec in specs:  # host keys first: every host's known_hosts lists all of them
            labhosts.HostPaths(self.root, spec).dir.joinpath("ssh").mkdir(parents=True, exist_ok=True)
            key = labhosts.HostPaths(self.root, spec).host_key
            if not key.exists():
                subprocess.run(
                    ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", spec.fqdn, "-f", str(key)], check=True
                )
        known = "".join(
            f"{s.fqdn},{s.short},{s.address} {labhosts.host_public_key(labhosts.HostPaths(self.root, s))}\n"
            for s in specs
        )
        self.known_hosts.write_text(known)
        for spec in specs:
            paths = labhosts.HostPaths(self.root, spec)
            labhosts.prepare(paths, pub, known)
            self.write_init_scripts(spec)
            labhosts.start(paths)
        log(f"{len(specs)} hosts running (sshd on 127.0.10.x:22)")

    def write_init_scripts(self, spec: HostSpec) -> None:
        """/etc/init.d as PE leaves it on this host in the current layout: pe-puppetserver
        everywhere, pe-puppetdb where PuppetDB runs (and on compilers, which run their own
        from 2019.7), pe-postgresql on the database host only."""
        settings = self.settings()
        scripts = {
            "pe-puppetserver": self.render((LAB_DIR / "templates" / "pe-puppetserver.init").read_text()),
            "pe-puppetdb": service_init("pe-puppetdb", f"{self.inhost}/bin/pelab-pe-puppetdb"),
            "pe-postgresql": service_init("pe-postgresql", f"{self.inhost}/bin/pelab-pe-postgresql"),
        }
        wanted = {
            "pe-puppetserver": True,
            "pe-puppetdb": spec.role == "compile" or settings.role_host("puppetdb") == spec,
            "pe-postgresql": settings.role_host("database") == spec,
        }
        for name, text in scripts.items():
            script = labhosts.HostPaths(self.root, spec).dir / "etc-init.d" / name
            if not wanted[name]:
                script.unlink(missing_ok=True)
                continue
            script.write_text(text)
            script.chmod(0o755)

    def apply_profile(self) -> None:
        """Make every running host look like the selected PE generation (lab/generations.py):
        the infrastructure hosts have PE installed in that generation's layout, a compile
        host that has an agent is upgraded to it (a bare one stays bare), and the PuppetDB
        and console certificate lists carry that generation's file names (an upgrade to
        2021.x renames certificate-whitelist to certificate-allowlist)."""
        profile = self.settings().profile
        install = self.inhost / "bin" / "pelab-pe-install"
        # The platform's coreutils: no timeout(1) before 7.0 (RHEL 5, SLES 11). Removed
        # through the host's /usr/bin overlay (a whiteout), put back as a copy of the real one.
        real_timeout = shlex.quote(str(self.inhost / "real" / "timeout"))
        timeout_cmd = (
            "rm -f /usr/bin/timeout"
            if not platform_for(profile.pe_version).has_timeout
            else f"test -e /usr/bin/timeout || cp {real_timeout} /usr/bin/timeout"
        )
        for spec in roster():
            if labhosts.running_pid(self.paths(spec.short)) is None:
                continue
            self.run(spec.short, ["sh", "-c", timeout_cmd])
            role = {"primary": "server", "console": "agent", "puppetdb": "agent"}.get(spec.role)
            if role is None:
                has_agent = any(
                    (self.paths(spec.short).dir / d / "bin" / "puppet").is_symlink()
                    for d in ("opt-puppetlabs", "opt-puppet")
                )
                role = "agent" if has_agent and spec.role == "compile" else None
            if role:
                self.run(spec.short, [str(install), role])
        for role in ("console", "puppetdb"):
            paths = self.paths(self.role_host(role).short)
            wanted = paths.inner(profile.console_allowlist if role == "console" else profile.puppetdb_allowlist)
            for other in other_allowlists(profile):
                old = paths.inner(other)
                if old.exists() and old.parent == wanted.parent:
                    if not wanted.exists():
                        old.rename(wanted)
                    else:
                        old.unlink()
        if not profile.file_sync_conf:  # no file sync before PE 2015.3: no list of its clients
            self.paths("primary").inner(FILE_SYNC_CONF).unlink(missing_ok=True)
        if labhosts.running_pid(self.paths("lb")) is not None:
            self.set_lb_health_check()
        database, puppetdb = self.role_host("database").short, self.role_host("puppetdb").short
        # PE-PostgreSQL's data at the generation's path; PuppetDB's allow-list setting
        # named after the generation's file (a reload re-reads both).
        if (
            labhosts.running_pid(self.paths(database)) is not None
            and (self.paths(database).dir / "pgsql" / "data" / "PG_VERSION").exists()
        ):
            self.run(database, [str(self.inhost / "bin" / "pelab-pe-postgresql"), "path"])
        if labhosts.running_pid(self.paths(puppetdb)) is not None:
            pdb = str(self.inhost / "bin" / "pelab-pe-puppetdb")
            if self.run(puppetdb, [pdb, "status"], check=False).returncode == 0:
                self.run(puppetdb, [pdb, "reload"], timeout=300)
        log(f"hosts set up as {profile.label} (Puppet {profile.puppet_major}, {profile.bin_dir})")

    # --- primary ----------------------------------------------------------------------
    def setup_primary(self, settings: LabSettings) -> None:
        p = self.paths("primary")
        primary = p.spec
        etc = p.dir / "etc-puppet"
        (etc / "puppet.conf").write_text(
            "# the lab's primary: CA and compiler (written by `lab up`)\n"
            "[main]\n"
            f"certname = {primary.fqdn}\n"
            f"server = {primary.fqdn}\n"
            f"dns_alt_names = puppet,{primary.short},{primary.fqdn}\n"
            "keylength = 2048\n"
            "http_keepalive_timeout = 0\n"
            "[server]\n"
            "node_terminus = exec\n"
            f"external_nodes = {self.inhost}/bin/pelab-enc\n"
            # Catalogs, facts and reports to the real PuppetDB (puppet-terminus-puppetdb),
            # as a PE primary stores them; by the lab's own port (inhost/puppetdb.py).
            "storeconfigs = true\n"
            "storeconfigs_backend = puppetdb\n"
            "reports = store,puppetdb\n"
            f"autosign = {self.root}/state/autosign.conf\n"
        )
        terminus = {
            "puppetdb.conf": f"[main]\nserver_urls = https://{settings.role_host('puppetdb').fqdn}:8082\n",
            "routes.yaml": "---\nserver:\n  facts:\n    terminus: puppetdb\n    cache: yaml\n",
        }
        terminus_changed = False
        for name, text in terminus.items():
            if not (etc / name).exists() or (etc / name).read_text() != text:
                (etc / name).write_text(text)
                terminus_changed = True
        autosign = self.root / "state" / "autosign.conf"
        # Every infrastructure host of any layout, and the LB: `lab up` certifies them all.
        autosign.write_text("".join(f"{h.fqdn}\n" for h in roster() if h.role != "compile"))
        autosign.chmod(0o644)
        conf_d = etc / "puppetserver" / "conf.d"
        ca_conf = (
            "certificate-authority: {\n"
            f"    allow-subject-alt-names: {str(settings.allow_alt_names).lower()}\n"
            "    allow-authorization-extensions: true\n"
            "}\n"
        )
        ca_changed = (
            terminus_changed or not (conf_d / "ca.conf").exists() or (conf_d / "ca.conf").read_text() != ca_conf
        )
        (conf_d / "ca.conf").write_text(ca_conf)
        # Puppet Server's legacy routes (`/<env>/certificate/<name>`, `/<env>/node/...`: the
        # Puppet 3 API that PE 3.x agents and tools speak, routed by every Puppet Server from
        # 2.x, pe-generations.md §2 [S16]) are in Debian's jar but not in its bootstrap.cfg.
        legacy = etc / "puppetserver" / "services.d" / "legacy-routes.cfg"
        legacy_cfg = "puppetlabs.services.legacy-routes.legacy-routes-service/legacy-routes-service\n"
        if not legacy.exists() or legacy.read_text() != legacy_cfg:
            legacy.write_text(legacy_cfg)
            ca_changed = True
        # Up to PE 2017.1 the primary serves with the CRL as of its start (web_config). The
        # very first start makes the CA, so it runs with Puppet's own CRL path, then again.
        cacrl = etc / "puppetserver" / "ca" / "ca_crl.pem"
        served_crl = settings.profile.crl_read_at_restart_only and cacrl.exists()
        if served_crl:
            served = etc / "puppetserver" / Path(SERVED_CRL).name
            if not served.exists() or not self.primary_ready(any_port=True):
                shutil.copyfile(cacrl, served)
                served.chmod(0o644)
        web = web_config(primary.address, primary.fqdn, settings.profile, str(self.root / "packages"), served_crl)
        for name, text in web.items():
            if (conf_d / name).exists() and (conf_d / name).read_text() == text:
                continue
            (conf_d / name).write_text(text)
            ca_changed = True
        cadir = etc / "puppetserver" / "ca"
        cadir.mkdir(exist_ok=True)
        self.write_code(etc / "code")
        subprocess.run(
            [
                "chown",
                "-R",
                "puppet:puppet",
                str(cadir),
                str(etc / "code"),
                str(p.dir / "var-lib-puppet"),
                str(p.dir / "var-lib-puppetserver"),
                str(p.dir / "var-log-puppetserver"),
            ],
            check=True,
        )
        if ca_changed and self.primary_ready(any_port=True):
            log("ca.conf, web routes or the PuppetDB terminus changed: reloading Puppet Server")
            self.reload_primary()
        if not self.primary_ready():
            self.start_primary()
        if settings.profile.crl_read_at_restart_only and not served_crl:
            self.setup_primary(settings)  # the CA exists now: serve with its CRL as of a start

    def write_code(self, code: Path) -> None:
        """The production environment: the lab's stand-ins for PE's profiles."""
        env = code / "environments" / "production"
        module = env / "modules" / "puppet_enterprise"
        if module.exists():
            shutil.rmtree(module)
        for src in (LAB_DIR / "templates" / "puppet_enterprise").rglob("*.pp"):
            dest = module / src.relative_to(LAB_DIR / "templates" / "puppet_enterprise")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(self.render(src.read_text()))
        (env / "manifests").mkdir(parents=True, exist_ok=True)
        site = env / "manifests" / "site.pp"
        if not site.exists():
            site.write_text("# classification comes from the console (ENC); nothing here\nnode default {}\n")

    def primary_ready(self, any_port: bool = False) -> bool:
        """The primary's Puppet Server answers its status service (on the lab's CA port
        where the generation's 8140 has none; `any_port` while switching generations)."""
        ports = {8140, LAB_CA_PORT} if any_port else {self.settings().profile.lab_ca_port}
        return any(status_simple(host_by_short("primary").fqdn, self.ca_file(), port) == "running" for port in ports)

    def ca_file(self) -> Path:
        return self.paths("primary").dir / "var-lib-puppet" / "ssl" / "certs" / "ca.pem"

    def start_primary(self) -> None:
        p = self.paths("primary")
        log("starting Puppet Server on the primary (CA + compiler)")
        self.spawn(
            "primary",
            [str(self.inhost / "real" / "puppetserver"), "foreground"],
            p.dir / "log" / "puppetserver.log",
            self.root / "run" / "primary-puppetserver.pid",
        )
        t0 = time.monotonic()
        wait_until(
            lambda: self.ca_file().exists() and self.primary_ready(),
            PUPPETSERVER_START_DEADLINE,
            f"Puppet Server on the primary did not report running; see {p.dir / 'log' / 'puppetserver.log'}",
        )
        log(f"Puppet Server running after {time.monotonic() - t0:.1f}s")

    def reload_primary(self) -> None:
        """A HUP: Trapperkeeper stops every service, re-reads the configuration (web servers
        and routes, ca.conf, the terminus) and starts them again - seconds, not a JVM start.
        Like every reload it takes the CA's CRL as of now (pelab-compile-service)."""
        p = self.paths("primary")
        served = p.dir / "etc-puppet" / "puppetserver" / Path(SERVED_CRL).name
        cacrl = p.dir / "etc-puppet" / "puppetserver" / "ca" / "ca_crl.pem"
        if served.exists() and cacrl.exists():
            shutil.copyfile(cacrl, served)
        logfile = p.dir / "log" / "puppetserver.log"
        started = "Puppet Server has successfully started"

        def starts() -> int:
            return logfile.read_text(errors="replace").count(started) if logfile.exists() else 0

        # A HUP that lands while Puppet Server is still starting may never be answered with
        # another "started" line: let a start in progress finish first (on either port: a
        # profile switch moves the CA's port only with this reload).
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: self.primary_ready(any_port=True), RELOAD_DEADLINE, "Puppet Server is not up")
        before = starts()
        self.run("primary", ["pkill", "-HUP", "-f", "puppetserver.jar"])
        try:
            wait_until(
                lambda: starts() > before and self.primary_ready(),
                RELOAD_DEADLINE,
                f"Puppet Server on the primary did not come back from its reload; see {logfile}",
            )
        except TimeoutError:
            log(f"Puppet Server's reload (HUP) did not complete in {RELOAD_DEADLINE:.0f}s: restarting it instead")
            self.stop_primary()
            self.start_primary()

    def stop_primary(self) -> None:
        pidfile = self.root / "run" / "primary-puppetserver.pid"

        def stopped() -> bool:
            return (
                not self.primary_ready(any_port=True)
                and not self.run("primary", ["pgrep", "-f", "puppetserver.jar"], check=False).stdout.strip()
            )

        self.run("primary", ["pkill", "-TERM", "-f", "puppetserver.jar"], check=False)
        try:
            wait_until(stopped, 60, "Puppet Server on the primary did not stop")
        except TimeoutError:
            log("Puppet Server did not stop on SIGTERM in 60s: killing it")
            self.run("primary", ["pkill", "-KILL", "-f", "puppetserver.jar"], check=False)
            wait_until(stopped, 30, "Puppet Server on the primary did not stop")
        pidfile.unlink(missing_ok=True)

    def kill_sshd(self, short: str) -> None:
        """Fault injection: SIGKILL every sshd of a host - its listener and each session - so
        connections drop mid-command. What those commands started may go on running, as after
        a real crash of sshd; `restart_host` brings the host back."""
        paths = self.paths(short)
        namespace = paths.nsfile.read_text().strip()
        for pid in labhosts.members(namespace):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    os.kill(pid, signal.SIGKILL)

    def restart_host(self, short: str) -> None:
        """A host back after a crash: whatever still ran in it is stopped, then it boots
        (sshd and cron; services do not start by themselves)."""
        labhosts.start(self.paths(short))

    def set_alt_names(self, allowed: bool) -> None:
        """Switch ca.conf allow-subject-alt-names and restart the CA so it takes effect."""
        settings = self.settings()
        settings.allow_alt_names = allowed
        self.save_settings(settings)
        self.setup_primary(settings)

    # --- infrastructure hosts ---------------------------------------------------------
    def bootstrap_infra_certs(self) -> None:
        """Console, PuppetDB and LB hosts get their certificates (in parallel: each is a
        few seconds of Ruby start-up on a busy machine)."""
        from concurrent.futures import ThreadPoolExecutor

        def bootstrap(short: str) -> None:
            fqdn = host_by_short(short).fqdn
            cert = self.paths(short).dir / "var-lib-puppet" / "ssl" / "certs" / f"{fqdn}.pem"
            if cert.exists():
                return
            self.puppet(short, ["config", "set", "--section", "main", "server", host_by_short("primary").fqdn])
            for setting, value in (("keylength", "2048"), ("http_keepalive_timeout", "0")):  # see install.bash
                self.puppet(short, ["config", "set", "--section", "main", setting, value])
            self.puppet(short, ["ssl", "bootstrap", "--waitforcert", "0"], timeout=180)
            log(f"{fqdn}: certificate signed by the lab CA")

        with ThreadPoolExecutor(max_workers=3) as pool:
            for future in [pool.submit(bootstrap, s) for s in ("console", "puppetdb", "lb")]:
                future.result()

    def start_database(self) -> None:
        """PE-PostgreSQL on the database host, then the real PuppetDB on PuppetDB's host
        (not waited for here: its JVM takes ~40 s, which the console, LB and control repo
        steps overlap)."""
        database, puppetdb = self.role_host("database"), self.role_host("puppetdb")
        self.run(database.short, [str(self.inhost / "bin" / "pelab-pe-postgresql"), "start"], timeout=180)
        self.run(puppetdb.short, [str(self.inhost / "bin" / "pelab-pe-puppetdb"), "start"], timeout=120)
        log(f"PE-PostgreSQL running on {database.short}; PuppetDB starting on {puppetdb.short}")

    def wait_for_puppetdb(self) -> None:
        t0 = time.monotonic()
        short = self.role_host("puppetdb").short
        self.run(short, [str(self.inhost / "bin" / "pelab-pe-puppetdb"), "start", "--wait"], timeout=360)
        log(f"PuppetDB running (waited {time.monotonic() - t0:.1f}s)")

    def set_layout(self, layout: str) -> None:
        """Move PuppetDB, PE-PostgreSQL and the console to the hosts of another layout.

        Not a PE procedure (PE moves infrastructure only by reinstalling or migrating): the
        lab's switch, so tests can run each generation in its common architecture. A role
        that moves stops on its old host (init script removed) and starts on the new one
        with that host's data - a database that is new there starts empty, as a fresh
        install's does; the console keeps its state and points its infrastructure groups at
        the new hosts when it starts (inhost/console.py). The infrastructure runs follow."""
        settings = self.settings()
        after = LabSettings(**{**settings.__dict__, "layout": layout})
        if after.active_layout not in settings.profile.layouts:
            raise ValueError(
                f"{settings.profile.label} has no {after.active_layout} architecture "
                f"(it has: {', '.join(settings.profile.layouts)}; lab/generations.py Profile.layouts)"
            )
        if after.active_layout == settings.active_layout:
            self.save_settings(after)
            return
        before = {role: settings.role_host(role) for role in INFRA_ROLES}
        moved = [role for role in INFRA_ROLES if after.role_host(role) != before[role]]
        if "database" in moved:  # PuppetDB connects to the database at start: it starts again
            self.stop_role("puppetdb", before["puppetdb"])
        self.save_settings(after)
        self.place_roles()
        log(f"layout {settings.active_layout} -> {after.active_layout}: {', '.join(moved)} moved")

    def set_pe_version(self, version: str) -> None:
        """Switch the running lab to another generation's profile (lab/generations.py). A
        layout the new generation lacks is migrated to its common one first, as PE has an
        admin migrate a split install before upgrading to 2019.2 (Profile.layouts); a
        switch of version alone moves nothing."""
        settings = self.settings()
        target = LabSettings(**{**settings.__dict__, "pe_version": version})
        if target.active_layout not in target.profile.layouts:
            log(f"{target.profile.label} has no {target.active_layout} architecture: migrating first")
            self.set_layout(target.profile.layouts[0])
            settings = self.settings()
        running = settings.active_layout
        settings.pe_version = version
        if settings.active_layout != running:
            settings.layout = running
        self.save_settings(settings)
        self.setup_primary(settings)  # its web routes are the generation's
        self.apply_profile()

    def stop_strays(self) -> None:
        """Stop each infrastructure role on the hosts the layout does not give it (a lab
        that ran another layout), and leave each host the init scripts of its roles."""
        settings = self.settings()
        for spec in roster():
            if spec.role == "compile" or labhosts.running_pid(self.paths(spec.short)) is None:
                continue
            for role in ("console", "puppetdb", "database"):  # clients before their database
                if settings.role_host(role) != spec:
                    self.stop_role(role, spec)
            self.write_init_scripts(spec)

    def place_roles(self) -> None:
        """PuppetDB, PE-PostgreSQL and the console where the layout puts them and nowhere
        else (a role stops on a host that no longer holds it, its init script removed),
        then the infrastructure runs."""
        self.stop_strays()
        self.setup_primary(self.settings())  # the PuppetDB terminus, and the profiles' manifests
        self.setup_control_repo()  # which name the layout's hosts
        self.bootstrap_infra_certs()
        self.start_database()
        self.start_console_and_puppetdb()
        self.wait_for_puppetdb()
        self.infra_runs()

    def stop_role(self, role: str, host: HostSpec) -> None:
        """Stop one infrastructure role's services on a host that no longer holds it."""
        if labhosts.running_pid(self.paths(host.short)) is None:
            return
        if role == "database":
            if (self.paths(host.short).dir / "pgsql" / "data" / "PG_VERSION").exists():
                self.run(host.short, [str(self.inhost / "bin" / "pelab-pe-postgresql"), "stop"], timeout=120)
            return
        if role == "puppetdb":
            self.run(host.short, [str(self.inhost / "bin" / "pelab-pe-puppetdb"), "stop"], timeout=120)
        script, port = ("console", 4433) if role == "console" else ("puppetdb", 8081)
        self.stop_spawned(self.root / "run" / f"{host.short}-{script}.pid", host.address, port)

    def stop_spawned(self, pidfile: Path, address: str, port: int) -> None:
        """Stop a service `spawn` started (its process group), and whatever else still
        listens on its address and port (a lab started before pidfiles had these names)."""
        pids = set()
        with contextlib.suppress(FileNotFoundError, ValueError):
            pids.add(int(pidfile.read_text()))
        listeners = subprocess.run(
            ["ss", "-ltnpH", f"src {address} and sport = :{port}"], capture_output=True, text=True
        ).stdout
        pids |= {int(pid) for pid in re.findall(r"pid=(\d+)", listeners)}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(os.getpgid(pid), signal.SIGTERM)
        pidfile.unlink(missing_ok=True)
        wait_until(lambda: not port_open(address, port), 30, f"{address}:{port} still listening after its stop")

    def start_console_and_puppetdb(self) -> None:
        secret = self.root / "state" / "console-admin.json"
        if not secret.exists():
            import secrets as pysecrets

            secret.write_text(json.dumps({"login": "admin", "password": pysecrets.token_urlsafe(18)}))
            secret.chmod(0o600)
        settings = self.settings()
        infra = "".join(f"{n}\n" for n in infra_certnames(settings.layout))
        profile = settings.profile
        for role, path in (("console", profile.console_allowlist), ("puppetdb", profile.puppetdb_allowlist)):
            wl = self.paths(settings.role_host(role).short).inner(path)
            if not wl.exists():  # PE's installer seeds them with the infrastructure nodes
                wl.parent.mkdir(parents=True, exist_ok=True)
                wl.write_text(infra)
        for role, script, port in (("console", "console", 4433), ("puppetdb", "puppetdb", 8081)):
            spec = settings.role_host(role)
            if port_open(spec.address, port):
                continue
            self.spawn(
                spec.short,
                ["/usr/bin/python3", str(self.inhost / f"{script}.py")],
                self.paths(spec.short).dir / "log" / f"{script}.log",
                self.root / "run" / f"{spec.short}-{script}.pid",  # one per service: both may share a host
            )
            wait_until(functools.partial(port_open, spec.address, port), 30, f"{role} service did not listen on {port}")
        log("console (4433) and PuppetDB's front (8081) running")
        self.write_access_token()

    def console_request(
        self, method: str, path: str, body: dict[str, str] | None, token: str = ""
    ) -> tuple[int, bytes]:
        import http.client

        ctx = ssl.create_default_context(cafile=str(self.ca_file()))
        conn = http.client.HTTPSConnection(self.role_host("console").fqdn, 4433, context=ctx, timeout=30)
        headers = {"Content-Type": "application/json", **({"X-Authentication": token} if token else {})}
        try:
            conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def write_access_token(self) -> None:
        """`puppet access login --lifetime 1y` for the lab: an RBAC token in keys/rbac-token,
        which the lab stack (Pulumi.lab.yaml, pe:rbacTokenFile) reads as a secret."""
        path = self.root / "keys" / "rbac-token"
        if path.exists():
            status, _ = self.console_request("GET", "/classifier-api/v1/groups", None, path.read_text().strip())
            if status == 200:
                return
        credentials = json.loads((self.root / "state" / "console-admin.json").read_text())
        status, body = self.console_request("POST", "/rbac-api/v1/auth/token", {**credentials, "lifetime": "1y"})
        if status != 200:  # PE before 2015.3 has no tokens: the lab stack then needs a client cert
            path.unlink(missing_ok=True)
            return
        path.write_text(json.loads(body)["token"] + "\n")
        path.chmod(0o600)

    def setup_lb(self) -> None:
        p = self.paths("lb")
        etc = p.dir / "etc-haproxy"
        cfg = etc / "haproxy.cfg"
        if "pelab" not in (cfg.read_text() if cfg.exists() else ""):
            cfg.write_text(haproxy_cfg(p.spec.address))
        self.set_lb_health_check()
        shutil.copy2(self.ca_file(), etc / "pe-ca.pem")
        if not port_open(p.spec.address, 8140):
            self.run("lb", ["haproxy", "-c", "-q", "-f", "/etc/haproxy/haproxy.cfg"])
            self.run("lb", ["service", "haproxy", "start"])
            wait_until(lambda: port_open(p.spec.address, 8140), 20, "HAProxy did not listen on 8140")
        log("HAProxy 8140 frontend running on lb")

    def set_lb_health_check(self) -> None:
        """The pool's health check the generation allows (with_health_check), reloading
        HAProxy if it runs and the check changed (servers saved in the file are kept)."""
        cfg = self.paths("lb").dir / "etc-haproxy" / "haproxy.cfg"
        if not cfg.exists():
            return
        text = cfg.read_text()
        wanted = with_health_check(text, self.settings().profile.status_simple)
        if wanted == text:
            return
        cfg.write_text(wanted)
        if port_open(self.paths("lb").spec.address, 8140):
            self.run("lb", ["haproxy", "-c", "-q", "-f", "/etc/haproxy/haproxy.cfg"])
            self.run("lb", ["service", "haproxy", "reload"])

    def setup_control_repo(self) -> None:
        """A local git control repo (branch = environment) for r10k, as PE users keep one,
        holding what the primary's production environment holds: the lab's profile
        manifests name the layout's hosts, so a change there is committed and pushed, as a
        user pushes a change to their control repo."""
        repo = self.root / "git" / "control-repo.git"
        work = self.root / "git" / "control-repo.work"
        if work.exists():
            shutil.rmtree(work)
        src = self.paths("primary").dir / "etc-puppet" / "code" / "environments" / "production"
        git = ["git", "-C", str(work), "-c", "user.name=pelab", "-c", "user.email=pelab@pelab.test"]
        if repo.exists():
            subprocess.run(["git", "clone", "-q", "-b", "production", str(repo), str(work)], check=True)
            for entry in work.iterdir():
                if entry.name != ".git":
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            shutil.copytree(src, work, dirs_exist_ok=True)
        else:
            shutil.copytree(src, work)
            subprocess.run(["git", "init", "-q", "-b", "production", str(work)], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        if subprocess.run([*git, "diff", "--cached", "--quiet"]).returncode != 0 or not repo.exists():
            subprocess.run([*git, "commit", "-q", "-m", "production environment"], check=True)
            if repo.exists():
                subprocess.run([*git, "push", "-q", "origin", "production"], check=True)
            else:
                subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True)
        shutil.rmtree(work)

    def agent_run(self, short: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`puppet agent -t` on a host; exit 0 or 2 is success (detailed exit codes)."""
        proc = self.puppet(short, ["agent", "--test", "--detailed-exitcodes"], check=False, timeout=timeout)
        if proc.returncode not in (0, 2):
            raise RuntimeError(
                f"[{short}] puppet agent -t exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
            )
        return proc

    # --- knobs, status, down, reset -------------------------------------------------------
    def set_knobs(self, knobs: dict[str, float]) -> None:
        settings = self.settings()
        settings.knobs.update(knobs)
        self.save_settings(settings)

    def status(self) -> dict[str, str]:
        profile = self.settings().profile
        out = {"profile": f"{profile.label} (Puppet {profile.puppet_major}, {profile.bin_dir})"}
        for spec in roster():
            pid = labhosts.running_pid(labhosts.HostPaths(self.root, spec))
            out[spec.short] = f"up (sshd pid {pid})" if pid else "down"
        if out.get("primary", "").startswith("up"):
            out["puppetserver"] = "running" if self.primary_ready() else "not running"
        rss = self.memory_kib()
        out["memory"] = f"{rss / 1024:.0f} MiB resident in {self.process_count()} lab processes"
        return out

    def _members(self) -> list[int]:
        pids: list[int] = []
        for spec in roster():
            nsfile = labhosts.HostPaths(self.root, spec).nsfile
            if nsfile.exists():
                pids += labhosts.members(nsfile.read_text().strip())
        return pids

    def process_count(self) -> int:
        return len(self._members())

    def memory_kib(self) -> int:
        """Resident memory of every process of every lab host (VmRSS, KiB)."""
        total = 0
        for pid in self._members():
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total

    def down(self) -> None:
        for spec in reversed(roster()):
            labhosts.stop(labhosts.HostPaths(self.root, spec))
        for pidfile in (self.root / "run").glob("*.pid") if (self.root / "run").exists() else []:
            pidfile.unlink()
        text = ETC_HOSTS.read_text()
        new = replace_etc_hosts_block(text, None)
        if new != text:
            with open(ETC_HOSTS, "w") as f:
                f.write(new)
        labhosts.remove_created_mountpoints(self.root)
        record = self.root / "run" / "created-nfs-helper"
        if record.exists():
            Path(NFS_HELPER).unlink(missing_ok=True)
            record.unlink()
        log("down: no lab processes, /etc/hosts block removed")

    def leftovers(self) -> list[str]:
        """What a `lab down` must not leave behind: processes, listeners, /etc/hosts lines,
        mounts, created mount points and helpers. Empty means clean."""
        found = []
        for spec in roster():
            paths = labhosts.HostPaths(self.root, spec)
            if labhosts.running_pid(paths) or paths.nsfile.exists():
                found.append(f"host {spec.short} still recorded as running")
            if port_open(spec.address, 22):
                found.append(f"something listens on {spec.address}:22")
        ss = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True).stdout
        found += [f"listener {line.split()[3]}" for line in ss.splitlines() if " 127.0.10." in f" {line.split()[3]}"]
        if ETC_HOSTS.read_text().count("pelab") > 0:
            found.append("/etc/hosts still has pelab lines")
        mounts = Path("/proc/self/mountinfo").read_text()
        if str(self.root) in mounts:
            found.append(f"a mount under {self.root} in the machine's namespace")
        for mountpoint in labhosts.CREATED_MOUNTPOINTS:
            if (self.root / "run" / "created-mountpoints").exists() and os.path.isdir(mountpoint):
                found.append(f"{mountpoint} created by the lab is still there")
        if Path(NFS_HELPER).is_symlink() and os.readlink(NFS_HELPER).endswith("/inhost/bin/pelab-mount-nfs"):
            found.append(f"{NFS_HELPER} (the lab's NFS helper) is still installed")
        return found

    def reset(self) -> None:
        self.down()
        if self.root.exists():
            shutil.rmtree(self.root)
        log(f"reset: {self.root} removed")


HTTP_CHECK = "    option httpchk GET /status/v1/simple\n    http-check expect string running\n"
TLS_CHECK = "    # PE 3.x: Puppet Server < 2.6 has no /status/v1/simple; the check is a verified TLS handshake\n"


PUPPETSERVER_SERVICES = {
    "ca": "puppetlabs.services.ca.certificate-authority-service/certificate-authority-service",
    "master": "puppetlabs.services.master.master-service/master-service",
    "legacy": "puppetlabs.services.legacy-routes.legacy-routes-service/legacy-routes-service",
    "admin": "puppetlabs.services.puppet-admin.puppet-admin-service/puppet-admin-service",
    "status": "puppetlabs.trapperkeeper.services.status.status-service/status-service",
    "metrics": "puppetlabs.trapperkeeper.services.metrics.metrics-service/metrics-webservice",
}


def web_config(address: str, fqdn: str, profile: Profile, packages: str, served_crl: bool) -> dict[str, str]:
    """The primary's webserver.conf and web-routes.conf for a generation.

    PE 3.x's Puppet Server 1.x served neither `/puppet-ca/v1` nor a status service on 8140
    (pe-generations.md §2 [S15,S16]), so there the CA and status routes move to a second
    server on the lab's CA port: Trapperkeeper's web routing takes `{route, server}` per
    service ("Configuring the Webrouting Service", trapperkeeper-webserver-jetty9's docs).
    Legacy `/<env>/...` routes (the CA's old API) stay on 8140, with the master's.

    `served_crl`: up to PE 2017.1 Puppet Server re-read the CRL only when restarted or
    reloaded (PE's node deactivation pages [S38]), while Puppet Server 7's CA updates the
    CRL it serves with at once; so 8140 verifies clients against the copy taken at start
    or reload (pelab-compile-service, SERVED_CRL). Puppet Server fills in TLS files from
    puppet.conf only when none is named, so a server that names one names all four (the
    same hostcert, hostprivkey and localcacert)."""
    ssl_dir = "/var/lib/puppet/ssl"

    def tls(crl: str, indent: str) -> str:
        return "".join(
            f"{indent}{k}: {v}\n"
            for k, v in (
                ("ssl-cert", f"{ssl_dir}/certs/{fqdn}.pem"),
                ("ssl-key", f"{ssl_dir}/private_keys/{fqdn}.pem"),
                ("ssl-ca-cert", f"{ssl_dir}/certs/ca.pem"),
                ("ssl-crl-path", crl),
            )
        )

    def main(indent: str) -> str:
        """8140. Named TLS files where it serves a copy of the CRL or is not the default
        server (which alone Puppet Server fills in)."""
        named = served_crl or not profile.ca_v1_api
        return (
            f"{indent}access-log-config: /etc/puppet/puppetserver/request-logging.xml\n"
            f"{indent}client-auth: want\n"
            f"{indent}ssl-host: {address}\n"
            f"{indent}ssl-port: 8140\n"
            f'{indent}static-content: [{{resource: "{packages}", path: "/packages"}}]\n'
            + (tls(SERVED_CRL if served_crl else f"{ssl_dir}/crl.pem", indent) if named else "")
        )

    routes = {
        "ca": '"/puppet-ca"',
        "master": '"/puppet"',
        "legacy": '""',
        "admin": '"/puppet-admin-api"',
        "status": '"/status"',
        "metrics": '"/metrics"',
    }
    if profile.ca_v1_api:
        webserver = "webserver: {\n" + main("    ") + "}\n"
    else:
        # The lab's port is the default server: Puppet Server overrides the default server's
        # TLS files (ssl-crl-path = hostcrl, which its CA rewrites on every revocation and
        # Jetty then reloads), so 8140, a named server, keeps the served CRL it names.
        webserver = (
            "webserver: {\n    main: {\n" + main("        ") + "    }\n"
            "    # the lab's own route to /puppet-ca/v1 and /status (no PE 3.x had them on 8140)\n"
            f"    lab: {{\n        client-auth: want\n        ssl-host: {address}\n        ssl-port: {LAB_CA_PORT}\n"
            + tls(f"{ssl_dir}/crl.pem", "        ")
            + "        default-server: true\n    }\n}\n"
        )
        routes = {k: "{route: " + v + ', server: "main"}' for k, v in routes.items()}
        routes["ca"] = '"/puppet-ca"'  # the default server: the lab's port
        routes["status"] = '"/status"'
    web_routes = (
        f"# written by `lab up` for {profile.label}\nweb-router-service: {{\n"
        + "".join(f'    "{PUPPETSERVER_SERVICES[k]}": {v}\n' for k, v in routes.items())
        + "}\n"
    )
    return {"webserver.conf": webserver, "web-routes.conf": web_routes}


# Inside a host: the copy of the CA's CRL its Puppet Server verifies clients against
# (lab/inhost/pelab_common.py SERVED_CRL).
SERVED_CRL = "/etc/puppet/puppetserver/pelab-served-crl.pem"


def with_health_check(cfg: str, status_simple: bool) -> str:
    """The backend's health check for a generation: `GET /status/v1/simple` where Puppet
    Server has it (2.6.0+, PE 2016.4+), else the TLS handshake that the servers' own
    `check check-ssl verify required` keywords make without `option httpchk`."""
    text = cfg.replace(HTTP_CHECK, "").replace(TLS_CHECK, "")
    anchor = "    balance leastconn\n"
    return text.replace(anchor, anchor + (HTTP_CHECK if status_simple else TLS_CHECK), 1)


def haproxy_cfg(address: str) -> str:
    """HAProxy in front of the compile masters, as PE documents: TCP on 8140, health check
    `GET /status/v1/simple` over TLS verified against the PE CA (setup_lb adjusts it to
    the generation), least connections."""
    return f"""# pelab load balancer (HAProxy 2.6): the compile masters' 8140 pool
global
    log /dev/log local0 warning
    stats socket /run/haproxy/admin.sock mode 660 level admin expose-fd listeners
    stats timeout 30s
    daemon

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 5s
    timeout client 2m
    timeout server 2m

frontend puppet_8140
    bind {address}:8140
    default_backend puppet_compilers

backend puppet_compilers
    balance leastconn
{HTTP_CHECK.rstrip()}
    default-server inter 1s fall 2 rise 1 check check-ssl verify required ca-file /etc/haproxy/pe-ca.pem
"""


def service_init(name: str, program: str) -> str:
    """A SysV init script for one of PE's services in a lab host, so `service <name> ...`
    (PE: `systemctl ... <name>`) drives the lab's program for it."""
    return (
        "#!/bin/sh\n"
        "### BEGIN INIT INFO\n"
        f"# Provides:          {name}\n"
        "# Required-Start:    $remote_fs\n"
        "# Required-Stop:     $remote_fs\n"
        "# Default-Start:     2 3 4 5\n"
        "# Default-Stop:      0 1 6\n"
        f"# Short-Description: PE's {name} (the lab's)\n"
        "### END INIT INFO\n"
        f'exec "{program}" "$@"\n'
    )


def port_open(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((address, port)) == 0


def status_simple(host: str, cafile: Path, port: int = 8140) -> str | None:
    """Body of https://host:port/status/v1/simple verified against the CA, or None."""
    import http.client

    if not cafile.exists():
        return None
    try:
        ctx = ssl.create_default_context(cafile=str(cafile))
        conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=5)
        conn.request("GET", "/status/v1/simple")
        body = conn.getresponse().read().decode().strip()
        conn.close()
        return body
    except (OSError, ssl.SSLError):
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, message: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    if not predicate():
        raise TimeoutError(f"{message} (waited {timeout:.0f}s)")
