"""The generation matrix: the lab stack's program against each PE generation profile of
the lab (lab/generations.py), through the real Pulumi CLI (tests/cli_stack.py), checking
the hosts as a PE admin would; on each, drift -> `pulumi refresh` reports it -> `pulumi up`
repairs -> `pulumi preview --expect-no-changes` passes.

`make test` runs 0 -> 2 -> 0 masters once per generation and once per architecture: each
profile listed in MATRIX in its common architecture (PuppetDB and the console on the
primary: lab/generations.py Profile.layouts), except the two OTHER_LAYOUTS take their
generation (2018.1 split, 2023.8 extra-large); `make matrix` (PELAB_MATRIX=full) runs
0 -> 2 -> 1 -> 0 on every profile in its common architecture and on OTHER_LAYOUTS too. The
full 0 -> 2 -> 3 -> 1 on the default profile is test_program_e2e.py. Each refusal the
generation makes is a lab test of its own (test_generation_surface.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from lab.client import LabClient
from lab.inhost.pelab_common import wait_for
from provider.codesync import plan
from provider.master.runs import MASTER_CLASS
from provider.pe.classifier import is_pinned
from provider.pe.file_sync_conf import client_certnames
from provider.pe.generation import generation_for
from tests.cli_stack import CliRun, CliStack
from tests.labtests.helpers import (
    DEFAULT_GENERATION,
    HasOutputs,
    bare_masters,
    lab_stack_values,
    lb_stats,
    pdb_node,
    revoke_on_ca,
    served_fingerprint,
    stop_compile_service,
    unpin,
)

pytestmark = [pytest.mark.lab, pytest.mark.lab_state_per_module]
PP_AUTH_ROLE = "1.3.6.1.4.1.34380.1.3.13"
# Profiles the product passes on today (README, "Supported PE generations").
MATRIX = ("3.7", "2016.4.9", "2018.1", "2019.8", "2021.7", "2023.8", "2025.12")
# PE's other architectures (lab/config.py LAYOUTS): a split install, the legacy layout up to
# 2019.1, and an extra-large one (PE-PostgreSQL on a node of its own) from 2019.0.
OTHER_LAYOUTS = (("2018.1", "split"), ("2023.8", "extra-large"))
FULL = os.environ.get("PELAB_MATRIX") == "full"
# `make test` proves each generation's ways and each architecture's once: 2018.1 and 2023.8
# in their other architecture only (their monolithic runs repeat what 2016.4.9, 2019.8,
# 2021.7 and 2025.12 prove in that architecture, ~110 s each); `make matrix` runs both.
COMMON = MATRIX if FULL else tuple(v for v in MATRIX if v not in dict(OTHER_LAYOUTS))
# The first step has two masters: one drifts, the other's certificate is revoked, and one
# refresh and one `up` show and repair both (drift_then_repair).
SHAPE = (("compile02", "compile03"), ("compile02",), ()) if FULL else (("compile02", "compile03"), ())


@pytest.fixture(scope="module")
def generations(lab: LabClient) -> Iterator[None]:
    """Each test switches the lab to its generation straight from the last one's (a switch
    is ~9 s: six of them, not twelve); the default profile is back after the module."""
    try:
        yield
    finally:
        lab.set_pe_version(DEFAULT_GENERATION)
        lab.set_layout("")


def stack_config(lab: LabClient, shorts: tuple[str, ...], version: str) -> dict[str, object]:
    config = lab_stack_values(lab, shorts, **{"pe:version": version})
    if not lab.profile.tokens:  # before PE 2015.3: a certificate in the console's allowlist
        cert, key = lab.host("primary").cert_files()
        del config["pe:rbacTokenFile"]
        config["pe:classifierClientCert"] = Path(cert).read_text()
        config["pe:classifierClientKeyFile"] = key
    return config


def up(lab: LabClient, stack: CliStack, shorts: tuple[str, ...], version: str) -> CliRun:
    stack.set_config(stack_config(lab, shorts, version))
    return stack.up()


def allowlist(lab: LabClient, short: str, path: str) -> set[str] | None:
    text = lab.host(short).read(path)
    return None if text is None else set(text.split())


def assert_serving(lab: LabClient, run: HasOutputs, shorts: tuple[str, ...]) -> None:
    profile = lab.profile
    primary_digest = plan.digest_of(
        plan.parse_listing(lab.host("primary").run(plan.digest_command("/etc/puppet/code/environments")).stdout, [])
    )
    for short in shorts:
        certname = f"{short}.pelab.test"
        host = lab.host(short)
        cert = host.cert()
        assert cert is not None and {"puppet", "puppet.pelab.test", short, certname} <= cert.sans
        assert run.outputs(f"{certname}-master")["cert_fingerprint"] == cert.fingerprint_sha256
        # The agent is the generation's PE install, reached as PE links it.
        assert host.run(f"test -x {profile.bin_dir}/puppet && test -L /usr/local/bin/puppet").exit_status == 0
        if profile.pe_version >= (2019, 7):  # PE Compiler matches the certificate's pp_auth_role
            assert cert.extensions.get(PP_AUTH_ROLE) == "pe_compiler"
            group = lab.classifier().group("PE Compiler")
            trusted = {"trusted": {"certname": certname, "extensions": {"pp_auth_role": "pe_compiler"}}}
            classified = lab.classifier().request("POST", f"classified/nodes/{certname}", json=trusted).json()
            assert group["id"] in classified["groups"]
        else:
            assert is_pinned(lab.classifier().group("PE Master")["rule"], certname)
        if not profile.aio:  # PE 3.x: enable_ca_proxy set by the product, applied by the master run
            ca = requests.get(f"https://{certname}:8140/production/certificate/ca", verify=lab.ca_file, timeout=30)
            assert ca.status_code == 200 and ca.text == Path(lab.ca_file).read_text()
        if not profile.status_simple:  # Puppet Server < 2.6: the pool's check is a TLS handshake
            status = requests.get(f"https://{certname}:8140/status/v1/simple", verify=lab.ca_file, timeout=30)
            assert status.status_code == 404
        if profile.compilers_run_puppetdb:  # its own PuppetDB, admitted by PE-PostgreSQL
            assert pg_ident_entries(lab, certname) == 3
            pdb = requests.get(
                f"https://{certname}:8081/status/v1/services/puppetdb-status", verify=lab.ca_file, timeout=30
            )
            assert pdb.status_code == 200 and pdb.json()["state"] == "running", pdb.text
        # A repair that restarted the compile service (a re-issued certificate) leaves HAProxy
        # to see it fail a check and pass again: its own rise/fall, within a minute.
        member = ("puppet_compilers", certname)
        assert wait_for(lambda member=member: lb_stats(lab)[member].is_healthy, 60, 1.0)
        assert run.outputs(f"{certname}-pool")["status"] == "UP"
        code = run.outputs(f"{certname}-code")
        assert code["status"] == "in sync" and code["digest"] == primary_digest
        catalog = lab.catalog(short)
        assert catalog.status_code == 200 and MASTER_CLASS in catalog.json()["classes"]
    certnames = {f"{s}.pelab.test" for s in shorts}
    for role, path in (("puppetdb", profile.puppetdb_allowlist), ("console", profile.console_allowlist)):
        listed = allowlist(lab, lab.role_host(role).spec.short, path)
        assert listed is not None and certnames <= listed, (path, listed)
    if profile.file_sync_conf:  # PE 2015.3+: the primary's run made its file sync serve them
        text = lab.host("primary").read(profile.file_sync_conf) or ""
        assert certnames <= set(client_certnames(text, profile.file_sync_conf) or ()), text
    else:
        assert lab.host("primary").read("/etc/puppetlabs/puppetserver/conf.d/file-sync.conf") is None
    pool = {name for (backend, name) in lb_stats(lab) if backend == "puppet_compilers"}
    assert pool == certnames


def assert_removed(lab: LabClient, run: HasOutputs | None, certname: str, serial: int) -> None:
    assert ("puppet_compilers", certname) not in lb_stats(lab)
    assert lab.ca_state(certname) is None  # revoked, then cleaned
    crl = lab.host("primary").run("openssl crl -in /var/lib/puppet/ssl/crl.pem -noout -text").stdout
    assert f"{serial:X}" in crl.replace(":", "").upper()  # revoked
    assert not is_pinned(lab.classifier().group("PE Master")["rule"], certname)
    nodes = pdb_node(lab, certname)
    assert nodes is None or nodes.get("deactivated"), nodes
    assert pg_ident_entries(lab, certname) == 0


def pg_ident_entries(lab: LabClient, certname: str) -> int:
    """Lines of PE-PostgreSQL's pg_ident.conf (on the database host) that map certname."""
    text = lab.role_host("database").read(lab.profile.postgresql_data + "/pg_ident.conf") or ""
    return sum(1 for line in text.splitlines() if line.split()[1:2] == [certname])


