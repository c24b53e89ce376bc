"""Faults injected into the lab while the product works, each: inject, observe the error
(it names the host, the step and what to do), heal, run again, converge. After every
failure: no duplicate certificate or pin, nothing of a master that is not fully ready in
the 8140 pool, and no other pool member lost."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components.program import main as program
from lab.client import LabClient
from lab.inhost.pelab_common import wait_for
from provider.infra_refresh import InfraRefreshProvider
from provider.pool_member import PoolMemberProvider
from tests.harness.graph import GraphRun
from tests.harness.mocks import run_program
from tests.harness.provider_server import Engine, ProviderError, ProviderServer, Secret
from tests.labtests.helpers import bare_masters, enroll, lab_stack_config, lb_config, lb_stats, unpin
from tests.labtests.test_pool_member import member_inputs

pytestmark = pytest.mark.lab
STACK = "faults"
BACKEND = "puppet_compilers"
RUN_LOCK = "/var/cache/puppet/state/agent_catalog_run.lock"


# --- observing ---------------------------------------------------------------------------


def when_logged(
    server: ProviderServer, pattern: str, action: Callable[[], object], delay: float = 0.0
) -> threading.Thread:
    """Run `action` `delay` seconds after a progress line matching `pattern` appears (only
    lines written from now on count)."""
    start = len(server.text())

    def watch() -> None:
        if wait_for(lambda: re.search(pattern, server.text()[start:]) is not None, 600, 0.05):
            time.sleep(delay)
            action()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def failed_up(run: GraphRun, mocks: Any, *expected: str) -> str:
    """One `pulumi up` that must fail; its error must carry every expected text."""
    with pytest.raises(ProviderError) as err:
        run.up(mocks)
    details = err.value.details
    for text in expected:
        assert text in details, f"{text!r} not in the error:\n{details}"
    return details


def ca_entries(lab: LabClient, fqdn: str) -> list[str]:
    """The CA's requests and certificates for fqdn, as `<name> <state>` (read over the CA's
    API: PE 2016.4's primary has no `puppetserver ca`)."""
    return [f"{e['name']} {e['state']}" for e in lab.ca_statuses() if e["name"] == fqdn]


def pins(lab: LabClient, fqdn: str) -> int:
    """How often the PE Master group's rule pins fqdn, read from the console's saved state
    (the console's API may be the fault under test)."""
    groups = json.loads((Path(lab.root) / "state" / "console.json").read_text())["groups"]
    rule = next(g for g in groups.values() if g["name"] == "PE Master")["rule"] or []
    return int(rule.count(["=", "name", fqdn]))


def assert_nothing_half_done(lab: LabClient, short: str) -> None:
    host = lab.host(short)
    assert len(ca_entries(lab, host.fqdn)) <= 1, "a duplicate certificate or CSR on the CA"
    assert pins(lab, host.fqdn) <= 1, "pinned twice"
    endpoint = f"{host.address}:8140"
    assert endpoint not in lb_config(lab), "a master that is not ready was saved in the pool"
    assert all(s.address != endpoint for s in lb_stats(lab).values()), "a master that is not ready is in the pool"


def hold_run_lock(lab: LabClient, short: str) -> str:
    """Another Puppet run holds the agent's run lock: a live process's pid in the lock file."""
    out = lab.host(short).run(
        f"mkdir -p {os.path.dirname(RUN_LOCK)} && (setsid sleep 900 >/dev/null 2>&1 & echo $! > {RUN_LOCK}) "
        f"&& cat {RUN_LOCK}"
    )
    return out.check().stdout.strip()


def crash_ca(lab: LabClient) -> None:
    """The CA freezes, then dies (kill -9), while a request is in flight."""
    pids = lab.lab.run("primary", ["pgrep", "-f", "puppetserver.jar"], check=False).stdout.split()
    for pid in pids:
        os.kill(int(pid), signal.SIGSTOP)
    time.sleep(3)
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)


# --- PeCompileMaster's procedure, through the program -------------------------------------


@pytest.fixture
def knobs(lab: LabClient) -> Iterator[None]:
    """Installs and master runs slow enough to be hit mid-way; everything healed after."""
    before = dict(lab.lab.settings().knobs)
    lab.lab.set_knobs({"install": 6, "master_run": 6, "console_groups_status": 0, "console_groups_delay": 0})
    yield
    settings = lab.lab.settings()
    settings.knobs = before
    lab.lab.save_settings(settings)


