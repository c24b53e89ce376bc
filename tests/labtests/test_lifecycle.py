"""The stack's lifecycle through the real Pulumi CLI, against the lab's PE 2021.7 profile:
a removed optional input is one update, then no change; a certname change on the same host
is refused by the preview before anything changes; an alt-name change drains the pool
member before the master's certificate is revoked (a timeline polled from HAProxy and the
CA); two stacks of one project never touch each other's masters; an `up` interrupted by
Ctrl-C or by a killed CLI converges, after exactly what docs/failures.md tells the user
to run, with one certificate. (drift -> refresh -> up repairs runs on every generation
profile: test_generations.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from lab.client import LabClient
from tests.cli_stack import CliStack, wait_until
from tests.labtests.helpers import (
    bare_masters,
    lab_stack_values,
    lb_stats,
    on_generation,
    served_fingerprint,
)
from tests.labtests.test_generations import assert_serving

pytestmark = pytest.mark.lab
GENERATION = "2021.7"
STACK = "life"
SHORT = "compile02"
CERTNAME = f"{SHORT}.pelab.test"
MASTER, POOL = f"{CERTNAME}-master", f"{CERTNAME}-pool"
OTHER = "compile03"  # the other stack's master
ADDED = "compile04"  # added by the interrupted ups
REFUSED = "compile09"  # a host answering with another host key than the pinned one
HOSTS = (SHORT, OTHER, ADDED, REFUSED)  # bare before and after the module


def config(lab: LabClient, shorts: tuple[str, ...] = (SHORT,), changes: dict[str, Any] | None = None) -> dict[str, Any]:
    return lab_stack_values(lab, shorts, **{"pe:version": GENERATION, **(changes or {})})


def masters(lab: LabClient, shorts: tuple[str, ...] = (SHORT,)) -> list[dict[str, Any]]:
    return list(config(lab, shorts)["pe:compileMasters"])


@pytest.fixture(scope="module")
def deployed(lab: LabClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    bare_masters(lab, HOSTS)
    with on_generation(lab, GENERATION):
        stack = CliStack(STACK, tmp_path_factory.mktemp("lifecycle"), config(lab))
        try:
            stack.up()
            assert_serving(lab, stack, (SHORT,))
            yield stack
        finally:
            stack.destroy(check=False)
            bare_masters(lab, HOSTS)


@pytest.fixture
def restored(lab: LabClient, deployed: CliStack) -> Iterator[CliStack]:
    """The stack as the fixture made it after the test, whatever the test left."""
    try:
        yield deployed
    finally:
        deployed.set_config(config(lab))
        deployed.up(check=False)


def test_a_removed_optional_input_is_one_update_then_no_change(lab: LabClient, restored: CliStack) -> None:
    stack = restored
    timeouts = config(lab)["pe:timeouts"]
    stack.set_config(config(lab, changes={"pe:timeouts": {**timeouts, "connect": 45}}))
    stack.up()
    assert stack.outputs(MASTER)["connect_timeout"] == 45
    stack.set_config(config(lab))  # `connect` removed again
    run = stack.up()
    updated = {name for op, name in run.steps() if op == "update"}
    assert MASTER in updated and POOL in updated
    assert {op for op, _ in run.steps()} == {"update"}
    for name, resource in stack.resources().items():
        assert "connect_timeout" not in (resource.get("outputs") or {}), name
    assert stack.preview("--expect-no-changes", check=False).returncode == 0


def test_a_new_certname_on_the_same_host_is_refused_before_anything_changes(lab: LabClient, restored: CliStack) -> None:
    stack = restored
    renamed = [{**masters(lab)[0], "certname": "compile02-renamed.pelab.test"}]
    stack.set_config(config(lab, changes={"pe:compileMasters": renamed}))
    for attempt in (stack.preview, stack.up):
        run = attempt(check=False)
        assert run.returncode != 0
        assert "masters[0].certname" in run.text, run.text
        assert f"Remove {CERTNAME} from the stack config" in run.text and "compile02-renamed.pelab.test" in run.text
        assert [s for s in run.steps() if s[0] not in ("same",)] == [], run.steps()
    assert lb_stats(lab)[("puppet_compilers", CERTNAME)].is_healthy
    assert lab.ca_state(CERTNAME) == "signed"


def test_the_engine_updates_a_master_on_a_patch_upgrade_and_replaces_it_for_a_new_line_or_group(
    lab: LabClient, restored: CliStack
) -> None:
    """The provider's diff rules as the real engine plans them (previews only): pe_version
    within its line is an update (re-verified in place), another line or a peadm
    availability group (a certificate extension) a replacement."""
    stack = restored

    def planned(changes: dict[str, Any]) -> dict[str, str]:
        stack.set_config(config(lab, changes=changes))
        steps = stack.preview_json()["steps"]
        return {s["urn"].rsplit("::", 1)[-1]: s["op"] for s in steps if s["op"] != "same"}

    patch = planned({"pe:version": f"{GENERATION}.3"})
    assert patch.get(MASTER) == "update" and "replace" not in patch.values(), patch
    line = planned({"pe:version": "2023.8"})
    assert line.get(MASTER) == "replace", line
    grouped = planned({"pe:compileMasters": [{**masters(lab)[0], "availabilityGroup": "A"}]})
    assert grouped.get(MASTER) == "replace", grouped


@dataclass
class Sample:
    at: float
    member: str  # HAProxy's status of the member, or "gone"
    serial: int | None  # the CA's certificate for the certname (None: none)
    state: str | None


def poll(lab: LabClient, stop: threading.Event, into: list[Sample]) -> None:
    while not stop.is_set():
        stat = lb_stats(lab).get(("puppet_compilers", CERTNAME))
        try:
            entry = lab.ca_entry(CERTNAME)
        except requests.RequestException:
            # The CA answers 503 while the primary's Puppet Server reloads (its CRL after the
            # revoke): no sample then, the next one tells.
            time.sleep(0.2)
            continue
        into.append(
            Sample(
                time.monotonic(),
                stat.status if stat else "gone",
                int(entry["serial_number"]) if entry and entry.get("serial_number") else None,
                str(entry["state"]) if entry else None,
            )
        )
        time.sleep(0.2)


def test_an_alt_name_change_drains_the_member_before_the_certificate_goes(lab: LabClient, restored: CliStack) -> None:
    stack = restored
    old_serial = int(stack.outputs(MASTER)["cert_serial"])
    changed = [{**masters(lab)[0], "dnsAltNames": [SHORT, "compile02-new"]}]
    stack.set_config(config(lab, changes={"pe:compileMasters": changed}))
    plan = stack.preview_json()
    replaced = {s["urn"].rsplit("::", 1)[-1] for s in plan["steps"] if s["op"] == "replace"}
    assert {MASTER, POOL} <= replaced, plan["steps"]
    samples: list[Sample] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll, args=(lab, stop, samples), daemon=True)
    poller.start()
    try:
        run = stack.up()
    finally:
        stop.set()
        poller.join(timeout=60)
    steps = run.steps()
    assert steps.index(("delete-replaced", POOL)) < steps.index(("delete-replaced", MASTER))
    assert steps.index(("create-replacement", MASTER)) < steps.index(("create-replacement", POOL))
    assert f"batch: {CERTNAME}: replaced by the engine" in run.diagnostics()  # not re-signed first

    # With timestamps: the member leaves service before the old certificate leaves the CA.
    assert samples and samples[0].member.startswith("UP") and samples[0].serial == old_serial, samples[:3]
    drained = next(s.at for s in samples if not s.member.startswith("UP"))
    revoked = next(s.at for s in samples if s.serial != old_serial or s.state != "signed")
    assert drained < revoked, [(round(s.at - samples[0].at, 1), s.member, s.serial, s.state) for s in samples]
    readmitted = next(s.at for s in samples if s.at > revoked and s.member.startswith("UP"))
    signed = next(s.at for s in samples if s.serial not in (None, old_serial) and s.state == "signed")
    assert signed < readmitted

    # Re-provisioned with the new names, back in the pool, one certificate on the CA.
    entry = lab.ca_entry(CERTNAME)
    assert entry is not None and entry["state"] == "signed" and int(entry["serial_number"]) != old_serial
    assert "DNS:compile02-new" in entry["dns_alt_names"] or "compile02-new" in entry["dns_alt_names"]
    assert served_fingerprint(lab, SHORT) == stack.outputs(MASTER)["cert_fingerprint"]
    assert lb_stats(lab)[("puppet_compilers", CERTNAME)].is_healthy
    assert stack.outputs(POOL)["status"] == "UP"
    crl = lab.host("primary").run("openssl crl -in /var/lib/puppet/ssl/crl.pem -noout -text").stdout
    assert f"{old_serial:X}" in crl.replace(":", "").upper()
    assert stack.preview("--expect-no-changes", check=False).returncode == 0


def identity(lab: LabClient, short: str) -> tuple[str | None, str | None, str]:
    """What another stack must leave alone: the CA's serial, the served certificate, the
    pool member's status."""
    entry = lab.ca_entry(f"{short}.pelab.test")
    stat = lb_stats(lab).get(("puppet_compilers", f"{short}.pelab.test"))
    return (
        str(entry["serial_number"]) if entry else None,
        served_fingerprint(lab, short),
        stat.status if stat else "gone",
    )


