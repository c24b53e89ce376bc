"""PeCompileMaster driven on its own (not through the program) against the lab on its default
generation, through the engine-faithful harness: what really happened on the hosts after
create, refresh, update, adopt and delete. Each generation's own ways (the CA's dialect,
pinning by rule rewrite or the pin endpoint, a revoked certificate re-issued) go through the
program in the generation matrix (test_generations.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.client import LabClient
from provider.compile_master import PeCompileMasterProvider
from provider.pe.generation import generation_for
from tests.harness.provider_server import Engine, ProviderServer, Secret
from tests.labtests.helpers import clean_on_ca, pdb_node, puppetserver, stop_compile_service

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def master_inputs(lab: LabClient, short: str, pe_version: str = "2019.8", **overrides: Any) -> dict[str, Any]:
    host = lab.host(short)
    primary = lab.host("primary")
    key = Path(lab.key).read_text()
    props: dict[str, Any] = {
        "resource_name": f"master-{short}",  # what the PeCompileMaster resource class adds
        "host": host.fqdn,
        "ssh_private_key": Secret(key),
        "ssh_known_hosts": Path(lab.known_hosts).read_text(),
        "certname": host.fqdn,
        "dns_alt_names": [short, "puppet", "puppet.pelab.test"],
        "primary_host": primary.fqdn,
        "primary_ssh_private_key": Secret(key),
        "primary_ssh_host_key": " ".join(Path(f"{primary.paths.host_key}.pub").read_text().split()[:2]),
        "primary_certname": primary.fqdn,
        "pe_version": pe_version,
        "classifier_url": lab.console_url(),
        "puppetdb_url": f"https://{lab.role_host('puppetdb').fqdn}:8081",
        "run_timeout": 600,
        "service_timeout": 240,
    }
    if generation_for(pe_version).compiler_puppetdb:  # PE-PostgreSQL's host
        database = lab.role_host("database")
        props["database_host"] = database.fqdn
        props["database_ssh_private_key"] = Secret(key)
        props["database_ssh_host_key"] = " ".join(Path(f"{database.paths.host_key}.pub").read_text().split()[:2])
    if generation_for(pe_version).tokens_supported:
        props["rbac_token"] = Secret(lab.token())
    else:
        cert, keyfile = primary.cert_files()
        props["classifier_client_cert"] = Path(cert).read_text()
        props["classifier_client_key"] = Secret(Path(keyfile).read_text())
    props.update(overrides)
    return props


def bare(lab: LabClient, short: str) -> None:
    host = lab.host(short)
    clean_on_ca(lab, host.fqdn)
    host.wipe_agent()
    for group in ("PE Master",):
        lab.classifier().unpin(group, [host.fqdn])


def test_create_refresh_delete_on_pe_2019_8(lab: LabClient, server: ProviderServer) -> None:
    short = "compile14"
    host = lab.host(short)
    bare(lab, short)
    engine = Engine(server, PeCompileMasterProvider(), f"master-{short}", "PeCompileMaster")
    inputs = master_inputs(lab, short)
    state = engine.up(inputs)

    cert = host.cert()
    assert cert is not None
    assert cert.sans == {"compile14.pelab.test", "compile14", "puppet", "puppet.pelab.test"}
    assert cert.extensions.get("1.3.6.1.4.1.34380.1.3.13") == "pe_compiler"
    assert state.outputs["cert_fingerprint"] == cert.fingerprint_sha256
    assert state.outputs["cert_serial"] == str(cert.serial)
    assert state.outputs["status"] == "running" and state.outputs["dialect"] == "PE 2019.8"
    compiler = lab.classifier().group("PE Compiler")
    assert state.outputs["group_id"] == compiler["id"]
    assert (
        host.run(f"curl -sS --cacert /var/lib/puppet/ssl/certs/ca.pem https://{host.fqdn}:8140/status/v1/simple")
        .check()
        .stdout.strip()
        == "running"
    )
    assert "running" in host.run("service puppet status").stdout or host.run("service puppet status").exit_status == 0
    # Progress lines, one per step, prefixed with the resource name.
    text = server.text()
    for step in (
        "preflight",
        "install",
        "sign",
        "verify certificate",
        "first agent run",
        "classify",
        "master run",
        "compile service",
    ):
        assert f"[master-{short}] {step}:" in text
    # PE Compiler classified it by pp_auth_role before its first run: that run applied the
    # master profile, so no second run.
    assert f"[master-{short}] master run: skipped: the first run already applied" in text
    # Secrets stay secret: not in the serialized state, the progress lines or the outputs' plain keys.
    key = Path(lab.key).read_text()
    assert key.split("\n")[1] not in json.dumps(state.serialized_state())
    assert key.split("\n")[1] not in text

    # A no-change preview says none; refresh finds it healthy.
    _, diff = engine.preview(inputs)
    assert diff is not None and diff.changes == "none"
    refreshed = engine.refresh()
    assert refreshed is not None and refreshed.outputs["status"] == "running"

    # Re-running create on the same host converges without duplicates (resume).
    again = Engine(server, PeCompileMasterProvider(), f"master-{short}", "PeCompileMaster")
    again.up(inputs)
    assert host.cert() == cert  # same certificate: not re-issued
    assert "already signed with the requested alt names and extensions: skipped" in server.text()

    # What a batch-provisioned master's own resource checks: the identity its 8140 serves.
    verified = Engine(server, PeCompileMasterProvider(), f"verify-{short}", "PeCompileMaster").up(
        {**inputs, "batch_provisioned": True}
    )
    assert verified.outputs["cert_fingerprint"] == cert.fingerprint_sha256
    assert verified.outputs["group_id"] == compiler["id"]
    assert f"[master-{short}] verify certificate: 8140 serves serial {cert.serial}" in server.text()
    # Not ready (nothing answers on 8140) and not just converged by the batch (re-created
    # after a refresh dropped it, or replaced): it says why and converges itself.
    stop_compile_service(lab, short)
    mark = len(server.text())
    repaired = Engine(server, PeCompileMasterProvider(), f"verify-{short}", "PeCompileMaster").up(
        {**inputs, "batch_provisioned": True}
    )
    log = server.text()[mark:]
    assert f"[{host.fqdn}] verify: no TLS handshake verified against the PE CA" in log
    assert "converging it here" in log and f"[master-{short}] compile service:" in log
    assert repaired.outputs["status"] == "running" and repaired.outputs["cert_fingerprint"] == cert.fingerprint_sha256
    assert host.run(f"ls /tmp/pe-compile-masters-{host.fqdn}-verify-ca.pem").exit_status != 0  # cleaned up

    # An in-place update: environmentpath changes puppet.conf and is verified by a run.
    moved = {**inputs, "environmentpath": "/etc/puppet/code/environments"}
    _, diff = engine.preview(moved)
    assert diff is not None and diff.changes == "some" and not diff.replaces
    engine.up(moved)
    assert engine.calls[-1] == "update"
    assert "environmentpath = /etc/puppet/code/environments" in (host.read("/etc/puppet/puppet.conf") or "")

    # adopt: another stack takes over the healthy master without reinstalling.
    mark = len(server.text())
    adopted = Engine(server, PeCompileMasterProvider(), f"adopt-{short}", "PeCompileMaster").up(
        {**moved, "resource_name": f"adopt-{short}", "adopt": True}
    )
    assert adopted.outputs["cert_fingerprint"] == cert.fingerprint_sha256
    log = server.text()[mark:]
    assert f"[adopt-{short}] adopt: healthy master taken over without reinstalling" in log
    assert f"[adopt-{short}] install" not in log

    engine.destroy()
    listed = lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}")
    assert listed.exit_status != 0  # cleaned on the CA
    crl = lab.host("primary").run("openssl crl -in /var/lib/puppet/ssl/crl.pem -noout -text").stdout
    assert f"{cert.serial:X}".upper() in crl.replace(":", "").upper()  # revoked
    node = pdb_node(lab, host.fqdn)
    assert node is not None and node["deactivated"]
    assert host.cert() is None  # the host's identity is removed too
    # Deleting again (already gone) succeeds.
    again.destroy()
