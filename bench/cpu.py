"""Where the machine's CPU goes during a bench phase, by lab host role and process kind.

Read from /proc: each process's own CPU time plus that of its children it has reaped
(`cutime`/`cstime`). Every lab host runs its own sshd listener (lab/hosts.py), whose
sessions are its children: when a provider call's connection closes, the listener reaps
it, so "commands over SSH" on a host is everything the provider ran there (Ruby
start-ups, agent runs in the foreground, CSR loops). Daemons those commands start
(the agent service, compile services, PuppetDB) are reparented and counted as
themselves. Processes that ended without a living parent to reap them are not seen.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")
Snapshot = dict[tuple[int, int], tuple[str, float]]  # (pid, start time) -> (role, CPU-s so far)
LISTENER = re.compile(r"^sshd: .*hosts/(\w+)/ssh/sshd_config")
KINDS = (
    (LISTENER, "commands over SSH"),
    (re.compile(r"--onetime"), "commands over SSH"),  # a foreground agent run, its session still open
    (re.compile(r"puppet agent"), "agent service"),
    (re.compile(r"java .*puppetserver"), "Puppet Server"),
    (re.compile(r"java "), "PuppetDB"),
    (re.compile(r"^postgres"), "PostgreSQL"),
    (re.compile(r"inhost/(\w+)\.py"), "stand-in"),
    (re.compile(r"-m pulumi\.dynamic"), "provider server"),
    (re.compile(r"-m bench"), "bench harness"),
    (re.compile(r"haproxy"), "HAProxy"),
)


def _role(cmdline: str, host: str) -> str:
    for pattern, kind in KINDS:
        found = pattern.search(cmdline)
        if found:
            if kind == "stand-in":
                return f"{host}: {found.group(1)} stand-in"
            return f"{host}: {kind}" if host else kind
    # anything else in a host's namespace was started by a command over SSH, still running
    return f"{host}: commands over SSH" if host else "other"


def _host_kind(short: str) -> str:
    return "compile hosts" if short.startswith("compile") else short


def snapshot() -> Snapshot:
    """Every process's CPU-seconds so far (own + reaped children) with its role."""
    procs = []
    namespaces: dict[str, str] = {}  # mount namespace -> lab host role
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            ns = os.readlink(stat.parent / "ns" / "mnt")
        except (OSError, IndexError):
            continue  # ended meanwhile, or a kernel thread
        if not cmdline:
            continue
        cpu = sum(int(v) for v in fields[11:15]) / TICK
        procs.append((int(stat.parent.name), int(fields[19]), cmdline, ns, cpu))
        listener = LISTENER.search(cmdline)
        if listener:
            namespaces[ns] = _host_kind(listener.group(1))
    out: Snapshot = {}
    for pid, started, cmdline, ns, cpu in procs:
        host = namespaces.get(ns, "")
        out[(pid, started)] = (_role(cmdline, host) if host or "sshd" not in cmdline else "other", cpu)
    return out


