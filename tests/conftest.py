"""Shared fixtures. Lab tests (marker `lab`) need root and bring the lab up once per run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from lab.client import LabClient
from lab.deploy import Lab


@pytest.fixture(scope="session")
def lab() -> Iterator[LabClient]:
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (they run sshd, Puppet Server and HAProxy on loopback)")
    Lab().up()  # idempotent: a running lab is only checked
    yield LabClient()


@pytest.fixture(autouse=True)
def lab_left_as_found(request: pytest.FixtureRequest) -> Iterator[None]:
    """A lab test leaves the lab-wide state as it found it, whatever fails: the generation
    profile, ca.conf's alt-names switch, the latency and fault knobs, every host and
    service running. What a test's own `finally` did not restore is restored here (and
    said), so one failure stays one failure instead of failing every test after it."""
    if request.node.get_closest_marker("lab") is None or os.geteuid() != 0:
        yield
        return
    if request.node.get_closest_marker("lab_state_per_module") is not None:
        yield  # the module's own fixture hands the profile from test to test, then restores it
        return
    lab = Lab()
    before = lab.settings()
    yield
    after = lab.settings()
    down = [name for name, state in lab.status().items() if state in ("down", "not running")]
    if after == before and not down:
        return
    changed = [
        f"{key}: {getattr(before, key)!r} -> {getattr(after, key)!r}"
        for key in ("pe_version", "allow_alt_names", "real_compile_hosts", "knobs")
        if getattr(before, key) != getattr(after, key)
    ]
    print(f"\nlab guard: {request.node.nodeid} left {changed + [f'{d} down' for d in down]}: restoring")
    lab.up(before)