def accepts(url: str, cert: tuple[str, str], ca_file: str) -> bool:
    """Whether the server at url lets a TLS client with this certificate in."""
    try:
        requests.get(url, cert=cert, verify=ca_file, timeout=30)
        return True
    except requests.exceptions.ConnectionError:  # a refused client certificate ends the handshake
        return False


def saved_identity(lab: LabClient, short: str, into: Path) -> tuple[str, str]:
    """A copy of a master's certificate and key (its delete removes the originals)."""
    paths = []
    for kind, original in zip(("cert", "key"), lab.host(short).cert_files(), strict=True):
        copy = into / f"{short}-{kind}.pem"
        copy.write_bytes(Path(original).read_bytes())
        paths.append(str(copy))
    return paths[0], paths[1]


def assert_refused_everywhere(lab: LabClient, removed: tuple[str, str], servers: list[str]) -> None:
    """Every remaining Puppet Server refuses the revoked certificate (it took the new CRL the
    generation's way: a restart, a reload or a Puppet run) and still lets a valid one in."""
    valid = lab.host("primary").cert_files()
    for server in servers:
        url = f"https://{server}:8140/status/v1/simple"
        assert accepts(url, valid, lab.ca_file), f"{server} does not answer a valid client"
        assert not accepts(url, removed, lab.ca_file), f"{server} still lets the revoked certificate in"


