"""PoolMember against the lab's real HAProxy, through the engine-faithful harness: what
HAProxy itself reports, what its configuration holds, and where connections land."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from lab.client import LabClient
from lab.inhost.pelab_common import wait_for
from provider.pool_admission import PoolAdmissionProvider
from provider.pool_member import PoolMemberProvider
from tests.harness.provider_server import Engine, ProviderError, ProviderServer, Secret
from tests.labtests.helpers import enroll, lb_config, lb_stats

pytestmark = pytest.mark.lab
BACKEND = "puppet_compilers"
MASTERS = ("compile13", "compile06")


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def masters(lab: LabClient) -> Iterator[list[str]]:
    """Two hosts with a signed certificate serving /status/v1/simple on 8140."""

    def start(short: str) -> None:
        host = lab.host(short)
        enroll(lab, host, [short, "puppet", "puppet.pelab.test"])
        host.run(f"{lab.root}/inhost/bin/pelab-compile-service start").check()

    with ThreadPoolExecutor(len(MASTERS)) as pool:
        list(pool.map(start, MASTERS))
    yield list(MASTERS)
    for short in MASTERS:
        lab.host(short).run(f"{lab.root}/inhost/bin/pelab-compile-service stop")


def member_inputs(lab: LabClient, name: str, short: str, **overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "resource_name": f"member-{name}",
        "lb_host": lab.host("lb").fqdn,
        "lb_ssh_private_key": Secret(Path(lab.key).read_text()),
        "lb_ssh_known_hosts": Path(lab.known_hosts).read_text(),
        "server_name": name,
        "address": lab.host(short).address,
        "check_inter_ms": 500,
        "health_timeout": 60,
        "drain_timeout": 60,
    }
    props.update(overrides)
    return props


def peer_through_lb(lab: LabClient, expected_name: str) -> str:
    """Connect to the LB's 8140 (TLS passes through) and return the certificate's CN."""
    ctx = ssl.create_default_context(cafile=lab.ca_file)
    with (
        socket.create_connection((lab.host("lb").address, 8140), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=expected_name) as tls,
    ):
        subject = dict(pair[0] for pair in tls.getpeercert()["subject"])  # type: ignore[index,misc]
        return str(subject["commonName"])


def test_member_lifecycle_gate_reload_weight_drift_and_removal(
    lab: LabClient, server: ProviderServer, masters: list[str]
) -> None:
    short = masters[0]
    fqdn = lab.host(short).fqdn
    engine = Engine(server, PoolMemberProvider(), f"member-{short}", "PoolMember")
    inputs = member_inputs(lab, short, short)
    state = engine.up(inputs)
    assert state.id == f"{BACKEND}/{short}" and state.outputs["status"] == "UP"
    stat = lb_stats(lab)[(BACKEND, short)]
    assert stat.is_healthy and stat.weight == 100 and stat.address == f"{lab.host(short).address}:8140"
    assert f"server {short} {lab.host(short).address}:8140 weight 100 check check-ssl" in lb_config(lab)
    assert peer_through_lb(lab, fqdn) == fqdn  # a request to the LB's 8140 reaches the new master
    assert "is UP (L7OK) and saved in the configuration" in server.text()
    assert Path(lab.key).read_text().split("\n")[1] not in str(state.serialized_state()) + server.text()

    # The configuration HAProxy reloads from holds the member: it survives a reload.
    lab.host("lb").run("service haproxy reload").check()
    assert wait_for(lambda: (BACKEND, short) in lb_stats(lab) and lb_stats(lab)[(BACKEND, short)].is_healthy, 30)
    refreshed = engine.refresh()
    assert refreshed is not None and refreshed.outputs["status"] == "UP"
    _, diff = engine.preview(inputs)
    assert diff is not None and diff.changes == "none"

    # Weight changes in place, live and saved.
    inputs["weight"] = 40
    _, diff = engine.preview(inputs)
    assert diff is not None and diff.changes == "some" and not diff.replaces
    engine.up(inputs)
    assert lb_stats(lab)[(BACKEND, short)].weight == 40 and f"server {short} " in lb_config(lab)
    assert f"{lab.host(short).address}:8140 weight 40 " in lb_config(lab)

    # Someone puts it in maintenance: refresh reports drift, the next up repairs it.
    lab.host("lb").run(f"echo 'set server {BACKEND}/{short} state maint' | socat stdio /run/haproxy/admin.sock")
    drifted = engine.refresh()
    assert drifted is not None and drifted.outputs["status"] == "drifted: in maintenance"
    _, diff = engine.preview(inputs)
    assert diff is not None and diff.changes == "some"
    assert engine.up(inputs).outputs["status"] == "UP"
    assert lb_stats(lab)[(BACKEND, short)].is_healthy

    engine.destroy()
    assert (BACKEND, short) not in lb_stats(lab)
    assert f"server {short} " not in lb_config(lab)
    # Deleting a member that is gone succeeds.
    engine.state = state
    engine.destroy()


def test_member_that_never_turns_healthy_is_removed_at_the_deadline(lab: LabClient, server: ProviderServer) -> None:
    before = lb_config(lab)
    engine = Engine(server, PoolMemberProvider(), "member-dead", "PoolMember")
    t0 = time.monotonic()
    with pytest.raises(ProviderError) as failed:
        engine.up(member_inputs(lab, "dead", "compile16", health_timeout=6))
    assert time.monotonic() - t0 >= 6
    message = failed.value.details
    assert "puppet_compilers/dead" in message and "DOWN" in message and "after 6s" in message
    assert "lb.pelab.test" in message and "run `pulumi up` again" in message
    assert (BACKEND, "dead") not in lb_stats(lab)  # nothing left behind
    assert lb_config(lab) == before


def test_delete_drains_a_live_connection_first(lab: LabClient, server: ProviderServer, masters: list[str]) -> None:
    short = masters[1]
    fqdn = lab.host(short).fqdn
    engine = Engine(server, PoolMemberProvider(), f"member-{short}", "PoolMember")
    engine.up(member_inputs(lab, short, short))
    ctx = ssl.create_default_context(cafile=lab.ca_file)
    raw = socket.create_connection((lab.host("lb").address, 8140), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=fqdn)  # a live session through the LB
    assert wait_for(lambda: lb_stats(lab)[(BACKEND, short)].current_sessions == 1, 10)
    done = threading.Event()
    errors: list[BaseException] = []

    def delete() -> None:
        try:
            engine.destroy()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    t0 = time.monotonic()
    worker = threading.Thread(target=delete)
    worker.start()
    try:
        assert wait_for(lambda: lb_stats(lab)[(BACKEND, short)].status == "DRAIN", 10)
        time.sleep(3)
        assert not done.is_set()  # still waiting for the session
        assert lb_stats(lab)[(BACKEND, short)].current_sessions == 1
    finally:
        tls.close()
    worker.join(60)
    assert done.is_set() and not errors, errors
    assert time.monotonic() - t0 >= 3
    assert (BACKEND, short) not in lb_stats(lab) and f"server {short} " not in lb_config(lab)
    assert "no new connections; 1 open session(s)" in server.text() and "cutting" not in server.text()


def test_eight_concurrent_adds_and_removals_keep_each_others_edits(
    lab: LabClient, server: ProviderServer, masters: list[str]
) -> None:
    names = [f"burst{i}" for i in range(1, 9)]
    engines = [Engine(server, PoolMemberProvider(), f"member-{n}", "PoolMember") for n in names]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda pair: pair[0].up(member_inputs(lab, pair[1], masters[names.index(pair[1]) % 2])),
                zip(engines, names, strict=True),
            )
        )
    current, cfg = lb_stats(lab), lb_config(lab)
    for name in names:
        assert current[(BACKEND, name)].is_healthy
        assert cfg.count(f"server {name} ") == 1
    lab.host("lb").run("haproxy -c -q -f /etc/haproxy/haproxy.cfg").check()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda e: e.destroy(), engines))
    current, cfg = lb_stats(lab), lb_config(lab)
    assert not any(name == n for (_, n) in current for name in names)
    assert not any(f"server {name} " in cfg for name in names)


def test_admission_gates_members_together_and_their_pool_members_find_them_up(
    lab: LabClient, server: ProviderServer, masters: list[str]
) -> None:
    """PoolAdmission adds every member in one call; one that never turns healthy fails the
    call by name and is taken out, the healthy ones stay UP and saved; each PoolMember then
    only confirms its server (no add of its own)."""
    names = {"admitted1": masters[0], "admitted2": masters[1]}
    shared = {k: v for k, v in member_inputs(lab, "x", masters[0]).items() if k not in ("server_name", "address")}

    def entries(with_dead: bool) -> list[dict[str, Any]]:
        rows = [{"server_name": n, "address": lab.host(short).address, "weight": 100} for n, short in names.items()]
        return rows + ([{"server_name": "admitdead", "address": lab.host("compile16").address}] if with_dead else [])

    before = lb_config(lab)
    admission = Engine(server, PoolAdmissionProvider(), "admission", "PoolAdmission")
    with pytest.raises(ProviderError) as failed:
        admission.up({**shared, "resource_name": "admission", "health_timeout": 8, "members": entries(True)})
    assert "1 of 3 pool members did not turn healthy" in failed.value.details
    assert "admitdead" in failed.value.details and "admitted1" not in failed.value.details.split("\n", 1)[1]
    current, cfg = lb_stats(lab), lb_config(lab)
    assert (BACKEND, "admitdead") not in current and "server admitdead " not in cfg  # nothing half-added
    for name in names:
        assert current[(BACKEND, name)].is_healthy and cfg.count(f"server {name} ") == 1
    assert lb_config(lab) != before

    state = admission.up({**shared, "resource_name": "admission", "members": entries(False)})
    assert state.outputs["admitted"] == sorted(names)
    members = {n: Engine(server, PoolMemberProvider(), f"member-{n}", "PoolMember") for n in names}
    mark = len(server.text())
    for name, engine in members.items():
        assert engine.up(member_inputs(lab, name, names[name])).outputs["status"] == "UP"
    confirmed = server.text()[mark:]
    assert "added, waiting" not in confirmed and confirmed.count("is UP (L7OK) and saved") == len(names)
    for engine in members.values():
        engine.destroy()
    admission.destroy()  # nothing of its own: the members drained and removed themselves
    assert lb_config(lab) == before


@pytest.mark.parametrize(
    ("override", "prop"),
    [
        ({"server_name": "bad name"}, "server_name"),
        ({"server_name": "x;reload"}, "server_name"),
        ({"port": 70000}, "port"),
        ({"backend": "no_such_backend"}, "backend"),
        ({"weight": 300}, "weight"),
    ],
)
def test_bad_input_is_refused_by_check_before_anything_changes(
    lab: LabClient, server: ProviderServer, override: dict[str, Any], prop: str
) -> None:
    before_cfg, before_stats = lb_config(lab), set(lb_stats(lab))
    engine = Engine(server, PoolMemberProvider(), "member-bad", "PoolMember")
    checked = engine.check(member_inputs(lab, "badmember", "compile16", **override))
    assert prop in [p for p, _ in checked.failures], checked.failures
    if prop == "backend":
        assert "no `backend no_such_backend`" in dict(checked.failures)["backend"]
    assert lb_config(lab) == before_cfg and set(lb_stats(lab)) == before_stats
