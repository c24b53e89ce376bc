"""Puppet agent runs over SSH, shared by every resource that runs Puppet on a host
(PeCompileMaster's first and master runs, InfraRefresh's PuppetDB and console runs).

A run that another run already holds the lock for is waited out within the deadline (a
stale lock whose process is gone is removed); `--detailed-exitcodes` 0 and 2 succeed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from provider.errors import DeadlineError, RemoteCommandError
from provider.ssh import CommandResult, SshSession

RUN_FLAGS = ["--onetime", "--no-daemonize", "--no-usecacheonfailure", "--no-splay", "--detailed-exitcodes", "--verbose"]
DEFAULT_RUN_LOCK = "/var/cache/puppet/state/agent_catalog_run.lock"


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


def agent_run(
    session: SshSession, step: str, timeout: float, log: Callable[[str, str], None], lock: str = DEFAULT_RUN_LOCK
) -> CommandResult:
    """`puppet agent --onetime ... --detailed-exitcodes`: 0 and 2 are success."""
    deadline = time.monotonic() + timeout
    while True:
        wait_for_run_lock(session, lock, deadline, log)
        result = session.run(["puppet", "agent", *RUN_FLAGS], timeout=max(30.0, deadline - time.monotonic()))
        if result.exit_status in (0, 2):
            return result
        if "already in progress" in result.stdout + result.stderr and time.monotonic() < deadline:
            time.sleep(2)
            continue
        raise RemoteCommandError(result, step, "the Puppet run failed; its last lines are below")
