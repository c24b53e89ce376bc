"""PeCompileMaster through the real provider server, without the lab: what check() refuses
at preview, and what diff() says - with no remote call (every address here is a closed
loopback port, so any SSH or HTTPS attempt would fail the call)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from provider.compile_master import PeCompileMasterProvider
from tests.engine.test_program_graph import DATABASE_INPUTS
from tests.harness.provider_server import UNKNOWN, Engine, ProviderServer, Secret, StateEntry
from tests.harness.provider_server import ProviderError as HarnessProviderError

NOWHERE = "127.0.10.250"  # nothing listens here: a remote call would fail loudly
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvL2tzZOBSbRBlc+ubhaqz4zYl6XYp5oIcGZfQ1f2p5"


def good_inputs(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "host": NOWHERE,
        "ssh_private_key": Secret("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n"),
        "ssh_host_key": HOST_KEY,
        "certname": "compile01.example.com",
        "dns_alt_names": ["compile01", "puppet", "puppet.example.com"],
        "primary_host": NOWHERE,
        "primary_ssh_private_key": Secret("-----BEGIN OPENSSH PRIVATE KEY-----\ny\n"),
        "primary_ssh_host_key": HOST_KEY,
        "primary_certname": "primary.example.com",
        "database_host": NOWHERE,  # PE 2019.7+: PE-PostgreSQL's host
        "database_ssh_private_key": Secret("-----BEGIN OPENSSH PRIVATE KEY-----\ny\n"),
        "database_ssh_host_key": HOST_KEY,
        "pe_version": "2019.8",
        "classifier_url": f"https://{NOWHERE}:4433",
        "rbac_token": Secret("0TOKENtoken"),
    }
    props.update(overrides)
    return props


@pytest.fixture(scope="module")
def server():  # type: ignore[no-untyped-def]
    with ProviderServer() as srv:
        yield srv


def failures_for(server: ProviderServer, **overrides: Any) -> dict[str, str]:
    engine = Engine(server, PeCompileMasterProvider(), "m", "PeCompileMaster")
    return dict(engine.check(good_inputs(**overrides)).failures)


def test_good_inputs_pass_check(server: ProviderServer) -> None:
    assert failures_for(server) == {}


@pytest.mark.parametrize(
    ("override", "prop", "phrase"),
    [
        ({"certname": "bad name; rm -rf /"}, "certname", "not a DNS name"),
        ({"certname": "Compile01.example.com"}, "certname", "lower case"),
        ({"certname": "primary.example.com"}, "certname", "primary's own certname"),
        ({"dns_alt_names": ["ok", "$(reboot)"]}, "dns_alt_names", "not a DNS name"),
        ({"dns_alt_names": ["a", "a"]}, "dns_alt_names", "twice"),
        ({"ssh_port": 70000}, "ssh_port", "outside 1-65535"),
        ({"ssh_port": 22.5}, "ssh_port", "integer"),
        ({"environmentpath": "relative/path"}, "environmentpath", "absolute path"),
        ({"environmentpath": "/etc/x;touch /y"}, "environmentpath", "absolute path"),
        ({"pe_version": "3.3"}, "pe_version", "older than PE 3.7"),
        ({"pe_version": "latest"}, "pe_version", "2019.8"),
        ({"pe_version": "3.7"}, "rbac_token", "no RBAC tokens"),
        ({"rbac_token": None}, "rbac_token", "classifier access needs"),
        ({"ssh_host_key": ""}, "ssh_host_key", "pinned"),
        ({"ssh_host_key": "", "ssh_known_hosts": f"other.example.com {HOST_KEY}\n"}, "ssh_known_hosts", "no entry"),
        ({"classifier_url": "http://console:4433"}, "classifier_url", "https://"),
        ({"run_timeout": -5}, "run_timeout", "positive"),
        ({"ssh_user": "root; id"}, "ssh_user", "POSIX user name"),
        ({"host": "not a host"}, "host", "not a DNS name"),
    ],
)
def test_check_refuses_bad_input_with_a_clear_reason(
    server: ProviderServer, override: dict[str, Any], prop: str, phrase: str
) -> None:
    failures = failures_for(server, **override)
    assert prop in failures, failures
    assert phrase in failures[prop]


def test_unknown_values_in_preview_are_not_refused(server: ProviderServer) -> None:
    assert failures_for(server, host=UNKNOWN, certname=UNKNOWN, rbac_token=UNKNOWN) == {}


def state_from(inputs: dict[str, Any], **outputs: Any) -> dict[str, Any]:
    plain = {k: (v.value if isinstance(v, Secret) else v) for k, v in inputs.items()}
    return {**plain, "status": "running", "cert_fingerprint": "AA:BB", "group_id": "g", **outputs}


def diff_of(server: ProviderServer, new: dict[str, Any], old_outputs: dict[str, Any]) -> tuple[str, list[str], bool]:
    engine = Engine(server, PeCompileMasterProvider(), "m", "PeCompileMaster")
    checked = engine.check(new)
    result = server.diff("compile01.example.com", engine.urn, old_outputs, checked.inputs)
    return result.changes, result.replaces, result.delete_before_replace


def test_no_change_diff_is_none_and_makes_no_remote_call(server: ProviderServer) -> None:
    inputs = good_inputs()
    changes, replaces, _ = diff_of(server, inputs, state_from(inputs))
    assert (changes, replaces) == ("none", [])


@pytest.mark.parametrize("key", ["certname", "host", "dns_alt_names"])
def test_identity_changes_replace_delete_before_create(server: ProviderServer, key: str) -> None:
    inputs = good_inputs()
    new_value = {"certname": "compile02.example.com", "host": "127.0.10.251", "dns_alt_names": ["compile01"]}[key]
    changes, replaces, dbr = diff_of(server, good_inputs(**{key: new_value}), state_from(inputs))
    assert changes == "some" and replaces == [key] and dbr


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("environmentpath", "/etc/puppetlabs/code/environments"),
        ("run_timeout", 60),
        ("rbac_token", Secret("0NEW")),
        ("ssh_private_key", Secret("-----BEGIN OPENSSH PRIVATE KEY-----\nz\n")),
    ],
)
def test_settings_and_credentials_update_in_place(server: ProviderServer, key: str, value: Any) -> None:
    inputs = good_inputs()
    changes, replaces, _ = diff_of(server, good_inputs(**{key: value}), state_from(inputs))
    assert changes == "some" and replaces == []


def test_drift_found_by_refresh_makes_the_next_up_update(server: ProviderServer) -> None:
    inputs = good_inputs()
    changes, replaces, _ = diff_of(server, inputs, state_from(inputs, status="drifted: not pinned to PE Master"))
    assert changes == "some" and replaces == []


def test_the_resource_pickles_its_provider_and_keeps_secrets_secret_under_mocks() -> None:
    import pulumi

    from provider.compile_master import PeCompileMaster
    from tests.harness.mocks import by_name, run_program

    def program() -> None:
        inputs = {k: (v.value if isinstance(v, Secret) else v) for k, v in good_inputs().items()}
        PeCompileMaster("compile01", inputs, pulumi.ResourceOptions())  # type: ignore[arg-type]

    registered = by_name(run_program(program), "compile01")
    assert registered.type == "pulumi-python:dynamic:Resource"
    secret = {"ssh_private_key", "primary_ssh_private_key", "database_ssh_private_key", "rbac_token", "__provider"}
    assert secret <= registered.secret_inputs
    assert "certname" not in registered.secret_inputs
    assert registered.delete_before_replace
    assert registered.inputs["resource_name"] == "compile01"


def batch_inputs(*entries: dict[str, Any]) -> dict[str, Any]:
    from provider.compile_master_batch import MASTER_KEYS

    shared = {k: v for k, v in good_inputs().items() if k not in MASTER_KEYS}
    return {**shared, "masters": list(entries)}


def entry(n: int, **overrides: Any) -> dict[str, Any]:
    return {
        "certname": f"compile0{n}.example.com",
        "host": NOWHERE,
        "ssh_host_key": HOST_KEY,
        "dns_alt_names": [f"compile0{n}", "puppet"],
        **overrides,
    }


def test_batch_check_names_the_master_and_the_key(server: ProviderServer) -> None:
    from provider.compile_master_batch import CompileMasterBatchProvider

    engine = Engine(server, CompileMasterBatchProvider(), "b", "CompileMasterBatch")
    assert engine.check(batch_inputs(entry(1), entry(2))).failures == []
    failures = dict(
        engine.check(
            batch_inputs(entry(1), entry(1), entry(3, dns_alt_names=["$(reboot)"]), entry(4, colour="blue"))
        ).failures
    )
    # A stack scaled to zero masters: the batch stays valid (its shared inputs are checked).
    assert engine.check(batch_inputs()).failures == []
    assert "listed twice" in failures["masters[1].certname"]
    assert "not a DNS name" in failures["masters[2].dns_alt_names"]
    assert "unknown keys ['colour']" in failures["masters[3]"]


def test_batch_diff_is_about_the_set_of_masters(server: ProviderServer) -> None:
    from provider.compile_master_batch import CompileMasterBatchProvider

    engine = Engine(server, CompileMasterBatchProvider(), "b", "CompileMasterBatch")
    plain, secret = engine._plain(batch_inputs(entry(1), entry(2)))
    engine.state = StateEntry("batch", plain, {**plain, "status": "provisioned"}, secret)
    _, diff = engine.preview(batch_inputs(entry(1), entry(2)))
    assert diff is not None and diff.changes == "none"
    _, diff = engine.preview(batch_inputs(entry(1), entry(2), entry(3)))
    assert diff is not None and diff.changes == "some" and not diff.replaces
    _, diff = engine.preview(batch_inputs(entry(1)))
    assert diff is not None and diff.changes == "some" and not diff.replaces


def test_batch_converges_only_new_or_changed_masters() -> None:
    from provider.compile_master_batch import to_converge

    olds = batch_inputs(entry(1), entry(2))
    assert to_converge(olds, batch_inputs(entry(1), entry(2), entry(3))) == [entry(3)]
    assert to_converge(olds, batch_inputs(entry(1), entry(2, environmentpath="/x"))) == [entry(2, environmentpath="/x")]
    assert to_converge(olds, {**olds, "run_timeout": 99}) == []  # a deadline: nothing to redo
    assert len(to_converge(olds, {**olds, "classifier_url": "https://x:4433"})) == 2  # shared, in place: all


def test_batch_leaves_masters_the_engine_replaces_to_their_replacement() -> None:
    """Alt names, host, pe_version, primary: PeCompileMaster's diff answers replace, so the
    engine deletes its pool member (drained) and the master before re-creating it. The
    batch, updated earlier in the same `up`, must not re-sign such a master first."""
    from provider.compile_master_batch import MASTERS, to_converge

    olds = batch_inputs(entry(1), entry(2))
    new = batch_inputs(entry(1), entry(2, dns_alt_names=["x"]), entry(3))
    assert to_converge(olds, new) == [entry(3)]
    assert MASTERS.converge_plan(olds, new)[1] == ["compile02.example.com"]
    upgraded = {**batch_inputs(entry(1), entry(2), entry(3)), "pe_version": "2018.1"}
    assert to_converge(olds, upgraded) == [entry(3)]  # only the new one: the others are replaced


def test_batch_check_refuses_a_new_certname_on_the_same_host(server: ProviderServer) -> None:
    from provider.compile_master_batch import CompileMasterBatchProvider

    engine = Engine(server, CompileMasterBatchProvider(), "b", "CompileMasterBatch")
    plain, secret = engine._plain(batch_inputs(entry(1), entry(2)))
    engine.state = StateEntry("batch", plain, {**plain, "status": "provisioned"}, secret)
    renamed = {**entry(2), "certname": "renamed.example.com"}
    checked = engine.check(batch_inputs(entry(1), renamed))
    assert [prop for prop, _ in checked.failures] == ["masters[1].certname"]
    reason = checked.failures[0][1]
    assert "compile02.example.com" in reason and "renamed.example.com" in reason and "Remove" in reason
    assert not engine.check(batch_inputs(entry(1))).failures  # removal alone is fine
    assert not engine.check(batch_inputs(entry(1), entry(2), entry(3))).failures


def test_batch_old_outputs_do_not_count_as_changed_inputs() -> None:
    from provider.compile_master_batch import CompileMasterBatchProvider, to_converge

    olds = batch_inputs(entry(1), entry(2))
    recorded = CompileMasterBatchProvider.outputs(olds, ["compile01.example.com"])  # what the engine hands back
    assert to_converge(recorded, batch_inputs(entry(1), entry(2), entry(3))) == [entry(3)]


# --- PE 2019.7+: PE-PostgreSQL's host (compilers' PuppetDB, pg_ident.conf) -----------------


def without_database(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k not in DATABASE_INPUTS}


@pytest.mark.parametrize("version", ["2019.8", "2021.7", "2023.8", "2025.3"])
def test_check_requires_the_database_host_from_2019_7(server: ProviderServer, version: str) -> None:
    failures = failures_for(server, database_host=None, pe_version=version)
    assert failures == {
        "database_host": "database_host is required from PE 2019.7: compilers' PuppetDB authenticates to "
        "PE-PostgreSQL there (its pg_ident.conf maps each compiler's certificate; the primary in a standard "
        "installation)"
    }
    assert "database_ssh_host_key" in failures_for(server, database_ssh_host_key=None, pe_version=version)
    assert "database_ssh_private_key" in failures_for(server, database_ssh_private_key=None, pe_version=version)


@pytest.mark.parametrize("version", ["2016.4.9", "2018.1"])
def test_before_2019_7_no_database_host_is_needed(server: ProviderServer, version: str) -> None:
    engine = Engine(server, PeCompileMasterProvider(), "m", "PeCompileMaster")
    assert dict(engine.check(without_database(good_inputs(pe_version=version))).failures) == {}


def test_batch_check_names_the_missing_database_host(server: ProviderServer) -> None:
    from provider.compile_master_batch import CompileMasterBatchProvider

    engine = Engine(server, CompileMasterBatchProvider(), "b", "CompileMasterBatch")
    failures = dict(engine.check(without_database(batch_inputs(entry(1)))).failures)
    assert "PE 2019.7" in failures["masters[0].database_host"]
    assert "PE 2019.7" in dict(engine.check(without_database(batch_inputs())).failures)["database_host"]


def test_a_state_from_before_the_database_inputs_updates_without_remote_work(server: ProviderServer) -> None:
    """Existing stacks' state lacks the database inputs: the new program's inputs are an
    update (never a replace), recorded without any remote call (every host here is closed)."""
    new = good_inputs()
    old = without_database(new)
    engine = Engine(server, PeCompileMasterProvider(), "m", "PeCompileMaster")
    plain, secret = engine._plain(old)
    engine.state = StateEntry("compile01.example.com", plain, state_from(plain), secret)
    _, diff = engine.preview(new)
    assert diff is not None and diff.changes == "some" and diff.replaces == []
    state = engine.up(new, timeout=60)
    assert engine.calls[-1] == "update"
    assert state.outputs["database_host"] == NOWHERE and state.outputs["status"] == "running"
    _, diff = engine.preview(new)
    assert diff is not None and diff.changes == "none"
    # A database host that moves later is recorded the same way (its lines are a create-time step).
    engine.up(good_inputs(database_host="127.0.10.251"), timeout=60)
    assert engine.calls[-1] == "update"


def test_the_batch_records_the_database_inputs_of_an_old_state_without_provisioning_again(
    server: ProviderServer,
) -> None:
    from provider.compile_master_batch import CompileMasterBatchProvider, to_converge

    new = batch_inputs(entry(1), entry(2))
    old = without_database(new)
    assert to_converge(old, new) == []  # local only: no master's steps run again
    engine = Engine(server, CompileMasterBatchProvider(), "b", "CompileMasterBatch")
    plain, secret = engine._plain(old)
    engine.state = StateEntry("batch", plain, {**plain, "status": "provisioned"}, secret)
    state = engine.up(new, timeout=60)
    assert engine.calls[-1] == "update" and state.outputs["converged_now"] == []
    assert state.outputs["database_host"] == NOWHERE


def test_an_input_the_program_no_longer_sets_leaves_the_state(server: ProviderServer) -> None:
    """Diff's olds are the old outputs: an update that kept an old input the program dropped
    (a deadline, peer list) would show `~ update` on every later preview."""
    engine = Engine(server, PeCompileMasterProvider(), "m", "PeCompileMaster")
    with_timeout = good_inputs(connect_timeout=5, peer_masters=[])
    plain, secret = engine._plain(with_timeout)
    engine.state = StateEntry("compile01.example.com", plain, state_from(plain), secret)
    state = engine.up(good_inputs(), timeout=60)  # connect_timeout and peer_masters removed
    assert engine.calls[-1] == "update"
    assert "connect_timeout" not in state.outputs and "peer_masters" not in state.outputs
    assert state.outputs["cert_fingerprint"] == state_from(plain)["cert_fingerprint"]  # computed outputs kept
    _, diff = engine.preview(good_inputs())
    assert diff is not None and diff.changes == "none"


def test_a_failure_reaches_the_user_as_one_message_with_advice_for_its_kind(server: ProviderServer) -> None:
    """An unreachable host (nothing listens on NOWHERE): the SDK's traceback holds the
    boundary frame and one message that says what to do about SSH, no chained cause."""
    engine = Engine(server, PeCompileMasterProvider(), "m", "PeCompileMaster")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", f"{tmp}/k"], check=True)
        key = Path(f"{tmp}/k").read_text()
    with pytest.raises(HarnessProviderError) as failed:
        engine.up(good_inputs(connect_timeout=2, ssh_private_key=Secret(key)), timeout=60)
    message = failed.value.message
    assert message.startswith(f"{NOWHERE}") or message.startswith(f"[{NOWHERE}"), message
    assert "What to do: the SSH connection to the host was lost or refused" in message
    assert key.splitlines()[1] not in failed.value.details

    with pytest.raises(HarnessProviderError) as failed:  # a key that is no key: the input's advice
        engine.up(good_inputs(), timeout=60)
    assert "What to do: give the SSH private key itself" in failed.value.message


def test_a_preview_loads_no_ssh_https_or_x509_library() -> None:
    """check() and diff() run in a fresh provider server at every `pulumi preview`: the
    libraries only a remote step needs (paramiko, requests, cryptography's x509: ~0.18 s
    to import) are imported by the step, not by the resource modules."""
    script = """
import json, sys
import provider.compile_master, provider.compile_master_batch, provider.file_sync
import provider.infra_refresh, provider.pool_admission, provider.pool_member
from provider.compile_master import PeCompileMasterProvider
news = {k: getattr(v, "value", v) for k, v in good_inputs().items()}
assert not PeCompileMasterProvider().check({}, news).failures
assert PeCompileMasterProvider().diff("x", {**news, "status": "running"}, news).changes is False
print(json.dumps(sorted(m for m in ("paramiko", "requests", "cryptography.x509") if m in sys.modules)))
"""
    source = Path(__file__).read_text()
    helpers = source[source.index("NOWHERE = ") : source.index("@pytest.fixture")]
    head = (
        "from __future__ import annotations\nfrom typing import Any\nfrom tests.harness.provider_server import Secret\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", head + helpers + script], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