def test_one_master_through_every_fault_of_its_procedure(lab: LabClient, knobs: None) -> None:
    """PE 2016.4: masters are pinned to PE Master (from 2019.7 the PE Compiler group's rule
    on pp_auth_role classifies them without a pin, so there is no pinning to break)."""
    short = "compile07"
    host = lab.host(short)
    bare_masters(lab, [short])
    lab.set_pe_version("2016.4.9")

    def mocks(**timeouts: float) -> Any:
        config = lab_stack_config(
            lab, [short], **{"pe:version": "2016.4.9", "pe:timeouts": {"health": 120, "run": 600, **timeouts}}
        )
        return run_program(program, stack=STACK, config=config)

    with ProviderServer() as server:
        run = GraphRun(server)
        try:
            # 1. sshd killed while install.bash runs.
            when_logged(server, r"\] trust: ", lambda: lab.lab.kill_sshd(short), delay=2)
            failed_up(run, mocks(), f"[{host.address}] step 'install' failed", "What to do:", "SSH connection")
            assert_nothing_half_done(lab, short)
            lab.lab.restart_host(short)

            # 2. The CA freezes and dies while the certificate is being signed; restarted.
            when_logged(server, r"\] install: agent installed", lambda: crash_ca(lab))
            failed_up(run, mocks(), "step 'sign'", "What to do:", "the CA on the primary")
            lab.lab.start_primary()  # the CA's own view is read once it is back
            assert_nothing_half_done(lab, short)

            # 3. The console answers 503 while the host is being pinned.
            lab.lab.set_knobs({"console_groups_status": 503})
            failed_up(run, mocks(), "step 'classify'", "HTTP 503", "What to do:", "classifier")
            assert pins(lab, host.fqdn) == 0
            assert_nothing_half_done(lab, short)

            # 4. The console is so slow that every pin request times out - and it still pins.
            lab.lab.set_knobs({"console_groups_status": 0, "console_groups_delay": 4})
            failed_up(run, mocks(api=1.5), "step 'classify'", "What to do:", "timed out")
            assert wait_for(lambda: pins(lab, host.fqdn) == 1, 20)  # the late pins landed once
            lab.lab.set_knobs({"console_groups_delay": 0})
            assert_nothing_half_done(lab, short)

            # 5. Another Puppet run holds the master's run lock past the run deadline.
            holder = hold_run_lock(lab, short)
            failed_up(run, mocks(run=12), f"another Puppet run (pid {holder})", "step 'first agent run'", "What to do:")
            host.run(f"kill {holder}").check()  # its lock file stays behind: stale now
            assert_nothing_half_done(lab, short)

            # 6. sshd killed during the master's agent run (the run with the master profile).
            # Pinned by step 4 before any run, the first run would already apply the profile
            # and no master run would follow: unpinned by hand, PE's run, pin, run again.
            unpin(lab, host.fqdn, "PE Master", endpoint=True)
            when_logged(server, r"\] classify: pinned to PE Master", lambda: lab.lab.kill_sshd(short), delay=2)
            failed_up(run, mocks(), "step 'master run'", "What to do:", "SSH connection")
            assert_nothing_half_done(lab, short)
            lab.lab.restart_host(short)
            healed = len(server.text())

            # Healed: the next `up` converges, from where each fault left it.
            run.up(mocks())
            assert run.outputs(f"{host.fqdn}-master")["status"] == "running"
            assert run.outputs(f"{host.fqdn}-pool")["status"] == "UP"
            assert "removing a stale run lock" in server.text()
            # Pinned before this up's first run: that run applied the profile, no second run.
            assert "already in PE Master: skipped" in server.text()[healed:]
            assert "master run: skipped: the first run already applied" in server.text()[healed:]
            entries = ca_entries(lab, host.fqdn)
            assert len(entries) == 1 and entries[0].lstrip().startswith(host.fqdn)
            assert pins(lab, host.fqdn) == 1
            assert lb_stats(lab)[(BACKEND, host.fqdn)].is_healthy
            assert host.fqdn in (lab.role_host("puppetdb").read(lab.profile.puppetdb_allowlist) or "")
        finally:
            lab.lab.restart_host(short)
            if not lab.lab.primary_ready():
                lab.lab.start_primary()
            settings = lab.lab.settings()
            settings.knobs.update({"console_groups_status": 0, "console_groups_delay": 0})
            lab.lab.save_settings(settings)
            try:
                run.destroy()
            finally:
                lab.set_pe_version("2019.8")
    assert_nothing_half_done(lab, short)
    assert not ca_entries(lab, host.fqdn) and pins(lab, host.fqdn) == 0


# --- the 8140 pool --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def serving(lab: LabClient) -> Iterator[list[str]]:
    """Two hosts with a signed certificate serving /status/v1/simple on 8140."""
    shorts = ["compile14", "compile15"]
    for short in shorts:
        enroll(lab, lab.host(short), [short])
        lab.host(short).run(f"{lab.root}/inhost/bin/pelab-compile-service start").check()
    yield shorts
    for short in shorts:
        lab.host(short).run(f"{lab.root}/inhost/bin/pelab-compile-service stop")


def member(lab: LabClient, short: str, **overrides: Any) -> dict[str, Any]:
    """test_pool_member's inputs for a compile host's pool member, draining for 10 s."""
    return member_inputs(lab, short, short, **{"drain_timeout": 10, **overrides})


def healthy(lab: LabClient, short: str) -> bool:
    try:
        stat = lb_stats(lab).get((BACKEND, short))
    except AssertionError:  # HAProxy (re)starting: no socket yet
        return False
    return stat is not None and stat.is_healthy


def saved_lines(lab: LabClient, short: str) -> int:
    return sum(1 for line in lb_config(lab).splitlines() if line.split()[:2] == ["server", short])


