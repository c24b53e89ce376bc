"""The program end to end through the real Pulumi CLI against the lab's PE 2021.7 profile:
Pulumi.lab.yaml's stack config with its own state backend, 0 -> 2 masters (compile01 a
real second Puppet Server), `preview --diff --json` of adding compile03 (exactly the
creates and updates README lists), 2 -> 3, 3 -> 1, then `destroy` - checking the hosts,
the CA, the classifier, PuppetDB and HAProxy after each step, and the engine's own step
order from its event log."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.client import LabClient
from provider.pe.classifier import is_pinned
from tests.cli_stack import PASSPHRASE, CliRun, CliStack
from tests.labtests.helpers import (
    bare_masters,
    lab_stack_values,
    lb_config,
    lb_stats,
    on_generation,
    pdb_node,
    refresh_runs,
)
from tests.labtests.test_generations import assert_removed, assert_serving, pg_ident_entries

pytestmark = pytest.mark.lab
SHORTS = ("compile01", "compile02", "compile03")
# The generation most users run (PE 2021.7 LTS); every profile runs 0 -> 2 -> 0 in
# test_generations.py.
GENERATION = "2021.7"
SECRET_SIG = "4dabf18193072939515e22adb298388d"  # the state's mark of a secret value
STACK = "e2e"  # resources are named after it: e2e-provisioning, e2e-infra-refresh, ...


def catalog_through_lb(lab: LabClient) -> str:
    """A catalog request for the PuppetDB node through the LB's 8140, as an agent makes
    it (client certificate, server verified as `puppet.pelab.test`); returns the CN of the
    master that served it."""
    ctx = ssl.create_default_context(cafile=lab.ca_file)
    ctx.load_cert_chain(*lab.host("puppetdb").cert_files())
    raw = socket.create_connection((lab.host("lb").address, 8140), timeout=120)
    tls = ctx.wrap_socket(raw, server_hostname="puppet.pelab.test")
    try:
        served_by = dict(pair[0] for pair in tls.getpeercert()["subject"])["commonName"]  # type: ignore[index,misc]
        conn = http.client.HTTPConnection("puppet.pelab.test", 8140, timeout=120)
        conn.sock = tls
        conn.request(
            "GET",
            "/puppet/v3/catalog/puppetdb.pelab.test?environment=production",
            headers={"Accept": "application/json"},
        )
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200, (served_by, resp.status, body[:500])
        assert json.loads(body)["name"] == "puppetdb.pelab.test"
        return str(served_by)
    finally:
        tls.close()


def assert_through_lb(lab: LabClient, shorts: tuple[str, ...]) -> None:
    seen = {catalog_through_lb(lab) for _ in range(4 * len(shorts))}
    assert seen == {f"{s}.pelab.test" for s in shorts}, seen  # each master serves catalogs through the LB


def config(lab: LabClient, shorts: tuple[str, ...]) -> dict[str, object]:
    return lab_stack_values(lab, shorts, **{"pe:version": GENERATION})


@pytest.fixture
def stack(lab: LabClient, tmp_path: Path) -> Iterator[CliStack]:
    """The lab stack in a backend of its own; destroyed whatever the test left."""
    bare_masters(lab, SHORTS)
    with on_generation(lab, GENERATION):
        cli = CliStack(STACK, tmp_path, config(lab, SHORTS[:2]))
        try:
            yield cli
        finally:
            cli.destroy(check=False)
            bare_masters(lab, SHORTS)


def changed_steps(run: CliRun) -> set[tuple[str, str]]:
    return set(run.steps())


def test_program_scales_out_and_in_through_the_real_cli(lab: LabClient, stack: CliStack) -> None:
    # 0 -> 2: both masters at once, ONE round of infrastructure runs, then both pool members.
    run = stack.up()
    order = [name for _, name in run.steps()]
    assert [name for op, name in run.steps() if op == "create" and name.endswith("infra-refresh")] == [
        f"{STACK}-infra-refresh"
    ]
    for short in SHORTS[:2]:
        certname = f"{short}.pelab.test"
        assert order.index(f"{certname}-code") < order.index(f"{certname}-master")
        assert order.index(f"{STACK}-provisioning") < order.index(f"{certname}-master")
        assert order.index(f"{certname}-master") < order.index(f"{STACK}-infra-refresh")
        assert order.index(f"{STACK}-pool-admission") < order.index(f"{certname}-pool")
    assert order.index(f"{STACK}-infra-refresh") < order.index(f"{STACK}-pool-admission")
    said = run.diagnostics()
    runs = refresh_runs(lab)
    assert said.count(f"[{STACK}-infra-refresh] {runs[0]}: done") == 1, said
    # PE's order: PuppetDB, console, then the primary (its file sync serves them after);
    # one run where the primary holds PuppetDB and the console (the lab's default layout).
    refresh_lines = [line for line in said.splitlines() if f"[{STACK}-infra-refresh]" in line and ": done in" in line]
    assert [line.split("] ")[1].split(": done")[0] for line in refresh_lines] == runs
    assert f"[{STACK}-provisioning] batch: provisioning 2 master(s), 2 at a time" in said
    for short in SHORTS[:2]:  # each one's own create reports what the batch verified (handoff.py)
        assert f"[{short}.pelab.test-master] verify: converged and verified by CompileMasterBatch" in said, said
    assert f"[{STACK}-pool-admission] admission: adding 2 member(s)" in said
    assert_serving(lab, stack, SHORTS[:2])
    assert_through_lb(lab, SHORTS[:2])
    assert stack.preview("--expect-no-changes").returncode == 0
    assert_no_plaintext_secrets(lab, stack, run.text)

    # The preview of adding compile03 lists exactly what README says it does.
    stack.set_config(config(lab, SHORTS))
    plan = stack.preview_json("--diff")
    planned = {(s["op"], s["urn"].rsplit("::", 1)[-1]) for s in plan["steps"] if s["op"] != "same"}
    assert planned == {
        ("create", "compile03.pelab.test"),  # its CompileMaster component
        ("create", "compile03.pelab.test-code"),
        ("create", "compile03.pelab.test-master"),
        ("create", "compile03.pelab.test-pool"),
        ("update", f"{STACK}-provisioning"),
        ("update", f"{STACK}-infra-refresh"),
        ("update", f"{STACK}-pool-admission"),
        ("update", "compile01.pelab.test-master"),  # peer_masters gain compile03: recorded only
        ("update", "compile02.pelab.test-master"),
    }, planned

    # 2 -> 3: the up does what the preview said; the refresh runs once more.
    run = stack.up()
    assert changed_steps(run) == {(op, name) for op, name in planned if name != "compile03.pelab.test"}
    said = run.diagnostics()
    for short in SHORTS[:2]:
        assert f"[{short}.pelab.test-master] update: peer_masters changed: no remote work needed" in said
    assert f"[{STACK}-provisioning] batch: provisioning 1 master(s)" in said
    assert "[compile03.pelab.test-master] verify: converged and verified by CompileMasterBatch" in said, said
    assert f"[{STACK}-pool-admission] admission: adding 1 member(s)" in said
    assert said.count(f"[{STACK}-infra-refresh] {runs[0]}: done") == 1
    assert_serving(lab, stack, SHORTS)
    assert_through_lb(lab, SHORTS)

    # 3 -> 1: members drained and removed first, then the masters, then their file sync.
    serials = {s: int(stack.outputs(f"{s}.pelab.test-master")["cert_serial"]) for s in SHORTS[1:]}
    stack.set_config(config(lab, SHORTS[:1]))
    run = stack.up()
    said = run.diagnostics()
    # Both leave in one removal: the first master delete to run takes the other (drained,
    # leaving) one along, and compile01 takes the new CRL once (provider/core/retirement.py).
    leads = [s for s in SHORTS[1:] if f"[{s}.pelab.test-master] delete: removing 2 masters leaving" in said]
    assert len(leads) == 1, said
    (other,) = set(SHORTS[1:]) - set(leads)
    assert f"[{other}.pelab.test-master] delete: removed (in {leads[0]}.pelab.test's delete)" in said
    assert said.count("compile01.pelab.test: Puppet run done, its CRL lists the revoked serial(s)") == 1, said
    deletes = [name for op, name in run.steps() if op == "delete"]
    assert set(deletes) == {f"{s}.pelab.test-{r}" for s in SHORTS[1:] for r in ("code", "master", "pool")}
    for short in SHORTS[1:]:
        certname = f"{short}.pelab.test"
        assert (
            deletes.index(f"{certname}-pool") < deletes.index(f"{certname}-master") < deletes.index(f"{certname}-code")
        )
        assert f"[{certname}-pool] drain:" in said
        assert_removed(lab, None, certname, serials[short])
        assert lab.host(short).read("/etc/cron.d/pe-file-sync") is None
    assert_serving(lab, stack, SHORTS[:1])
    assert_through_lb(lab, SHORTS[:1])

    # destroy: nothing of the stack is left on any host, in the CA, the classifier,
    # PuppetDB or HAProxy.
    serial = int(stack.outputs("compile01.pelab.test-master")["cert_serial"])
    run = stack.destroy()
    assert stack.resources() == {}
    assert_removed(lab, None, "compile01.pelab.test", serial)
    assert_nothing_left(lab, SHORTS)


def assert_no_plaintext_secrets(lab: LabClient, stack: CliStack, shown: str) -> None:
    """`pulumi stack export` (no --show-secrets), the state file itself and what the CLI
    printed hold no private key, RBAC token or passphrase; every `__provider` (the pickled
    provider, in inputs and outputs) is a secret."""
    key = (lab.root / "keys" / "lab_ed25519").read_text()
    key_body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    token = (lab.root / "keys" / "rbac-token").read_text().strip()
    exported = stack.export()
    state_files = "".join(p.read_text() for p in (stack.workdir / "state").rglob("*.json"))
    for where, text in (("stack export", json.dumps(exported)), ("state file", state_files), ("CLI output", shown)):
        for line in key_body:
            assert line not in text, f"a line of the SSH private key in the {where}"
        assert token not in text, f"the RBAC token in the {where}"
        assert PASSPHRASE not in text, f"the passphrase in the {where}"
    providers = 0
    for resource in exported["deployment"]["resources"]:
        for props in (resource.get("inputs") or {}, resource.get("outputs") or {}):
            if "__provider" in props:
                providers += 1
                assert set(props["__provider"]) == {SECRET_SIG, "ciphertext"}, resource["urn"]
    assert providers >= 2 * 9  # the nine dynamic resources of two masters, inputs and outputs


def assert_nothing_left(lab: LabClient, shorts: tuple[str, ...]) -> None:
    """No trace of these masters anywhere PE or the product keeps one."""
    pinned = lab.classifier().group("PE Master")["rule"]
    for short in shorts:
        certname = f"{short}.pelab.test"
        host = lab.host(short)
        assert lab.ca_state(certname) is None, certname
        assert not is_pinned(pinned, certname)
        node = pdb_node(lab, certname)
        assert node is None or node.get("deactivated"), node
        assert pg_ident_entries(lab, certname) == 0
        assert ("puppet_compilers", certname) not in lb_stats(lab)
        assert f" {certname} " not in lb_config(lab)
        assert host.cert() is None, certname  # agent's certificate and configuration removed
        assert host.read("/etc/cron.d/pe-file-sync") is None
        assert host.run("pgrep --ns $$ --nslist mnt -f '[p]uppet agent'").exit_status != 0, certname
