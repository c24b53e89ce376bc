"""PoolMember and FileSync through the real provider server, without the lab: check()
refusals and what diff() plans - with no remote call for existing resources (every
address is a closed loopback port, so a remote attempt would fail the call)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from provider.file_sync import FileSyncProvider
from provider.pool_admission import PoolAdmissionProvider
from provider.pool_member import PoolMemberProvider
from tests.faults import test_bad_input
from tests.harness.provider_server import UNKNOWN, Engine, ProviderServer, Secret, StateEntry

KEY = Secret(
    Ed25519PrivateKey.generate()
    .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    .decode()
)


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def member(**overrides: Any) -> dict[str, Any]:
    """test_bad_input's valid PoolMember inputs, with a key paramiko can load."""
    return test_bad_input.member(**{"lb_ssh_private_key": KEY, **overrides})


def sync(**overrides: Any) -> dict[str, Any]:
    """test_bad_input's valid FileSync inputs, with keys paramiko can load."""
    return test_bad_input.sync(**{"ssh_private_key": KEY, "primary_ssh_private_key": KEY, **overrides})


def existing(server: ProviderServer, provider: Any, type_name: str, inputs: dict[str, Any], **outs: Any) -> Engine:
    """An engine whose state holds a resource created from `inputs` (as after an `up`)."""
    engine = Engine(server, provider, "r", type_name)
    plain, secret = engine._plain(inputs)
    engine.state = StateEntry("id", plain, {**plain, **outs}, secret)
    return engine


@pytest.mark.parametrize(
    ("override", "prop"),
    [
        ({"server_name": "compile 01"}, "server_name"),
        ({"server_name": "c;reload"}, "server_name"),
        ({"backend": "a b"}, "backend"),
        ({"port": 0}, "port"),
        ({"port": 65536}, "port"),
        ({"weight": -1}, "weight"),
        ({"address": "not an address"}, "address"),
        ({"driver": "nginx"}, "driver"),
        ({"lb_ssh_host_key": ""}, "lb_ssh_host_key"),
        ({"check_ca_file": "pe-ca.pem"}, "check_ca_file"),
    ],
)
def test_pool_member_check_refuses_bad_input(server: ProviderServer, override: dict[str, Any], prop: str) -> None:
    failures = Engine(server, PoolMemberProvider(), "m", "PoolMember").check(member(**override)).failures
    assert prop in dict(failures), failures


def test_pool_member_diff_weight_in_place_names_replace(server: ProviderServer) -> None:
    engine = existing(server, PoolMemberProvider(), "PoolMember", member(), status="UP")
    _, diff = engine.preview(member())
    assert diff is not None and diff.changes == "none"
    _, diff = engine.preview(member(weight=50))
    assert diff is not None and diff.changes == "some" and not diff.replaces
    _, diff = engine.preview(member(address="10.0.0.12"))  # same name, new address: remove first
    assert diff is not None and diff.replaces == ["address"] and diff.delete_before_replace
    _, diff = engine.preview(member(server_name="compile01b"))  # new name: add first, then remove
    assert diff is not None and diff.replaces == ["server_name"] and not diff.delete_before_replace
    drifted = existing(server, PoolMemberProvider(), "PoolMember", member(), status="drifted: DOWN")
    _, diff = drifted.preview(member())
    assert diff is not None and diff.changes == "some" and not diff.replaces
    assert engine.calls.count("check") == 4  # and each was answered without a remote call


def test_pool_member_check_of_a_new_member_with_unreachable_lb_leaves_it_to_create(server: ProviderServer) -> None:
    assert Engine(server, PoolMemberProvider(), "m", "PoolMember").check(member()).failures == []
    bad_key = Engine(server, PoolMemberProvider(), "m", "PoolMember").check(member(lb_ssh_private_key=Secret("x")))
    assert "not an unencrypted" in dict(bad_key.failures)["lb_ssh_private_key"]
    assert Engine(server, PoolMemberProvider(), "m", "PoolMember").check(member(lb_host=UNKNOWN)).failures == []


