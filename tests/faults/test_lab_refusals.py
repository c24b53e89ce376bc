"""Refused before anything changes, against the lab's real hosts: a foreign agent, a CSR
asking for other alt names, a CA that refuses alt names, a wrong SSH key, a different host
answering the address, a compiler without its availability group on a peadm install; and
the provider killed mid-operation (a second Ctrl-C)."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.client import LabClient
from provider.compile_master import PeCompileMasterProvider
from provider.core.errors import (
    AvailabilityGroupError,
    CaRefusedError,
    ForeignAgentError,
    HostKeyMismatchError,
    SanMismatchError,
)
from provider.master.config import PEADM_AVAILABILITY_GROUP_OID
from tests.harness.provider_server import Engine, ProviderError, ProviderServer, Secret
from tests.labtests.helpers import puppetserver
from tests.labtests.test_compile_master import bare, master_inputs

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def untouched(lab: LabClient, short: str) -> None:
    """Nothing of ours on the host or the CA."""
    host = lab.host(short)
    assert not host.read("/etc/puppet/csr_attributes.yaml")
    assert lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").exit_status != 0


def test_a_wrong_ssh_key_or_another_host_answering_is_refused_before_any_change(
    lab: LabClient, server: ProviderServer
) -> None:
    short = "compile12"
    host = lab.host(short)
    bare(lab, short)
    engine = Engine(server, PeCompileMasterProvider(), f"master-{short}", "PeCompileMaster")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{tmp}/k"], check=True)
        wrong_key = Path(f"{tmp}/k").read_text()
    with pytest.raises(ProviderError) as err:
        engine.up(master_inputs(lab, short, ssh_private_key=Secret(wrong_key)))
    assert "SSH login as root was refused" in err.value.details and host.fqdn in err.value.details
    assert wrong_key.splitlines()[1] not in err.value.details + server.text()
    untouched(lab, short)

    # compile12's name, but compile13's host key pinned: "a different machine may be answering".
    other = lab.host("compile13")
    other_key = " ".join(Path(f"{other.paths.host_key}.pub").read_text().split()[:2])
    with pytest.raises(ProviderError) as err:
        engine.up(master_inputs(lab, short, ssh_host_key=other_key))
    message = err.value.message  # one message, advice for this failure (not the step's)
    assert "is not the pinned one" in message and host.fqdn in message
    assert f"What to do: {HostKeyMismatchError.advice}" in message
    untouched(lab, short)
    assert engine.state is None


@pytest.fixture
def peadm_groups(lab: LabClient) -> Iterator[dict[str, str]]:
    """PE Compiler Group A and B under PE Compiler, as peadm's setup::node_manager creates
    them (rule: pp_auth_role pe_compiler and peadm_availability_group A/B); removed after."""
    classifier = lab.classifier()
    parent = classifier.group("PE Compiler")["id"]
    made: dict[str, str] = {}
    try:
        for letter in "AB":
            rule = [
                "and",
                ["=", ["trusted", "extensions", "pp_auth_role"], "pe_compiler"],
                ["=", ["trusted", "extensions", PEADM_AVAILABILITY_GROUP_OID], letter],
            ]
            body = {"name": f"PE Compiler Group {letter}", "parent": parent, "rule": rule, "classes": {}}
            resp = classifier.request("POST", "groups", json=body, allow_redirects=False)
            assert resp.status_code == 303, resp.text
            made[letter] = resp.headers["Location"].rsplit("/", 1)[1]
        yield made
    finally:
        for gid in made.values():
            classifier.request("DELETE", f"groups/{gid}")


def test_on_a_peadm_install_each_compiler_joins_the_availability_group_it_names(
    lab: LabClient, server: ProviderServer, peadm_groups: dict[str, str]
) -> None:
    short = "compile12"
    host = lab.host(short)
    bare(lab, short)
    engine = Engine(server, PeCompileMasterProvider(), f"master-{short}", "PeCompileMaster")
    try:
        with pytest.raises(ProviderError) as err:
            engine.up(master_inputs(lab, short))  # no availability_group on a peadm install
        message = err.value.message
        assert "PE Compiler Group A, PE Compiler Group B" in message and "availabilityGroup" in message, message
        assert f"What to do: {AvailabilityGroupError.advice}" in message
        untouched(lab, short)
        engine.up(master_inputs(lab, short, availability_group="B"))
        cert = host.cert()
        assert cert is not None and cert.extensions.get(PEADM_AVAILABILITY_GROUP_OID) == "B"
        extensions = {"pp_auth_role": "pe_compiler", PEADM_AVAILABILITY_GROUP_OID: "B"}
        body = {"trusted": {"certname": host.fqdn, "extensions": extensions}}
        groups = lab.classifier().request("POST", f"classified/nodes/{host.fqdn}", json=body).json()["groups"]
        assert peadm_groups["B"] in groups and peadm_groups["A"] not in groups
    finally:
        engine.destroy()
        bare(lab, short)


def test_refusals_change_nothing(lab: LabClient, server: ProviderServer) -> None:
    short = "compile12"
    host = lab.host(short)
    bare(lab, short)
    # A host whose agent (a PE install) belongs to another Puppet server.
    host.run(
        f"{lab.root}/inhost/bin/pelab-pe-install agent && "
        "puppet config set --section main server other-primary.example.com && "
        "mkdir -p /var/lib/puppet/ssl/private_keys && echo key > /var/lib/puppet/ssl/private_keys/x.pem"
    ).check()
    engine = Engine(server, PeCompileMasterProvider(), f"master-{short}", "PeCompileMaster")
    with pytest.raises(ProviderError) as err:
        engine.up(master_inputs(lab, short))
    message = err.value.message
    assert "not ours" in message and f"What to do: {ForeignAgentError.advice}" in message
    assert "other-primary.example.com" in (host.read("/etc/puppet/puppet.conf") or "")
    assert lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").exit_status != 0
    bare(lab, short)


def test_refusals_csr_with_other_sans_and_ca_refusing_alt_names(lab: LabClient, server: ProviderServer) -> None:
    from tests.labtests.helpers import install_agent

    short = "compile12"
    host = lab.host(short)
    bare(lab, short)
    # Someone requested a certificate for this host with other alt names: never sign it.
    install_agent(lab, host, [short, "evil.pelab.test"])
    engine = Engine(server, PeCompileMasterProvider(), f"master-{short}", "PeCompileMaster")
    with pytest.raises(ProviderError) as err:
        engine.up(master_inputs(lab, short))
    assert "refusing to sign" in err.value.message and f"What to do: {SanMismatchError.advice}" in err.value.message
    listed = lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").stdout
    assert "Requested Certificates" in listed  # still only requested: nothing signed
    assert engine.state is None

    # The CA refuses alt names: a clear error, and nothing signed.
    bare(lab, short)
    lab.lab.set_alt_names(False)
    try:
        with pytest.raises(ProviderError) as err:
            engine.up(master_inputs(lab, short))
        message = err.value.message
        assert "allow-subject-alt-names" in message and f"What to do: {CaRefusedError.advice}" in message
        assert (
            "Signed Certificates"
            not in lab.host("primary").run(f"{puppetserver(lab)} ca list --certname {host.fqdn}").stdout
        )
    finally:
        lab.lab.set_alt_names(True)
    bare(lab, short)


def test_killed_at_each_step_the_next_up_converges_without_duplicates(lab: LabClient) -> None:
    """A second Ctrl-C kills the provider mid-operation: create was never recorded, so the
    next `up` calls create again - which must resume, not duplicate."""
    import threading
    import time

    short = "compile10"
    host = lab.host(short)
    bare(lab, short)
    lab.set_pe_version("2016.4.9")
    try:
        inputs = master_inputs(lab, short, pe_version="2016.4.9")
        name = f"master-{short}"
        for after in ("trust", "install", "sign", "first agent run", "classify"):
            with ProviderServer() as srv:
                engine = Engine(srv, PeCompileMasterProvider(), name, "PeCompileMaster")

                def killed_create(e: Engine = engine) -> None:
                    with pytest.raises(ProviderError):
                        e.up(inputs)

                thread = threading.Thread(target=killed_create, daemon=True)
                thread.start()
                deadline = time.monotonic() + 300
                while f"[{name}] {after}:" not in srv.text() and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert f"[{name}] {after}:" in srv.text(), srv.text()
                srv.close()  # kill -9 of the provider process, mid-operation
                thread.join(30)
        with ProviderServer() as srv:
            engine = Engine(srv, PeCompileMasterProvider(), name, "PeCompileMaster")
            state = engine.up(inputs)
            assert state.outputs["status"] == "running"
            listed = lab.host("primary").run("puppet cert list --all").check().stdout  # Puppet 4's CA CLI
            entries = [line for line in listed.splitlines() if f'"{host.fqdn}"' in line]
            assert len(entries) == 1 and entries[0].startswith("+")  # one signed cert, no stray CSR
            rule = lab.classifier().group("PE Master")["rule"]
            assert rule.count(["=", "name", host.fqdn]) == 1  # pinned once
            engine.destroy()
    finally:
        lab.set_pe_version("2019.8")
