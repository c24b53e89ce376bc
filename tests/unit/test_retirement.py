"""Which masters one delete call removes together (provider/core/retirement.py), and the CRL
steps' single flight (provider/crl_refresh.Ledger): the pure rules, no hosts."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from provider.core.errors import ProviderError
from provider.core.retirement import Retirement
from provider.master import removal
from provider.pe import crl_refresh
from tests.unit.test_crl_refresh import FakeHost, lists_serial, server
from tests.unit.test_generation import master_config, master_props


def leaving(*names: str) -> dict[str, dict[str, str]]:
    return {n: {"certname": n, "host": f"{n}.host"} for n in names}


def test_a_master_nobody_said_is_leaving_is_removed_alone() -> None:
    registry = Retirement()
    registry.drained("b")  # drained, but its master stays (a member replaced, say)
    claim = registry.claim("a")
    assert [name for name, _ in claim.group] == ["a"] and claim.waiting is None


def test_only_leaving_and_drained_masters_join_the_first_delete() -> None:
    registry = Retirement()
    registry.stack_changed(leaving("a", "b", "c", "d"), staying=["e"])
    for name in ("b", "c", "e"):
        registry.drained(name)
    registry.draining("c")  # admitted again, or its member's delete started and has not ended
    claim = registry.claim("a")
    assert [name for name, _ in claim.group] == ["a", "b"]  # d is not drained, c no longer, e stays
    assert claim.group[1][1] == {"certname": "b", "host": "b.host"}  # the inputs the batch saw


def test_a_grouped_masters_own_delete_waits_and_reports_the_outcome() -> None:
    registry = Retirement()
    registry.stack_changed(leaving("a", "b", "c"), staying=[])
    registry.drained("b")
    registry.drained("c")
    registry.claim("a")
    waiting = registry.claim("b").waiting
    assert waiting is not None and waiting.leader == "a" and not waiting.done.is_set()
    failure = ProviderError("revoke failed")
    registry.finish({"c": failure}, ["a", "b", "c"])
    assert waiting.done.is_set() and waiting.error is None  # b was removed
    assert registry.claim("b").waiting is waiting  # asked again: still done
    # c failed: its own delete call claims it anew and tries again, alone
    retry = registry.claim("c")
    assert [name for name, _ in retry.group] == ["c"]
    assert "b" not in registry.leaving() and "c" in registry.leaving()


def test_a_failed_removal_is_reported_to_a_call_already_waiting() -> None:
    registry = Retirement()
    registry.stack_changed(leaving("a", "b"), staying=[])
    registry.drained("b")
    registry.claim("a")
    waiting = registry.claim("b").waiting
    failure = ProviderError("CRL refresh failed")
    registry.finish({"a": failure, "b": failure}, ["a", "b"])
    assert waiting is not None and waiting.error is failure


def test_a_master_back_in_the_config_forgets_its_leaving() -> None:
    registry = Retirement()
    registry.stack_changed(leaving("a", "b"), staying=[])
    registry.drained("b")
    registry.claim("a")
    registry.finish({}, ["a", "b"])
    registry.stack_changed({}, staying=["a", "b"])  # added again in a later `up`
    assert registry.leaving() == frozenset()
    assert [name for name, _ in registry.claim("a").group] == ["a"]  # removed again: anew
    registry.present("b")
    assert registry.claim("b").waiting is None


def test_a_run_is_skipped_when_the_hosts_crl_already_lists_every_serial() -> None:
    fake = FakeHost(crl_file=b"new")
    crl_refresh.carry_out(
        crl_refresh.CrlStep("b", "run"), server(fake, "2019.8"), [7], lists_serial, 60, 60, 0.0, crl_refresh.Ledger()
    )
    assert not any("--onetime" in c for c in fake.commands)
    unknown = FakeHost(crl_file=b"new")  # no serial known: nothing to check first, so it runs
    crl_refresh.carry_out(
        crl_refresh.CrlStep("b", "run"), server(unknown, "2019.8"), [], lists_serial, 60, 60, 0.0, crl_refresh.Ledger()
    )
    assert any("--onetime" in c for c in unknown.commands)


def test_a_restart_that_began_after_the_revocation_covers_it() -> None:
    """Each host's CRL file already lists every serial (the copy is tested in
    test_crl_refresh.py): only the ledger decides whether a restart is repeated."""
    ledger = crl_refresh.Ledger()
    step = crl_refresh.CrlStep("b", "restart")

    def listed(pem: bytes, _serial: int) -> bool:
        return pem == b"new"

    revoked = time.monotonic()
    first = FakeHost(crl_file=b"new")
    crl_refresh.carry_out(step, server(first, "3.7"), [7], listed, 60, 60, revoked, ledger)
    again = FakeHost(crl_file=b"new")
    crl_refresh.carry_out(step, server(again, "3.7"), [8], listed, 60, 60, revoked, ledger)
    assert not any("restart" in c for c in again.commands)  # the first one began after `revoked`
    later = time.monotonic()  # a revocation after that restart began needs one of its own
    crl_refresh.carry_out(step, server(again, "3.7"), [9], listed, 60, 60, later, ledger)
    assert any("pe-puppetserver restart" in c for c in again.commands)


def test_the_first_delete_removes_the_group_and_the_others_report_its_outcome(monkeypatch: Any) -> None:
    """removal.delete with the remote work stubbed: who removes whom, and what each
    master's own delete call then says to the engine."""
    registry = Retirement()
    monkeypatch.setattr(removal, "RETIREMENT", registry)
    groups: list[list[str]] = []
    outcome: dict[str, BaseException] = {}

    def remove(group: list[removal.Leaving], _log: object) -> dict[str, BaseException]:
        groups.append([m.cfg.certname for m in group])
        return dict(outcome)

    monkeypatch.setattr(removal, "remove", remove)
    props = master_props()
    registry.stack_changed({n: {**props, "certname": n} for n in ("b.example.com", "c.example.com")}, staying=[])
    registry.drained("b.example.com")
    registry.drained("c.example.com")
    outcome["c.example.com"] = ProviderError("[c.example.com] revoke failed")
    removal.delete(replace(master_config(), certname="a.example.com"), 7)  # a itself is fine
    assert groups == [["a.example.com", "b.example.com", "c.example.com"]]
    removal.delete(replace(master_config(), certname="b.example.com"), 8)  # done by a's call
    assert len(groups) == 1
    outcome.clear()  # c's own call tries again, alone, and this time it goes through
    removal.delete(replace(master_config(), certname="c.example.com"), 9)
    assert groups[1:] == [["c.example.com"]]
    outcome["d.example.com"] = ProviderError("[d.example.com] unreachable")
    with pytest.raises(ProviderError, match="unreachable"):
        removal.delete(replace(master_config(), certname="d.example.com"), None)