def test_two_stacks_of_one_project_never_touch_each_others_masters(lab: LabClient, deployed: CliStack) -> None:
    """Stack-per-environment: a second stack in the same backend with a master of its own;
    its `up` and `destroy` leave the first stack's master, member and certificate as they
    were, and run nothing on its host."""
    before = identity(lab, SHORT)
    other = CliStack("other", deployed.workdir, config(lab, (OTHER,)))
    try:
        run = other.up()
        assert_serving_pair = {n for (b, n) in lb_stats(lab) if b == "puppet_compilers"}
        assert assert_serving_pair == {CERTNAME, f"{OTHER}.pelab.test"}
        assert CERTNAME not in run.diagnostics(), run.diagnostics()
        assert identity(lab, SHORT) == before
        run = other.destroy()
        assert CERTNAME not in run.diagnostics(), run.diagnostics()
        assert lab.ca_state(f"{OTHER}.pelab.test") is None
    finally:
        other.destroy(check=False)
    assert identity(lab, SHORT) == before
    assert_serving(lab, deployed, (SHORT,))
    assert deployed.preview("--expect-no-changes", check=False).returncode == 0


def provider_processes(stack: CliStack) -> list[int]:
    """The stack's dynamic-provider processes (in a process group of their own: the CLI
    starts plugins so), found by the backend in their environment."""
    out = subprocess.run(["pgrep", "-f", "pulumi.dynamic"], capture_output=True, text=True, check=False).stdout
    pids = []
    for pid in out.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if str(stack.workdir).encode() in environ:
            pids.append(int(pid))
    return pids


