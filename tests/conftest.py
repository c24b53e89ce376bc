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
