"""What CompileMasterBatch verified, handed to the master's own PeCompileMaster create in the
same provider process (provider/master/handoff.py): used once, only by the same master,
and a create without it still connects and verifies."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from provider import compile_master
from provider.core.errors import ProviderError, ProviderFailure
from provider.master import context, handoff
from provider.master.certs import IssuedCert, fingerprint_of_pem
from provider.master.config import MasterConfig
from provider.pe.primary import Primary
from provider.ssh.session import SshSession
from tests.unit.certs import key_and_cert
from tests.unit.test_master_config import valid

ISSUED = IssuedCert("AB:CD", 4242, frozenset({"c1.example.com", "c1", "puppet"}), (("pp_auth_role", "pe_compiler"),))
CA_PEM = "the PE CA's PEM"  # only create's outputs read it: that test makes a real one


def converged(cfg: MasterConfig, **found: Any) -> context.Context:
    """A Context as converge() leaves it (no session is used: nothing runs)."""
    ctx = context.Context(
        cfg, cast(SshSession, None), cast(SshSession, None), lambda _s, _w: None, ca=cast(Primary, object())
    )
    ctx.issued, ctx.group_id, ctx.ca_pem = ISSUED, "group-1", CA_PEM
    ctx.installed = {"agent_config": True, "compile_service": True}
    for key, value in found.items():
        setattr(ctx, key, value)
    return ctx


def config(**changes: Any) -> MasterConfig:
    return MasterConfig.from_props(valid(**changes))


def test_a_record_is_taken_once_by_the_same_master() -> None:
    handoff_ = handoff.Handoff()
    handoff_.record(converged(config()))
    # The PeCompileMaster's own inputs: peers, their known_hosts lines, deadlines and the
    # flag differ from the batch's entry, and name the same master.
    taken = handoff_.take(config(batch_provisioned=True, peer_masters=[], run_timeout=99, resource_name="x"))
    assert taken is not None and taken.issued == ISSUED and taken.group_id == "group-1"
    assert taken.installed == {"agent_config": True, "compile_service": True} and taken.age >= 0
    assert handoff_.take(config()) is None  # once


@pytest.mark.parametrize(
    "changes",
    [
        {"host": "c9.example.com"},
        {"ssh_port": 2222},
        {"dns_alt_names": ["c1"]},
        {"availability_group": "A"},
        {"primary_certname": "other.example.com"},
        {"pe_version": "2021.7"},
        {"classifier_url": "https://other.example.com:4433"},
    ],
)
def test_a_record_for_another_master_is_not_used(changes: dict[str, Any]) -> None:
    handoff_ = handoff.Handoff()
    handoff_.record(converged(config()))
    assert handoff_.take(config(**changes)) is None


def test_a_converge_that_did_not_reach_its_checks_records_nothing_and_a_new_one_forgets() -> None:
    handoff_ = handoff.Handoff()
    handoff_.record(converged(config(), issued=None))
    handoff_.record(converged(config(), group_id=""))
    assert handoff_.take(config()) is None
    handoff_.record(converged(config()))
    handoff_.forget("c1.example.com")  # the batch converges it again (a later call)
    assert handoff_.take(config()) is None


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time create opens its SSH sessions (the stand-in then fails the call)."""
    opened: list[str] = []

    def refuse(cfg: MasterConfig, _stack: Any) -> Any:
        opened.append(cfg.host)
        raise ProviderError("no SSH in a unit test")

    monkeypatch.setattr(compile_master, "_sessions", refuse)
    return opened


def test_create_reports_what_the_batch_verified_without_connecting(
    connections: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(handoff, "HANDOFF", handoff.Handoff())
    props = valid(batch_provisioned=True, resource_name="c1-master")
    _, ca_pem = key_and_cert(tmp_path, "primary.example.com")
    handoff.HANDOFF.record(converged(MasterConfig.from_props(props), ca_pem=ca_pem.decode()))
    created = compile_master.PeCompileMasterProvider().create(props)
    outputs = created.outs or {}
    assert created.id == "c1.example.com" and outputs["status"] == "running"
    assert outputs["cert_fingerprint"] == "AB:CD" and outputs["cert_serial"] == "4242"
    assert outputs["sans"] == ["c1", "c1.example.com", "puppet"] and outputs["group_id"] == "group-1"
    assert outputs["installed"] == {"agent_config": True, "compile_service": True}
    assert outputs["ca_fingerprint"] == fingerprint_of_pem(ca_pem) and outputs["dialect"] == "PE 2019.8"
    assert connections == []
    # Without the record (taken), or without batch_provisioned, create goes to the hosts.
    with pytest.raises(ProviderFailure):
        compile_master.PeCompileMasterProvider().create(props)
    handoff.HANDOFF.record(converged(MasterConfig.from_props(props)))
    with pytest.raises(ProviderFailure):
        compile_master.PeCompileMasterProvider().create({**props, "batch_provisioned": False})
    assert connections == ["c1.example.com", "c1.example.com"]
