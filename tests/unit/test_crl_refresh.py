"""Removal per generation: after a master's certificate is revoked, what the masters left
do to take the new CRL (provider/pe/crl_refresh.py; PE's node removal pages, §8 [S38]), the
peers input that names them, and the step verified against a fake host."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from provider.core import inputs
from provider.core.command import CommandResult
from provider.core.errors import DeadlineError, ProviderError
from provider.master.config import LOCAL_ONLY_KEYS, PeerMaster, peer_problems, with_peer_mappings
from provider.pe import crl_refresh
from provider.pe.generation import generation_for
from provider.pe.services import SYSTEMD_MARKER
from provider.ssh.trust import SshTarget
from tests.unit.test_services import host, run  # noqa: F401  (fixture and runner)

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB8l0MOV2NRsO2t0cTqDtdoAE2TGHxH2VKQjYqxZwsIN"
OTHER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherHostKeyxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"


@pytest.mark.parametrize(
    ("version", "expected"),
    [
        ("3.7", [("primary", "run"), ("primary", "restart"), ("a", "restart"), ("b", "restart")]),
        ("2015.2", [("primary", "run"), ("primary", "restart"), ("a", "restart"), ("b", "restart")]),
        ("2015.3", [("primary", "run"), ("primary", "reload"), ("a", "reload"), ("b", "reload")]),
        ("2016.4", [("primary", "run"), ("primary", "reload"), ("a", "reload"), ("b", "reload")]),
        ("2017.1", [("primary", "run"), ("primary", "reload"), ("a", "reload"), ("b", "reload")]),
        ("2017.2", [("a", "run"), ("b", "run")]),
        ("2019.8", [("a", "run"), ("b", "run")]),
        ("2023.8", [("a", "run"), ("b", "run")]),
    ],
)
def test_the_generation_decides_what_the_masters_left_do(version: str, expected: list[tuple[str, str]]) -> None:
    steps = crl_refresh.plan(generation_for(version), ["a", "b"])
    assert [(s.server, s.action) for s in steps] == expected


def test_without_other_masters_only_the_primary_may_have_work() -> None:
    assert crl_refresh.plan(generation_for("2019.8"), []) == []
    assert [s.server for s in crl_refresh.plan(generation_for("3.7"), [])] == ["primary", "primary"]


def test_service_actions_use_the_hosts_service_manager(host: dict[str, str]) -> None:  # noqa: F811
    code, _, calls = run(host, crl_refresh.service_action_script("restart").replace(SYSTEMD_MARKER, "/nope"))
    assert code == 0 and calls == ["service pe-puppetserver restart"]
    systemd = crl_refresh.service_action_script("reload").replace(SYSTEMD_MARKER, host["marker_present"])
    code, _, calls = run(host, systemd)
    assert calls == ["systemctl reload pe-puppetserver.service"]
    with pytest.raises(ValueError):
        crl_refresh.service_action_script("run")


def test_peers_are_validated_before_anything_changes() -> None:
    good = {"certname": "b.example.com", "host": "10.0.0.2", "ssh_port": 22, "ssh_user": "root"}
    assert peer_problems([{**good, "ssh_host_key": HOST_KEY}], "a.example.com") == []
    # without a pinned key the master's own known_hosts must list the peer
    assert peer_problems([good], "a.example.com", {"ssh_known_hosts": f"10.0.0.2 {HOST_KEY}\n"}) == []
    assert (
        "known_hosts has no entry"
        in peer_problems([good], "a.example.com", {"ssh_known_hosts": f"10.0.0.9 {HOST_KEY}\n"})[0][1]
    )
    assert "pinned" in peer_problems([good], "a.example.com")[0][1]
    itself = peer_problems([{**good, "certname": "a.example.com", "ssh_host_key": HOST_KEY}], "a.example.com")
    assert itself == [("peer_masters", "peer_masters[0] is this master itself (a.example.com)")]
    twice = peer_problems([{**good, "ssh_host_key": HOST_KEY}] * 2, "a.example.com")
    assert twice == [("peer_masters", "peer_masters[1]: b.example.com is listed twice")]
    assert peer_problems("b", "a")[0][1].startswith("peer_masters must be a list")
    assert "unknown fields: password" in peer_problems([{**good, "password": "x"}], "a")[0][1]
    assert "peer_masters" in LOCAL_ONLY_KEYS  # a new set is recorded without remote work


def test_a_peer_entry_takes_what_it_leaves_out_from_its_master() -> None:
    master = {"ssh_port": 2222, "ssh_user": "admin", "ssh_private_key": "k", "ssh_known_hosts": f"10.0.0.2 {HOST_KEY}"}
    peer = PeerMaster.from_entry({"certname": "b.example.com", "host": "10.0.0.2"}, master)
    assert (peer.target.port, peer.target.user, peer.target.private_key) == (2222, "admin", "k")
    own = PeerMaster.from_entry({"certname": "b.example.com", "host": "10.0.0.2", "ssh_port": 22}, master)
    assert own.target.port == 22
    # a state written before entries left them out is no change (no update at the next `up`)
    full = {"certname": "b.example.com", "host": "10.0.0.2", "ssh_port": 2222, "ssh_user": "admin"}
    olds = {**master, "peer_masters": [full]}
    news = {**master, "peer_masters": [{"certname": "b.example.com", "host": "10.0.0.2"}]}
    assert inputs.changed_keys(["peer_masters"], olds, news, {}) == []
    moved = {**master, "peer_masters": [{**full, "ssh_port": 22}]}
    assert inputs.changed_keys(["peer_masters"], olds, moved, {}) == ["peer_masters"]


def test_a_peer_entry_may_be_one_string_reached_as_its_master() -> None:
    """ "certname host": the master's port, user and known_hosts (which lists the peer too)."""
    peer_line = f"b.example.com,10.0.0.2 {HOST_KEY}\n"
    master = {"ssh_port": 2222, "ssh_user": "admin", "ssh_private_key": "k", "ssh_known_hosts": peer_line}
    peer = PeerMaster.from_entry("b.example.com 10.0.0.2", master)
    assert (peer.certname, peer.target.host, peer.target.port, peer.target.user) == (
        "b.example.com",
        "10.0.0.2",
        2222,
        "admin",
    )
    assert peer.target.known_hosts == peer_line
    assert peer_problems(["b.example.com 10.0.0.2"], "a.example.com", master) == []
    assert "no entry for 10.0.0.9" in peer_problems(["b.example.com 10.0.0.9"], "a.example.com", master)[0][1]
    bad = peer_problems(["b.example.com"], "a.example.com", master)
    assert bad[0][1].startswith('peer_masters[0] must be "certname host" or a mapping'), bad
    twice = peer_problems(["b.example.com 10.0.0.2", {"certname": "b.example.com", "host": "10.0.0.2"}], "a", master)
    assert twice == [("peer_masters", "peer_masters[1]: b.example.com is listed twice")]