def assert_dialect(log: str, version: str) -> None:
    """The generation's own ways, as the progress lines name them: how the CA signs (`puppet
    cert` up to 2018.1, its HTTP API from 2019) and how the master is classified (a rule
    rewrite before 2016.1, the pin endpoint, or from 2019.7 PE Compiler by the certificate's
    pp_auth_role, nothing pinned, so the first run applies the master profile and no second
    run is made). The lab refuses the other ways (test_generation_surface.py)."""
    generation = generation_for(version)
    signer = "puppet cert --allow-dns-alt-names sign" if generation.ca_cli == "puppet-cert" else "the CA's HTTP API"
    assert f"SANs ({signer})" in log, log
    if generation.classification == "trusted":  # the first run's catalog has the master profile: one run
        assert "pinned to" not in log, log
        assert f"first agent run: done ({MASTER_CLASS} applied)" in log and "master run: skipped" in log, log
    else:  # PE's order: run, pin, run again
        how = "pin endpoint" if generation.classification == "pin" else "rule rewrite"
        assert f"pinned to {generation.node_group} ({how}), verified" in log, log
        assert "master run: catalog with the master profile applied" in log, log


def primary_run_label(lab: LabClient) -> str:
    """How the product names the primary's run: one run for every role the primary holds."""
    if lab.role_host("puppetdb").fqdn == lab.host("primary").fqdn:
        return "primary run (PuppetDB, console, primary)"
    return "primary run"