def admission(*members: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    shared = {k: v for k, v in member().items() if k not in ("server_name", "address")}
    return {**shared, "members": list(members), **overrides}


def entry(name: str, address: str, weight: int = 100) -> dict[str, Any]:
    return {"server_name": name, "address": address, "weight": weight}


def test_pool_admission_check_names_the_member_and_the_key(server: ProviderServer) -> None:
    engine = Engine(server, PoolAdmissionProvider(), "a", "PoolAdmission")
    assert engine.check(admission(entry("compile01", "10.0.0.11"), entry("compile02", "10.0.0.12"))).failures == []
    failures = dict(engine.check(admission(entry("compile01", "10.0.0.11"), entry("c;reload", "10.0.0.12"))).failures)
    assert list(failures) == ["members[1].server_name"], failures
    twice = dict(engine.check(admission(entry("compile01", "10.0.0.11"), entry("compile01", "10.0.0.12"))).failures)
    assert "listed twice" in twice["members[1].server_name"]
    unknown = dict(engine.check(admission({**entry("compile01", "10.0.0.11"), "hostname": "x"})).failures)
    assert "unknown keys ['hostname']" in unknown["members[0]"]
    assert "lb_ssh_host_key" in dict(engine.check(admission(lb_ssh_host_key="")).failures)  # no members: still checked


def test_pool_admission_diff_is_inputs_only(server: ProviderServer) -> None:
    one = admission(entry("compile01", "10.0.0.11"))
    engine = existing(server, PoolAdmissionProvider(), "PoolAdmission", one, status="admitted")
    _, diff = engine.preview(one)
    assert diff is not None and diff.changes == "none"  # answered without a remote call (NOWHERE)
    _, diff = engine.preview(admission(entry("compile01", "10.0.0.11"), entry("compile02", "10.0.0.12")))
    assert diff is not None and diff.changes == "some" and not diff.replaces
    _, diff = engine.preview(admission(entry("compile01", "10.0.0.11", weight=50)))
    assert diff is not None and diff.changes == "some" and not diff.replaces


@pytest.mark.parametrize(
    ("override", "prop"),
    [
        ({"method": "scp"}, "method"),
        ({"schedule": "every 5 minutes"}, "schedule"),
        ({"excludes": ["$(reboot)"]}, "excludes"),
        ({"method": "r10k"}, "r10k_remote"),
        ({"nfs_options": "ro;reboot"}, "nfs_options"),
        ({"state_dir": "/etc/../x y"}, "state_dir"),
        ({"sync_timeout": 0}, "sync_timeout"),
        ({"host": "bad host"}, "host"),
    ],
)
def test_file_sync_check_refuses_bad_input(server: ProviderServer, override: dict[str, Any], prop: str) -> None:
    failures = Engine(server, FileSyncProvider(), "s", "FileSync").check(sync(**override)).failures
    assert prop in dict(failures), failures


def test_file_sync_diff_method_replaces_schedule_updates(server: ProviderServer) -> None:
    assert Engine(server, FileSyncProvider(), "s", "FileSync").check(sync()).failures == []
    engine = existing(server, FileSyncProvider(), "FileSync", sync(), status="in sync")
    _, diff = engine.preview(sync())
    assert diff is not None and diff.changes == "none"
    _, diff = engine.preview(sync(schedule="*/10 * * * *", excludes=["*.swp"]))
    assert diff is not None and diff.changes == "some" and not diff.replaces
    _, diff = engine.preview(sync(method="nfs"))
    assert diff is not None and diff.replaces == ["method"] and diff.delete_before_replace
    drifted = existing(server, FileSyncProvider(), "FileSync", sync(), status="drifted: periodic job missing")
    _, diff = drifted.preview(sync())
    assert diff is not None and diff.changes == "some"


def test_file_sync_state_from_before_hiera_digest_stays_clean(server: ProviderServer) -> None:
    """hiera_digest is an output only: a state without it (an `up` before FileSync synced
    hiera.yaml) diffs to nothing and updates in place, never a replace."""
    old = existing(server, FileSyncProvider(), "FileSync", sync(), status="in sync", digest="d" * 64, files=3)
    assert old.state is not None and "hiera_digest" not in old.state.outputs
    _, diff = old.preview(sync())
    assert diff is not None and diff.changes == "none"
    _, diff = old.preview(sync(schedule="*/10 * * * *"))
    assert diff is not None and diff.changes == "some" and not diff.replaces
    state = old.up(sync(sync_timeout=120))  # local-only change: answered without a remote call (NOWHERE)
    assert old.calls[-1] == "update" and state.outputs["status"] == "in sync"
    assert state.outputs.get("hiera_digest") is None and state.outputs["digest"] == "d" * 64
    current = existing(server, FileSyncProvider(), "FileSync", sync(), status="in sync", hiera_digest="a" * 64)
    _, diff = current.preview(sync())
    assert diff is not None and diff.changes == "none"
    # refresh found the master's hiera.yaml different: the next `up` converges it in place
    status = "drifted: hiera.yaml differs from the primary's (/etc/puppetlabs/puppet/hiera.yaml)"
    drifted = existing(server, FileSyncProvider(), "FileSync", sync(), status=status, hiera_digest="b" * 64)
    _, diff = drifted.preview(sync())
    assert diff is not None and diff.changes == "some" and not diff.replaces


def test_pool_member_drops_an_input_the_program_no_longer_sets(server: ProviderServer) -> None:
    """Diff's olds are the old outputs: a deadline removed from the program leaves the state
    in one update (no remote work: the LB is unreachable here), then previews are clean."""
    engine = existing(server, PoolMemberProvider(), "PoolMember", member(connect_timeout=5), status="UP")
    state = engine.up(member(), timeout=60)
    assert engine.calls[-1] == "update" and "connect_timeout" not in state.outputs
    assert state.outputs["status"] == "UP"
    _, diff = engine.preview(member())
    assert diff is not None and diff.changes == "none"