def test_a_state_with_full_peer_mappings_diffs_as_the_short_form_means() -> None:
    """Every state before the short form holds mappings with the peer's own known_hosts:
    the same peers as strings, the master's text listing them, are no change; a peer whose
    key changed is one."""
    own, peer_line = f"a.example.com,10.0.0.1 {HOST_KEY}\n", f"b.example.com,10.0.0.2 {HOST_KEY}\n"
    full = {"certname": "b.example.com", "host": "10.0.0.2", "ssh_port": 22, "ssh_user": "root"}
    olds = {
        "host": "10.0.0.1",
        "ssh_port": 22,
        "ssh_user": "root",
        "ssh_known_hosts": own,
        "peer_masters": [{**full, "ssh_known_hosts": peer_line}],
    }
    news = {
        "host": "10.0.0.1",
        "ssh_port": 22,
        "ssh_user": "root",
        "ssh_known_hosts": own + peer_line,
        "peer_masters": ["b.example.com 10.0.0.2"],
    }
    keys = ["ssh_known_hosts", "peer_masters"]
    assert inputs.changed_keys(keys, with_peer_mappings(olds), with_peer_mappings(news), {}) == []
    rekeyed = {**news, "ssh_known_hosts": own + peer_line.replace(HOST_KEY, OTHER_KEY)}
    assert inputs.changed_keys(keys, with_peer_mappings(olds), with_peer_mappings(rekeyed), {}) == ["peer_masters"]