def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU-seconds by role between two snapshots (a process new in `after` counts whole)."""
    out: dict[str, float] = {}
    for key, (role, cpu) in after.items():
        delta = cpu - before.get(key, (role, 0.0))[1]
        if delta > 0:
            out[role] = out.get(role, 0.0) + delta
    return out


# What a compile host's command buys, by its command line (first match). The sampler below
# reads each process's own CPU: the listener's reaped total cannot tell one command from another.
PURPOSES = (
    (re.compile(r"puppet agent --onetime"), "agent runs in the foreground (first run, master run)"),
    (re.compile(r"puppet agent: applying"), "the agent service's own run at its start"),
    (re.compile(r"puppet agent\b"), "the agent service's start-up (PE leaves it running)"),
    (re.compile(r"puppet (ssl submit_request|certificate generate)"), "CSR submission (`puppet ssl`)"),
    (re.compile(r"config print csr_attributes certname hostcert"), "install.bash stand-in (lab)"),
    (re.compile(r"puppet config print"), "agent settings read (`puppet config print`)"),
    (re.compile(r"pelab-(pe-install|delay|config-set)|install\.bash"), "install.bash stand-in (lab)"),
    (re.compile(r"pelab-compile-service|compile_standin"), "compile service (lab stand-in) and its checks"),
    (re.compile(r"pelab-pe-puppetdb|compiler_puppetdb"), "compiler PuppetDB (lab stand-in) and its checks"),
    (re.compile(r"psql"), "PE-PostgreSQL access checks (psql)"),
    (re.compile(r"^(ssh|rsync) "), "code sync (ssh, rsync)"),
    (re.compile(r"^(curl|openssl) "), "TLS probes and downloads (curl, openssl)"),
    (re.compile(r"^sshd"), "SSH sessions (sshd)"),
)


# The Pulumi side of a run through the real CLI, wherever it runs (not in a lab host): the
# Go engine, the program's host (scripts/pulumi's Python, pulumicli/) and the dynamic
# provider's server. Sampled, because each ends before the run does (its CPU then goes to
# whoever reaps it).
ENGINE = (
    (re.compile(r"/pulumi (up|preview|refresh|destroy|update|pre)\b"), "Pulumi CLI (Go engine)"),
    (re.compile(r"-m pulumicli\b"), "program host (pulumicli)"),
    (re.compile(r"-m pulumi\.dynamic\b"), "provider server (the product)"),
)


def engine_kind(cmdline: str) -> str | None:
    return next((label for pattern, label in ENGINE if pattern.search(cmdline)), None)


def purpose_of(cmdline: str) -> str:
    return next((label for pattern, label in PURPOSES if pattern.search(cmdline)), "other commands")


def machine_busy_seconds() -> float:
    """Busy CPU-seconds of the machine since boot (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


def sample(out: Path, interval: float = 0.2, host_prefix: str = "compile") -> None:
    """Until SIGTERM, every `interval` s: the own CPU time (utime + stime) of each process in
    a lab host whose name starts with host_prefix, and the machine's busy CPU-seconds; then
    {"purposes": {purpose: CPU-s}, "busy": [[monotonic time, busy CPU-s], ...]} as JSON into
    `out`. A process that lives less than `interval` may be missed (cheap ones: the caller
    compares with the listeners' reaped total). A command line is read once per process."""
    import json
    import signal
    import time

    stopped = False

    def stop(*_: object) -> None:
        nonlocal stopped
        stopped = True

    signal.signal(signal.SIGTERM, stop)
    seen: dict[tuple[int, int], list[Any]] = {}  # (pid, start) -> [(namespace, cmdline) or None, CPU-s, at start]
    hosts: dict[str, bool] = {}  # mount namespace -> is one of the sampled hosts
    busy: list[tuple[float, float]] = []
    first = True
    while not stopped:
        busy.append((time.monotonic(), machine_busy_seconds()))
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                key = (int(stat.parent.name), int(fields[19]))
                entry = seen.get(key)
                if entry is None:
                    cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    ns = os.readlink(stat.parent / "ns" / "mnt")
                    listener = LISTENER.search(cmdline)
                    if listener:
                        hosts[ns] = listener.group(1).startswith(host_prefix)
                    entry = seen[key] = [None if listener else (ns, cmdline.strip()), 0.0, 0.0]
                entry[1] = (int(fields[11]) + int(fields[12])) / TICK
                if first:
                    entry[2] = entry[1]  # running before the phase: only what it spends from now
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile, or a kernel thread
        first = False
        time.sleep(interval)
    busy.append((time.monotonic(), machine_busy_seconds()))
    totals: dict[str, float] = {}
    engine: dict[str, float] = {}
    for what, cpu, before in seen.values():
        if what is not None and hosts.get(what[0]) and what[1]:
            label = purpose_of(what[1])
            totals[label] = totals.get(label, 0.0) + cpu - before
        kind = engine_kind(what[1]) if what is not None else None
        if kind is not None:
            engine[kind] = engine.get(kind, 0.0) + cpu - before
    out.write_text(json.dumps({"purposes": totals, "busy": busy, "engine": engine}))


@dataclass
class Sampled:
    """What sample() saw during a block (filled when the block ends)."""

    purposes: dict[str, float] = field(default_factory=dict)  # compile hosts' CPU-s by purpose
    busy: list[tuple[float, float]] = field(default_factory=list)  # (monotonic time, machine busy CPU-s)
    own_cpu: float = 0.0  # the sampler's own CPU-s (to leave out of every figure)
    engine: dict[str, float] = field(default_factory=dict)  # the Pulumi side's CPU-s by process (ENGINE)

    def busy_between(self, start: float, end: float) -> float:
        """The machine's busy CPU-s between two monotonic times (the nearest samples)."""

        def at(t: float) -> float:
            return min(self.busy, key=lambda sample: abs(sample[0] - t))[1] if self.busy else 0.0

        return at(end) - at(start)

    def work_between(self, start: float, end: float) -> float:
        """busy_between less the sampler's own CPU-s over that stretch (pro rata)."""
        sampled = self.busy[-1][0] - self.busy[0][0] if len(self.busy) > 1 else 0.0
        own = self.own_cpu * (end - start) / sampled if sampled > 0 else 0.0
        return self.busy_between(start, end) - own


@contextmanager
def sampling(out: Path) -> Iterator[Sampled]:
    """sample() in a process of its own (the harness's threads keep the GIL) for the block."""
    import json
    import subprocess
    import sys

    out.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, "-m", "bench.cpu", str(out)])
    found = Sampled()
    try:
        yield found
    finally:
        fields = Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()
        child.terminate()
        child.wait(30)
        data = json.loads(out.read_text()) if out.exists() else {}
        found.purposes = data.get("purposes", {})
        found.busy = [(t, b) for t, b in data.get("busy", [])]
        found.own_cpu = (int(fields[11]) + int(fields[12])) / TICK
        found.engine = data.get("engine", {})


if __name__ == "__main__":
    import sys

    sample(Path(sys.argv[1]))
