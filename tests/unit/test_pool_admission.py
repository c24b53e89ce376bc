"""pool_member.admit's policy against an in-memory load balancer: members gated together
(one poll for all), saved in one edit, what it added and never turned healthy taken out,
a name held at another endpoint left alone. The lab tests run it against real HAProxy."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from provider import pool_member
from provider.core.errors import DeadlineError, ProviderError
from provider.lb.drivers import MemberSpec, MemberState
from provider.pool_admission import to_admit
from provider.pool_member import admit


def spec(server: str, address: str = "10.0.0.1", weight: int = 100) -> MemberSpec:
    return MemberSpec("puppet_compilers", server, address, 8140, weight, "/etc/haproxy/pe-ca.pem", 500)


class FakeLb:
    """Servers turn healthy after `rise` polls unless listed as dead."""

    label = "fake LB"

    def __init__(self, rise: int = 2, dead: Sequence[str] = ()) -> None:
        self.rise, self.dead = rise, set(dead)
        self.servers: dict[str, dict[str, Any]] = {}
        self.saved: dict[str, MemberSpec] = {}
        self.polls = 0
        self.edits: list[list[str]] = []
        self.removed: list[str] = []

    def require_backend(self, backend: str) -> None:
        if backend != "puppet_compilers":
            raise ProviderError("no `backend")

    def states(self, specs: Sequence[MemberSpec]) -> dict[str, MemberState | None]:
        self.polls += 1
        out: dict[str, MemberState | None] = {}
        for s in specs:
            server = self.servers.get(s.server)
            if server is None:
                out[s.server] = None
                continue
            server["polls"] += 1
            healthy = s.server not in self.dead and server["polls"] > self.rise
            out[s.server] = MemberState(
                "UP" if healthy else "DOWN",
                "L7OK" if healthy else "L4CON",
                healthy,
                0,
                server["weight"],
                server["endpoint"],
                self.saved.get(s.server) == s,
            )
        return out

    def state(self, s: MemberSpec) -> MemberState | None:
        return self.states([s])[s.server]

    def add(self, s: MemberSpec) -> None:
        self.servers[s.server] = {"polls": 0, "weight": s.weight, "endpoint": s.endpoint}

    def make_ready(self, s: MemberSpec) -> None: ...

    def set_weight(self, s: MemberSpec) -> None:
        self.servers[s.server]["weight"] = s.weight

    def persist_all(self, specs: Sequence[MemberSpec]) -> None:
        self.edits.append([s.server for s in specs])
        self.saved.update({s.server: s for s in specs})

    def persist(self, s: MemberSpec) -> None:
        self.persist_all([s])

    def drain(self, s: MemberSpec) -> None: ...

    def remove(self, s: MemberSpec, force: bool) -> None:
        self.removed.append(s.server)
        self.servers.pop(s.server, None)
        self.saved.pop(s.server, None)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(time, "sleep", lambda _s: None)  # admit() looks time.sleep up at call time


def quiet(_server: str) -> Any:
    return lambda _step, _message: None


def test_sixteen_members_are_gated_by_one_poll_each_round_and_saved_in_one_edit() -> None:
    lb = FakeLb(rise=2)
    specs = [spec(f"compile{i:02}", f"10.0.0.{i}") for i in range(1, 17)]
    result = admit(lb, specs, 60, quiet)
    assert sorted(result.healthy) == sorted(s.server for s in specs) and not result.failed
    assert lb.polls == 1 + 3  # the initial read, then rounds until all passed `rise` checks together
    assert lb.edits == [[s.server for s in specs]]


def test_a_dead_member_it_added_is_removed_and_the_healthy_ones_are_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 10_000))
    monkeypatch.setattr(time, "monotonic", lambda: float(next(clock)))
    lb = FakeLb(rise=1, dead=["compile02"])
    result = admit(lb, [spec("compile01"), spec("compile02", "10.0.0.2")], 30, quiet)
    assert list(result.healthy) == ["compile01"]
    assert isinstance(result.failed["compile02"], DeadlineError)
    assert "DOWN (last check L4CON) after 30s" in str(result.failed["compile02"])
    assert lb.removed == ["compile02"] and lb.edits == [["compile01"]]


def test_a_name_held_at_another_endpoint_is_left_alone() -> None:
    lb = FakeLb(rise=0)
    lb.add(spec("compile01", "10.9.9.9"))
    lb.persist(spec("compile01", "10.9.9.9"))
    result = admit(lb, [spec("compile01", "10.0.0.1"), spec("compile02", "10.0.0.2")], 30, quiet)
    assert "already points at 10.9.9.9:8140" in str(result.conflicts["compile01"])
    assert list(result.healthy) == ["compile02"] and lb.servers["compile01"]["endpoint"] == "10.9.9.9:8140"
    assert lb.removed == []


def test_an_existing_member_gets_its_weight_and_nothing_is_added() -> None:
    lb = FakeLb(rise=0)
    lb.add(spec("compile01"))
    result = admit(lb, [spec("compile01", weight=40)], 30, quiet)
    assert result.healthy["compile01"].weight == 40 and lb.removed == []


def test_to_admit_only_new_or_changed_members_unless_a_shared_input_changed() -> None:
    a, b = {"server_name": "a", "address": "10.0.0.1"}, {"server_name": "b", "address": "10.0.0.2"}
    olds = {"lb_host": "lb", "health_timeout": 60, "members": [a]}
    assert to_admit(olds, {**olds, "members": [a, b]}) == [b]
    assert to_admit(olds, {**olds, "members": [{**a, "weight": 5}]}) == [{**a, "weight": 5}]
    assert to_admit(olds, {**olds, "health_timeout": 90}) == []  # a deadline is local only
    assert to_admit(olds, {**olds, "backend": "other"}) == [a]


def test_new_members_look_their_backend_up_once_per_provider_process(monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine checks resources one at a time: N new members on one LB and backend are one
    # SSH read, not N in a row.
    looked: list[str] = []
    monkeypatch.setattr(pool_member, "_BACKEND_LOOKUPS", {})

    def look_up(cfg: pool_member.MemberConfig) -> list[tuple[str, str]]:
        looked.append(cfg.spec.server)
        return [("backend", "no `backend x`")]

    monkeypatch.setattr(pool_member, "_look_up_backend", look_up)
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOvgnmOCadR3PMuYFkFeH0ZhKkDk6JfZ4lbPvmtfvsml"
    base = {"lb_host": "lb.example.com", "lb_ssh_private_key": "k", "lb_ssh_host_key": key, "address": "10.0.0.1"}
    for server in ("compile01", "compile02", "compile03"):
        failures = pool_member.PoolMemberProvider.backend_failures({}, {**base, "server_name": server})
        assert [(f.property, f.reason) for f in failures] == [("backend", "no `backend x`")]
    pool_member.PoolMemberProvider.backend_failures({}, {**base, "server_name": "c4", "backend": "other"})
    assert looked == ["compile01", "c4"]  # once per backend
