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
from pathlib import Path

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
