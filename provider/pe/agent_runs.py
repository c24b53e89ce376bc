"""Puppet agent runs over SSH, shared by every resource that runs Puppet on a host
(PeCompileMaster's first and master runs, InfraRefresh's PuppetDB and console runs).

A run that another run already holds the lock for is waited out within the deadline (a
stale lock whose process is gone is removed); `--detailed-exitcodes` 0 and 2 succeed.
`puppet` is always run by its absolute path: a non-login SSH shell's PATH on PE hosts is
/usr/local/bin:/usr/bin:/bin, and the lock is the agent's own `agent_catalog_run_lockfile`
(both differ between PE generations, pe-generations.md §1 and §4).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence

from provider.core.command import CommandResult, RemoteCommandError
from provider.core.errors import DeadlineError, ProviderError
from provider.pe.generation import PUPPET_BINARIES
from provider.ssh.session import SshSession

RUN_FLAGS = ["--onetime", "--no-daemonize", "--no-usecacheonfailure", "--no-splay", "--detailed-exitcodes", "--verbose"]
RUN_LOCK_SETTING = "agent_catalog_run_lockfile"  # every generation; default $statedir/agent_catalog_run.lock


def file_exists(session: SshSession, path: str) -> bool:
    return session.run(["test", "-s", path], timeout=60).exit_status == 0


def wait_for_run_lock(session: SshSession, lock: str, deadline: float, log: Callable[[str, str], None]) -> None:
    """A Puppet run already in progress holds the lock: wait it out (within the deadline)."""
    waited = False
    while file_exists(session, lock):
        pid = session.run(["cat", lock], timeout=30).stdout.strip()
        alive = pid.isdigit() and session.run(["kill", "-0", pid], timeout=30).exit_status == 0
        if not alive:
            log("agent run", f"removing a stale run lock (pid {pid or '?'} is gone)")
            session.run(["rm", "-f", lock], timeout=30).check("remove stale run lock")
            return
        if time.monotonic() > deadline:
            raise DeadlineError(
                f"[{session.target.label}] step 'agent run': another Puppet run (pid {pid}) still "
                "holds the run lock at the deadline; wait for it or raise run_timeout"
            )
        if not waited:
            log("agent run", f"another Puppet run (pid {pid}) holds the lock; waiting")
            waited = True
        time.sleep(2)


def probe_script(paths: Sequence[str] = PUPPET_BINARIES) -> str:
    """Prints each of `paths` that is an executable on the host, in order (one SSH command)."""
    words = " ".join(shlex.quote(p) for p in paths)
    return f'for p in {words}; do if test -x "$p"; then echo "$p"; fi; done'


def parse_probe(stdout: str, paths: Sequence[str] = PUPPET_BINARIES) -> list[str]:
    """The probed paths the host reported, in the probe's order (nothing else it printed)."""
    seen = {line.strip() for line in stdout.splitlines()}
    return [p for p in paths if p in seen]


def locate_puppet(session: SshSession, paths: Sequence[str] = PUPPET_BINARIES) -> str:
    """The host's `puppet`, for a host whose PE version is not an input: AIO's first, then
    PE 3.x's (pe-generations.md §1). Neither there: fail naming the host and both paths."""
    result = session.run(probe_script(paths), timeout=60)
    result.check("locate the Puppet agent")
    found = parse_probe(result.stdout, paths)
    if not found:
        raise ProviderError(
            f"[{session.target.label}] no Puppet agent: neither {' nor '.join(paths)} is an executable there; "
            "is this a PE node (the PuppetDB or console host)?"
        )
    return found[0]


def agent_run(
    session: SshSession, step: str, timeout: float, log: Callable[[str, str], None], lock: str, puppet_bin: str
) -> CommandResult:
    """`<puppet_bin> agent --onetime ... --detailed-exitcodes`: 0 and 2 are success.
    `lock`: the host's agent_catalog_run_lockfile."""
    deadline = time.monotonic() + timeout
    while True:
        wait_for_run_lock(session, lock, deadline, log)
        result = session.run([puppet_bin, "agent", *RUN_FLAGS], timeout=max(30.0, deadline - time.monotonic()))
        if result.exit_status in (0, 2):
            return result
        if "already in progress" in result.stdout + result.stderr and time.monotonic() < deadline:
            time.sleep(2)
            continue
        raise RemoteCommandError(result, step, "the Puppet run failed; its last lines are below")
