"""provider.pe.services' scripts run for real by sh, against stand-in service managers on
PATH that keep their state in files: what is called, in which order, and that a service
that does not reach the wanted state fails the script."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from provider.pe.services import service_script, service_state_script

SYSV = """#!/bin/sh
echo "service $*" >> "$CALLS"
case "$2" in
  status) [ -e "$STATE/$1" ] ;;
  start) [ -e "$STATE/broken" ] || touch "$STATE/$1" ;;
  stop) rm -f "$STATE/$1" ;;
esac
"""
SYSTEMCTL = """#!/bin/sh
echo "systemctl $*" >> "$CALLS"
case "$1" in
  is-active) [ -e "$STATE/$3" ] ;;
  start) touch "$STATE/$2" ;;
  stop) rm -f "$STATE/$2" ;;
esac
"""
UPDATE_RC_D = """#!/bin/sh
echo "update-rc.d $*" >> "$CALLS"
"""


@pytest.fixture
def host(tmp_path: Path) -> dict[str, str]:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in (("service", SYSV), ("systemctl", SYSTEMCTL), ("update-rc.d", UPDATE_RC_D)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CALLS": str(tmp_path / "calls"),
        "STATE": str(state),
        "marker_absent": str(tmp_path / "no-systemd"),
        "marker_present": str(state),  # any existing directory
    }


def run(host: dict[str, str], script: str) -> tuple[int, str, list[str]]:
    Path(host["CALLS"]).write_text("")
    env = {**os.environ, "PATH": host["PATH"], "CALLS": host["CALLS"], "STATE": host["STATE"]}
    done = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=30, check=False)
    return done.returncode, done.stdout.strip(), Path(host["CALLS"]).read_text().splitlines()


def test_sysv_start_enable_then_check_first_and_stop(host: dict[str, str]) -> None:
    marker = host["marker_absent"]
    code, out, calls = run(host, service_script("puppet", "running", enable=True, marker=marker))
    assert (code, out) == (0, "running")
    assert calls == [
        "service puppet status",
        "service puppet start",
        "update-rc.d puppet defaults",
        "update-rc.d puppet enable",
        "service puppet status",
    ]
    code, _, calls = run(host, service_script("puppet", "running", enable=True, marker=marker))
    assert code == 0 and "service puppet start" not in calls  # already running: not started twice
    assert run(host, service_state_script("puppet", marker=marker))[1] == "running"
    code, out, calls = run(host, service_script("puppet", "stopped", marker=marker))
    assert (code, out) == (0, "stopped") and "service puppet stop" in calls
    assert not any(c.startswith("update-rc.d") for c in calls)  # enable=None: boot left alone
    assert run(host, service_state_script("puppet", marker=marker))[1] == "stopped"


def test_systemd_when_it_is_the_running_init(host: dict[str, str]) -> None:
    marker = host["marker_present"]
    code, out, calls = run(host, service_script("puppet", "running", enable=True, marker=marker))
    assert (code, out) == (0, "running")
    assert calls == ["systemctl enable --quiet puppet", "systemctl start puppet", "systemctl is-active --quiet puppet"]
    code, out, calls = run(host, service_script("pe-puppetserver", "stopped", enable=False, marker=marker))
    assert (code, out) == (0, "stopped") and calls[:2] == [
        "systemctl disable --quiet pe-puppetserver",
        "systemctl stop pe-puppetserver",
    ]


def test_a_service_that_does_not_start_fails_the_script(host: dict[str, str]) -> None:
    Path(host["STATE"], "broken").touch()
    code, _, calls = run(host, service_script("puppet", "running", enable=True, marker=host["marker_absent"]))
    assert code != 0 and calls[-1] == "service puppet status"
    with pytest.raises(ValueError):
        service_script("puppet", "restarted")