def test_pool_adds_survive_a_missing_socket_a_restart_and_a_killed_provider(lab: LabClient, serving: list[str]) -> None:
    kept, added = serving
    lb = lab.host("lb")
    socket_path = "/run/haproxy/admin.sock"
    with ProviderServer() as server:
        keeper = Engine(server, PoolMemberProvider(), f"member-{kept}", "PoolMember")
        keeper.up(member(lab, kept))

        def kept_is_whole() -> None:
            assert saved_lines(lab, kept) == 1, "a pool member was lost from the configuration"
            assert wait_for(lambda: healthy(lab, kept), 30), "a pool member was lost from the running pool"

        newcomer = Engine(server, PoolMemberProvider(), f"member-{added}", "PoolMember")
        try:
            # The runtime socket is gone: a clear error, nothing half-added.
            lb.run(f"mv {socket_path} {socket_path}.away").check()
            with pytest.raises(ProviderError) as err:
                newcomer.up(member(lab, added))
            for text in (f"[{lb.fqdn}]", "step 'read pool state'", "stats socket", "run `pulumi up` again"):
                assert text in err.value.details
            assert newcomer.state is None and saved_lines(lab, added) == 0
            lb.run(f"mv {socket_path}.away {socket_path}").check()
            assert (BACKEND, added) not in lb_stats(lab)
            kept_is_whole()

            # HAProxy restarts while the new member waits for its health check.
            slow_check = member(lab, added, check_inter_ms=4000)
            when_logged(
                server, rf"\[member-{added}\] add: .* added, waiting", lambda: lb.run("service haproxy restart")
            )
            with pytest.raises(ProviderError) as err:
                newcomer.up(slow_check)
            assert "run `pulumi up` again" in err.value.details.lower() and lb.fqdn in err.value.details
            assert newcomer.state is None and saved_lines(lab, added) == 0
            kept_is_whole()  # back from the saved configuration
            assert (BACKEND, added) not in lb_stats(lab)
        finally:
            lb.run(f"test -S {socket_path} || mv {socket_path}.away {socket_path}")

    # The provider is killed (second Ctrl-C) while the member waits for its health check:
    # it is in the running pool, unsaved, and no state was recorded.
    with ProviderServer() as doomed:
        engine = Engine(doomed, PoolMemberProvider(), f"member-{added}", "PoolMember")

        def killed_create() -> None:
            with pytest.raises(ProviderError):
                engine.up(slow_check)

        killed = threading.Thread(target=killed_create, daemon=True)
        killed.start()
        assert wait_for(lambda: "added, waiting" in doomed.text(), 60), doomed.text()
        doomed.close()
        killed.join(30)
    assert (BACKEND, added) in lb_stats(lab) and saved_lines(lab, added) == 0
    with ProviderServer() as server:
        engine = Engine(server, PoolMemberProvider(), f"member-{added}", "PoolMember")
        state = engine.up(slow_check)  # the next `up` takes over what is there, and saves it
        assert state.outputs["status"] == "UP" and saved_lines(lab, added) == 1
        kept_is_whole()
        engine.destroy()
        cleanup = Engine(server, PoolMemberProvider(), f"member-{kept}", "PoolMember")
        cleanup.state = keeper.state
        cleanup.destroy()
    assert saved_lines(lab, added) == saved_lines(lab, kept) == 0
    assert {(BACKEND, added), (BACKEND, kept)}.isdisjoint(lb_stats(lab))


# --- PuppetDB's run lock ----------------------------------------------------------------------


def test_infra_refresh_waits_out_a_run_on_puppetdb_and_fails_clearly_at_its_deadline(lab: LabClient) -> None:
    key = Secret(Path(lab.key).read_text())
    known = Path(lab.known_hosts).read_text()
    inputs: dict[str, Any] = {
        "resource_name": "faults-infra-refresh",
        "masters": [],
        "puppetdb_host": lab.role_host("puppetdb").fqdn,
        "puppetdb_ssh_private_key": key,
        "puppetdb_ssh_known_hosts": known,
        "console_host": lab.role_host("console").fqdn,
        "console_ssh_private_key": key,
        "console_ssh_known_hosts": known,
        "run_timeout": 12,
    }
    puppetdb = lab.role_host("puppetdb")
    with ProviderServer() as server:
        engine = Engine(server, InfraRefreshProvider(), "faults-infra-refresh", "InfraRefresh")
        holder = hold_run_lock(lab, puppetdb.spec.short)
        try:
            with pytest.raises(ProviderError) as err:
                engine.up(inputs)
            for text in (f"[{puppetdb.fqdn}]", f"another Puppet run (pid {holder})", "raise run_timeout"):
                assert text in err.value.details
            assert engine.state is None

            # A run that ends while we wait is simply waited out.
            inputs["run_timeout"] = 300
            when_logged(server, r"holds the lock; waiting", lambda: puppetdb.run(f"kill {holder}; rm -f {RUN_LOCK}"))
            state = engine.up(inputs)
            assert state.outputs["status"] and "holds the lock; waiting" in server.text()
        finally:
            puppetdb.run(f"kill {holder} 2>/dev/null; rm -f {RUN_LOCK}")