def drift_then_repair(lab: LabClient, stack: CliStack, step: tuple[str, ...], version: str) -> None:
    """What `pulumi refresh` reports, the next `pulumi up` repairs, through the program (one
    provisioning path); then `pulumi preview --expect-no-changes` passes. Two masters drift
    at once, each its own way, so one refresh and one `up` cover both: the first is unpinned
    from its group (where the generation pins) with its compile service stopped, and the
    primary's file sync forgets both; the second's certificate is revoked on the CA (refresh
    drops it from the state; `up` cleans it on the CA and creates it again)."""
    drifted, revoked = step[0], step[1]
    certname, master = f"{drifted}.pelab.test", f"{drifted}.pelab.test-master"
    revoked_certname, revoked_master = f"{revoked}.pelab.test", f"{revoked}.pelab.test-master"
    generation = generation_for(version)
    pins = generation.classification != "trusted"
    if pins:
        unpin(lab, certname, generation.node_group, endpoint=generation.classification == "pin")
        assert not is_pinned(lab.classifier().group(generation.node_group)["rule"], certname)
    stop_compile_service(lab, drifted)
    file_sync = lab.profile.file_sync_conf
    if file_sync:  # the primary's file sync as if its run never saw the masters (PE 2015.3+)
        lab.host("primary").put(file_sync, b"file-sync: {\n    client-certnames: [\n    ]\n}\n")
    serial = int(stack.outputs(revoked_master)["cert_serial"])
    revoke_on_ca(lab, revoked_certname)
    refreshed = stack.refresh()
    steps = refreshed.steps()
    assert ("update", master) in steps and ("delete", revoked_master) in steps, steps  # the refresh shows both
    assert revoked_master not in stack.resources()  # gone from the state
    status = stack.outputs(master)["status"]
    assert status.startswith("drifted:") and "compile service not running" in status, status
    assert ("not pinned" in status) == pins, status
    if file_sync:
        refresh_status = stack.outputs("gen-infra-refresh")["status"]
        assert f"primary file sync clients {file_sync} lacks {certname}" in refresh_status, refresh_status
    run = up(lab, stack, step, version)
    assert ("update", master) in run.steps() and ("create", revoked_master) in run.steps(), run.steps()
    if file_sync:
        assert ("update", "gen-infra-refresh") in run.steps()
        assert f"[gen-infra-refresh] {primary_run_label(lab)}: done in" in run.diagnostics()
    assert "certificate revoked: cleaning it on the CA and requesting a new one" in run.diagnostics()
    entry = lab.ca_entry(revoked_certname)
    assert entry is not None and entry["state"] == "signed" and int(entry["serial_number"]) != serial
    assert served_fingerprint(lab, revoked) == stack.outputs(revoked_master)["cert_fingerprint"]  # the new one
    assert_serving(lab, stack, step)
    assert stack.preview("--expect-no-changes", check=False).returncode == 0


@pytest.mark.parametrize(("version", "layout"), [*((v, "") for v in COMMON), *OTHER_LAYOUTS])
def test_program_on_each_generation(
    lab: LabClient, generations: None, version: str, layout: str, tmp_path: Path
) -> None:
    shorts = sorted({s for step in SHAPE for s in step})
    bare_masters(lab, shorts)
    primary = lab.host("primary").fqdn
    lab.set_pe_version(version)
    lab.set_layout(layout)
    assert lab.lab.settings().active_layout == (layout or "monolithic")
    stack = CliStack("gen", tmp_path / "stack", stack_config(lab, (), version))
    try:
        previous: tuple[str, ...] = ()
        for step in SHAPE:
            serials = {s: int(stack.outputs(f"{s}.pelab.test-master")["cert_serial"]) for s in previous}
            leaving = {s: saved_identity(lab, s, tmp_path) for s in set(previous) - set(step)}
            for identity in leaving.values():  # let in before its removal
                assert accepts(f"https://{primary}:8140/status/v1/simple", identity, lab.ca_file)
            if lab.profile.pe_version >= (2019, 7):
                # A compiler an admin also pinned to PE Master (legacy style, or adopted):
                # its removal unpins it (PE 2019.8's removal page), assert_removed checks.
                for gone in leaving:
                    lab.classifier().pin("PE Master", [f"{gone}.pelab.test"]).raise_for_status()
            run = up(lab, stack, step, version)
            assert_serving(lab, stack, step)
            if not previous:  # the first step: refresh -> up repairs (issue 15 (a))
                assert_dialect(run.diagnostics(), version)
                drift_then_repair(lab, stack, step, version)
            for gone, identity in leaving.items():
                assert_removed(lab, stack, f"{gone}.pelab.test", serials[gone])
                assert_refused_everywhere(lab, identity, [primary, *(f"{s}.pelab.test" for s in step)])
            previous = step
    finally:
        stack.destroy(check=False)
        bare_masters(lab, shorts)
