"""The program end to end against the lab's PE 2021.7 profile: Pulumi.lab.yaml's stack config, evaluated
under set_mocks for the graph, each resource driven through the provider server in the
engine's order (tests/harness/graph.py) - 0 -> 2 masters (compile01 a real second Puppet
Server), 2 -> 3, 3 -> 1 - checking the hosts after each step."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.program import main
from lab.client import LabClient
from provider.codesync import plan
from provider.pe.classifier import is_pinned
from tests.harness.graph import GraphRun
from tests.harness.mocks import run_program
from tests.harness.provider_server import ProviderServer
from tests.labtests.helpers import bare_masters, lab_stack_config, lb_stats, on_generation, puppetserver

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
SHORTS = ("compile01", "compile02", "compile03")
# The generation most users run (PE 2021.7 LTS); every profile runs 0 -> 1 -> 0 in
# test_generations.py.
GENERATION = "2021.7"
PP_AUTH_ROLE = "1.3.6.1.4.1.34380.1.3.13"


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def up(lab: LabClient, run: GraphRun, shorts: tuple[str, ...]) -> int:
    """One `pulumi up` of the lab stack with these masters; returns the log position."""
    start = len(run.log)
    config = lab_stack_config(lab, shorts, **{"pe:version": GENERATION})
    run.up(run_program(main, stack="lab", config=config))
    return start


def whitelist(lab: LabClient, short: str, path: str) -> set[str]:
    return set((lab.host(short).read(path) or "").split())


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


def assert_serving(lab: LabClient, run: GraphRun, shorts: tuple[str, ...]) -> None:
    certnames = {f"{s}.pelab.test" for s in shorts}
    compiler = lab.classifier().group("PE Compiler")
    primary_digest = plan.digest_of(
        plan.parse_listing(lab.host("primary").run(plan.digest_command("/etc/puppet/code/environments")).stdout, [])
    )
    for short in shorts:
        certname = f"{short}.pelab.test"
        cert = lab.host(short).cert()
        assert cert is not None and {"puppet", "puppet.pelab.test", short, certname} <= cert.sans
        assert run.outputs(f"{certname}-master")["cert_fingerprint"] == cert.fingerprint_sha256
        # PE 2019.7+: PE Compiler matches on the certificate's pp_auth_role (no pin).
        role = cert.extensions.get(PP_AUTH_ROLE)
        assert role == "pe_compiler"
        trusted = {"trusted": {"certname": certname, "extensions": {"pp_auth_role": role}}}
        classified = lab.classifier().request("POST", f"classified/nodes/{certname}", json=trusted).json()
        assert compiler["id"] in classified["groups"]
        assert lb_stats(lab)[("puppet_compilers", certname)].is_healthy
        assert run.outputs(f"{certname}-pool")["status"] == "UP"
        code = run.outputs(f"{certname}-code")
        assert code["status"] == "in sync" and code["digest"] == primary_digest
    assert certnames <= whitelist(lab, "puppetdb", lab.profile.puppetdb_allowlist)
    assert certnames <= whitelist(lab, "console", lab.profile.console_allowlist)
    pool = {name for (backend, name) in lb_stats(lab) if backend == "puppet_compilers"}
    assert pool == certnames  # nobody else in the pool, nobody missing
    seen = {catalog_through_lb(lab) for _ in range(4 * len(shorts))}
    assert seen == certnames, seen  # each master serves catalogs through the LB


def test_program_scales_out_and_in_against_the_lab(lab: LabClient, server: ProviderServer) -> None:
    bare_masters(lab, SHORTS)
    run = GraphRun(server)
    with on_generation(lab, GENERATION):
        try:
            scale_out_and_in(lab, server, run)
        finally:
            run.destroy()  # the lab is shared with the other tests


def scale_out_and_in(lab: LabClient, server: ProviderServer, run: GraphRun) -> None:

    # 0 -> 2: both masters at once, ONE PuppetDB + console run, then both pool members.
    start = up(lab, run, SHORTS[:2])
    ops = run.operations(start)
    assert [name for op, name in ops if op == "create" and name.endswith("infra-refresh")] == ["lab-infra-refresh"]
    order = [name for _, name in ops]
    for short in SHORTS[:2]:
        certname = f"{short}.pelab.test"
        assert order.index(f"{certname}-code") < order.index(f"{certname}-master")
        assert order.index(f"{certname}-master") < order.index("lab-infra-refresh") < order.index(f"{certname}-pool")
    assert server.text().count("[lab-infra-refresh] PuppetDB run: done") == 1
    assert "[lab-provisioning] batch: provisioning 2 master(s), 2 at a time" in server.text()
    # The pool adds and their health gate happen in ONE call, between the refresh and the members.
    assert order.index("lab-infra-refresh") < order.index("lab-pool-admission")
    assert all(order.index("lab-pool-admission") < order.index(f"{s}.pelab.test-pool") for s in SHORTS[:2])
    assert "[lab-pool-admission] admission: adding 2 member(s)" in server.text()
    for short in SHORTS[:2]:
        assert order.index("lab-provisioning") < order.index(f"{short}.pelab.test-master")
    assert_serving(lab, run, SHORTS[:2])

    # 2 -> 3: only compile03's resources are created; the refresh runs once more.
    start = up(lab, run, SHORTS)
    ops = run.operations(start)
    assert {name for op, name in ops if op == "create"} == {
        f"compile03.pelab.test-{s}" for s in ("code", "master", "pool")
    }
    assert sorted(name for op, name in ops if op == "update") == [
        "compile01.pelab.test-master",  # their peer_masters gain compile03: recorded only
        "compile02.pelab.test-master",
        "lab-infra-refresh",
        "lab-pool-admission",
        "lab-provisioning",
    ]
    for short in SHORTS[:2]:
        assert f"[{short}.pelab.test-master] update: peer_masters changed: no remote work needed" in server.text()
    assert "[lab-provisioning] batch: provisioning 1 master(s)" in server.text()
    assert "[lab-pool-admission] admission: adding 1 member(s)" in server.text()
    assert server.text().count("[lab-infra-refresh] PuppetDB run: done") == 2
    assert_serving(lab, run, SHORTS)

    # 3 -> 1: members drained and removed first, then the masters, then their file sync.
    serials = {s: run.outputs(f"{s}.pelab.test-master")["cert_serial"] for s in SHORTS[1:]}
    before = len(server.text())
    start = up(lab, run, SHORTS[:1])
    # Both leave in one removal: the first master delete to run takes the other (drained,
    # leaving) one along, and compile01 takes the new CRL once (provider/core/retirement.py).
    text = server.text()[before:]
    leads = [s for s in SHORTS[1:] if f"[{s}.pelab.test-master] delete: removing 2 masters leaving" in text]
    assert len(leads) == 1, text
    (other,) = set(SHORTS[1:]) - set(leads)
    assert f"[{other}.pelab.test-master] delete: removed (in {leads[0]}.pelab.test's delete)" in text
    assert text.count("compile01.pelab.test: Puppet run done, its CRL lists the revoked serial(s)") == 1, text
    deletes = [name for op, name in run.operations(start) if op == "delete"]
    assert set(deletes) == {f"{s}.pelab.test-{r}" for s in SHORTS[1:] for r in ("code", "master", "pool")}
    for short in SHORTS[1:]:
        certname = f"{short}.pelab.test"
        assert (
            deletes.index(f"{certname}-pool") < deletes.index(f"{certname}-master") < deletes.index(f"{certname}-code")
        )
        assert f"[{certname}-pool] drain:" in server.text()
        assert ("puppet_compilers", certname) not in lb_stats(lab)
        assert lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {certname}").exit_status != 0
        crl = lab.host("primary").run("openssl crl -in /var/lib/puppet/ssl/crl.pem -noout -text").stdout
        assert f"{int(serials[short]):X}" in crl.replace(":", "").upper()  # revoked
        assert not is_pinned(lab.classifier().group("PE Master")["rule"], certname)
        assert lab.host(short).read("/etc/cron.d/pe-file-sync") is None
    assert_serving(lab, run, SHORTS[:1])
