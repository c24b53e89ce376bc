"""The stack's lifecycle under the engine's rules (tests/harness/graph.py), against the lab's
PE 2021.7 profile: a replacement drains the pool member before the master's certificate is
revoked; a certname change on the same host is refused before anything changes; a removed
optional input leaves the state in one update. (refresh -> up repairs runs on every
generation profile: test_generations.py, drift_then_repair.)"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from components.program import main
from lab.client import LabClient
from tests.harness.graph import GraphRun
from tests.harness.mocks import RecordingMocks, run_program
from tests.harness.provider_server import CheckFailedError, ProviderServer
from tests.labtests.helpers import bare_masters, lab_stack_config, lb_stats, on_generation, served_fingerprint
from tests.labtests.test_generations import assert_serving

pytestmark = pytest.mark.lab
GENERATION = "2021.7"
SHORT = "compile02"
CERTNAME = f"{SHORT}.pelab.test"
MASTER, POOL = f"{CERTNAME}-master", f"{CERTNAME}-pool"


def program(
    lab: LabClient, masters: list[dict[str, Any]] | None = None, changes: dict[str, Any] | None = None
) -> RecordingMocks:
    config = lab_stack_config(lab, (SHORT,), **{"pe:version": GENERATION, **(changes or {})})
    if masters is not None:
        config["pe:compileMasters"] = json.dumps(masters)
    return run_program(main, stack="lab", config=config)


def masters(lab: LabClient) -> list[dict[str, Any]]:
    return list(json.loads(lab_stack_config(lab, (SHORT,))["pe:compileMasters"]))


@pytest.fixture(scope="module")
def deployed(lab: LabClient) -> Iterator[tuple[GraphRun, ProviderServer]]:
    bare_masters(lab, (SHORT,))
    with ProviderServer() as server, on_generation(lab, GENERATION):
        run = GraphRun(server)
        try:
            run.up(program(lab))
            assert_serving(lab, run, (SHORT,))
            yield run, server
        finally:
            run.destroy()


def test_a_removed_optional_input_is_one_update_then_no_change(
    lab: LabClient, deployed: tuple[GraphRun, ProviderServer]
) -> None:
    run, _ = deployed
    timeouts = json.loads(lab_stack_config(lab, (SHORT,))["pe:timeouts"])
    run.up(program(lab, changes={"pe:timeouts": {**timeouts, "connect": 45}}))
    assert run.outputs(MASTER)["connect_timeout"] == 45
    start = len(run.log)
    run.up(program(lab))  # `connect` removed again
    updated = {name for op, name in run.operations(start) if op == "update"}
    assert MASTER in updated and POOL in updated
    assert {op for op, _ in run.operations(start)} <= {"update", "same"}
    for name in run.engines:
        assert "connect_timeout" not in run.outputs(name), name
    assert set(run.preview(program(lab)).values()) == {"same"}
    start = len(run.log)
    run.up(program(lab))
    assert {op for op, _ in run.operations(start)} == {"same"}


def test_a_new_certname_on_the_same_host_is_refused_before_anything_changes(
    lab: LabClient, deployed: tuple[GraphRun, ProviderServer]
) -> None:
    run, _ = deployed
    renamed = [{**masters(lab)[0], "certname": "compile02-renamed.pelab.test"}]
    for attempt in (run.preview, run.up):
        start = len(run.log)
        with pytest.raises(CheckFailedError) as failed:
            attempt(program(lab, renamed))
        (prop, reason), *_ = failed.value.failures
        assert prop == "masters[0].certname", failed.value.failures
        assert f"Remove {CERTNAME} from the stack config" in reason and "compile02-renamed.pelab.test" in reason
        assert run.operations(start) == []
    assert lb_stats(lab)[("puppet_compilers", CERTNAME)].is_healthy
    assert lab.ca_state(CERTNAME) == "signed"


@dataclass
class Sample:
    at: float
    member: str  # HAProxy's status of the member, or "gone"
    serial: int | None  # the CA's certificate for the certname (None: none)
    state: str | None


def poll(lab: LabClient, stop: threading.Event, into: list[Sample]) -> None:
    while not stop.is_set():
        stat = lb_stats(lab).get(("puppet_compilers", CERTNAME))
        entry = lab.ca_entry(CERTNAME)
        into.append(
            Sample(
                time.monotonic(),
                stat.status if stat else "gone",
                int(entry["serial_number"]) if entry and entry.get("serial_number") else None,
                str(entry["state"]) if entry else None,
            )
        )
        time.sleep(0.2)


def test_an_alt_name_change_drains_the_member_before_the_certificate_goes(
    lab: LabClient, deployed: tuple[GraphRun, ProviderServer]
) -> None:
    run, server = deployed
    old_serial = int(run.outputs(MASTER)["cert_serial"])
    changed = [{**masters(lab)[0], "dnsAltNames": [SHORT, "compile02-new"]}]
    assert run.preview(program(lab, changed))[MASTER] == "replace"
    samples: list[Sample] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll, args=(lab, stop, samples), daemon=True)
    poller.start()
    start = len(run.log)
    try:
        run.up(program(lab, changed))
    finally:
        stop.set()
        poller.join(timeout=60)
    ops = run.operations(start)
    assert ops.index(("delete-replaced", POOL)) < ops.index(("delete-replaced", MASTER))
    assert ops.index(("create-replacement", MASTER)) < ops.index(("create-replacement", POOL))
    assert "batch: compile02.pelab.test: replaced by the engine" in server.text()  # not re-signed first

    # With timestamps: the member leaves service before the old certificate leaves the CA.
    assert samples and samples[0].member.startswith("UP") and samples[0].serial == old_serial, samples[:3]
    drained = next(s.at for s in samples if not s.member.startswith("UP"))
    revoked = next(s.at for s in samples if s.serial != old_serial or s.state != "signed")
    assert drained < revoked, [(round(s.at - samples[0].at, 1), s.member, s.serial, s.state) for s in samples]

    # Re-provisioned with the new names, back in the pool, one certificate on the CA.
    entry = lab.ca_entry(CERTNAME)
    assert entry is not None and entry["state"] == "signed" and int(entry["serial_number"]) != old_serial
    assert "DNS:compile02-new" in entry["dns_alt_names"] or "compile02-new" in entry["dns_alt_names"]
    assert served_fingerprint(lab, SHORT) == run.outputs(MASTER)["cert_fingerprint"]
    assert lb_stats(lab)[("puppet_compilers", CERTNAME)].is_healthy
    assert run.outputs(POOL)["status"] == "UP"
    crl = lab.host("primary").run("openssl crl -in /var/lib/puppet/ssl/crl.pem -noout -text").stdout
    assert f"{old_serial:X}" in crl.replace(":", "").upper()
    start = len(run.log)
    run.up(program(lab, changed))
    assert {op for op, _ in run.operations(start)} == {"same"}