@pytest.mark.parametrize("how", ["SIGINT", "SIGKILL"])
def test_an_interrupted_up_converges_with_one_certificate(lab: LabClient, restored: CliStack, how: str) -> None:
    """Ctrl-C (SIGINT to the CLI's process group, as a terminal sends it) or a killed CLI
    (SIGKILL) while a new master is being provisioned; then exactly what docs/failures.md
    says to run; the stack converges with one certificate for the master."""
    stack = restored
    bare_masters(lab, (ADDED,))
    stack.set_config(config(lab, (SHORT, ADDED)))
    proc = stack.start("up", "--yes", "--skip-preview")
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout or []), daemon=True)
    reader.start()
    added = f"{ADDED}.pelab.test"
    assert wait_until(lambda: lab.ca_state(added) == "signed", 300), "the master was never signed"
    if how == "SIGINT":
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=900)  # the engine waits for the steps in flight, then stops
    else:
        cli = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])
        os.kill(cli, signal.SIGKILL)
        proc.wait(timeout=60)
    reader.join(timeout=60)
    assert proc.returncode != 0

    if how == "SIGKILL":
        # docs/failures.md, "An interrupted pulumi up": the provider the killed CLI started
        # stops at its next step boundary and exits (provider/core/engine_watch.py); then
        # the lock the CLI left goes (`pulumi cancel`) and the pending create is cleared.
        assert wait_until(lambda: not provider_processes(stack), 600), "the orphaned provider never ended"
        locked = stack.refresh("--clear-pending-creates", check=False)
        assert locked.returncode != 0 and "pulumi cancel" in locked.text, locked.text
        stack.cli("cancel", "--yes", "--stack", stack.name)
        stack.refresh("--clear-pending-creates")
    run = stack.up()
    assert "pending operations" not in run.text
    assert_serving(lab, stack, (SHORT, ADDED))
    ca_dir = "/etc/puppet/puppetserver/ca"  # the lab CA's (Debian Puppet Server's cadir)
    listed = lab.host("primary").run(f"ls {ca_dir}/signed {ca_dir}/requests").check().stdout.split()
    assert listed.count(f"{added}.pem") == 1, listed  # one certificate, no CSR left
    entry = lab.ca_entry(added)
    assert entry is not None and entry["state"] == "signed"
    assert served_fingerprint(lab, ADDED) == stack.outputs(f"{added}-master")["cert_fingerprint"]
    assert stack.preview("--expect-no-changes", check=False).returncode == 0


def test_a_failure_reads_cause_and_advice_first_through_the_cli(lab: LabClient, deployed: CliStack) -> None:
    """What the real CLI prints when a provider call fails (docs/failures.md has the
    transcript): the cause and what to do first, then the SDK's frames and the boundary's
    only. The failure: a host answering with another host key than the pinned one, refused
    before anything is sent to it."""
    short = REFUSED
    known = (lab.root / "keys" / "known_hosts").read_text().splitlines()
    wrong_key = next(line for line in known if line.startswith("compile10.")).split(None, 1)[1]
    settings = config(lab, (short,))
    settings["pe:compileMasters"][0]["hostKey"] = wrong_key
    failing = CliStack("hostkey", deployed.workdir, settings)
    try:
        run = failing.up(check=False)
        assert run.returncode != 0
        errors = {
            str(e["diagnosticEvent"].get("urn", "")).rsplit("::", 1)[-1]: str(e["diagnosticEvent"]["message"])
            for e in run.events
            if "diagnosticEvent" in e and e["diagnosticEvent"].get("severity") == "error"
        }
        # The batch meets the host first (the master's code sync waits for it).
        said = errors.get("hostkey-provisioning", "")
        assert said.startswith("Failed: 1 of 1 masters could not be provisioned"), errors
        cause, _, frames = said.partition("The above exception was the direct cause")
        assert f"- {short}.pelab.test: 127.0.10.19: the host key it presented" in cause, said
        assert "What to do: the host did not prove the pinned SSH host key" in cause
        assert "Traceback" not in cause and 'File "' not in cause
        ours = [line for line in frames.splitlines() if 'File "' in line and "/pulumi/" not in line]
        assert len(ours) == 1 and "provider/core/errors.py" in ours[0], frames  # the boundary's frame only
        assert lab.ca_state(f"{short}.pelab.test") is None  # nothing was done
    finally:
        failing.destroy(check=False)