@dataclass
class FakeHost:
    """A host as the step sees it over SSH: Puppet's settings, a CRL file, pe-puppetserver."""

    crl_after_run: bytes = b"new"
    answers_after: int = 0  # probes that fail after a restart/reload before it answers
    commands: list[str] = field(default_factory=list)
    crl_file: bytes = b"old"
    probes: int = 0
    uploaded: dict[str, bytes] = field(default_factory=dict)

    @property
    def target(self) -> SshTarget:
        return SshTarget("b.example.com", 22, "root", "", HOST_KEY, "")

    def run(self, command: str | list[str], timeout: float = 600.0, stdin: bytes | None = None) -> CommandResult:
        text = command if isinstance(command, str) else " ".join(command)
        self.commands.append(text)
        if "config print" in text:
            out = "hostcrl = /ssl/crl.pem\nlocalcacert = /ssl/ca.pem\nagent_catalog_run_lockfile = /lock\n"
            return CommandResult("b.example.com", text, 0, out, "")
        if "agent" in text and "--onetime" in text:
            self.crl_file = self.crl_after_run
            return CommandResult("b.example.com", text, 2, "", "")
        if text.startswith("test -s"):
            return CommandResult("b.example.com", text, 1, "", "")
        if "mv -f" in text and "/ssl/crl.pem.pe-compile-masters.tmp" in self.uploaded:
            self.crl_file = self.uploaded.pop("/ssl/crl.pem.pe-compile-masters.tmp")
        return CommandResult("b.example.com", text, 0, "", "")

    def get(self, path: str) -> bytes | None:
        return self.crl_file if path == "/ssl/crl.pem" else None

    def put(self, path: str, data: bytes) -> None:
        self.uploaded[path] = data


def server(fake: FakeHost, version: str) -> crl_refresh.Server:
    def probe(_session: object, _certname: str, cafile: str) -> bool:
        assert cafile == "/ssl/ca.pem"
        fake.probes += 1
        return fake.probes > fake.answers_after

    return crl_refresh.Server(fake, "b.example.com", generation_for(version), lambda *_: None, probe)  # type: ignore[arg-type]


def lists_serial(crl_pem: bytes, serial: int) -> bool:
    return crl_pem == b"new" and serial == 7


def carry(
    kind: crl_refresh.Action,
    fake: FakeHost,
    version: str,
    service_timeout: float = 60,
    ca_crl: Callable[[], bytes] | None = None,
) -> None:
    """One CRL step for serial 7 on a host of this PE version, with a fresh ledger."""
    crl_refresh.carry_out(
        crl_refresh.CrlStep("b", kind),
        server(fake, version),
        [7],
        lists_serial,
        60,
        service_timeout,
        0.0,
        crl_refresh.Ledger(),
        ca_crl,
    )


def test_a_run_must_leave_the_serial_in_the_hosts_crl() -> None:
    fake = FakeHost()
    carry("run", fake, "2019.8")
    assert any("--onetime" in c for c in fake.commands)
    stale = FakeHost(crl_after_run=b"old")
    with pytest.raises(ProviderError, match="does not list serial 7"):
        carry("run", stale, "2019.8")


def test_a_restart_must_leave_the_server_answering_within_the_deadline() -> None:
    fake = FakeHost(answers_after=1)
    carry("restart", fake, "3.7", ca_crl=lambda: b"new")
    assert any("pe-puppetserver restart" in c for c in fake.commands) and fake.probes == 2
    never = FakeHost(answers_after=10**6, crl_file=b"new")
    with pytest.raises(DeadlineError, match="does not answer"):
        carry("reload", never, "2016.4", service_timeout=0.5)


def test_before_2017_2_a_compile_master_gets_the_cas_crl_in_its_own_file_before_its_restart() -> None:
    """PE <= 2017.1 distributes no CRL to compile masters, and their Puppet Server reads only
    its hostcrl: the CA's CRL is copied there (atomically: put beside it, chown/chmod, mv),
    then the restart; the file must list the serial after."""
    fake = FakeHost()
    carry("restart", fake, "3.7", ca_crl=lambda: b"new")
    copy = next(i for i, c in enumerate(fake.commands) if "mv -f" in c)
    restart = next(i for i, c in enumerate(fake.commands) if "pe-puppetserver restart" in c)
    assert copy < restart and fake.crl_file == b"new" and "chown --reference" in fake.commands[copy]
    stale = FakeHost()  # no copy (what the step did before): the restart reads the old file
    with pytest.raises(ProviderError, match="does not list serial 7"):
        carry("restart", stale, "3.7")
    current = FakeHost(crl_file=b"new")  # already lists it: nothing copied
    carry("reload", current, "2016.4", ca_crl=bytes)
    assert not any("mv -f" in c for c in current.commands)
