"""The bench's CPU attribution (bench/cpu.py): what a compile host's command is for, and the
machine's busy CPU-s between two moments - pure, so a wrong table cannot pass unseen."""

from __future__ import annotations

import pytest

from bench.cpu import PURPOSES, Sampled, purpose_of

REAL = "/usr/bin/ruby /var/lib/pelab/inhost/real/puppet"


@pytest.mark.parametrize(
    ("cmdline", "purpose"),
    [
        (f"{REAL} agent --onetime --no-daemonize --detailed-exitcodes", "agent runs in the foreground"),
        ("puppet agent: applying configuration", "the agent service's own run at its start"),
        (f"{REAL} agent", "the agent service's start-up (PE leaves it running)"),
        (f"{REAL} ssl submit_request --certname c.example", "CSR submission (`puppet ssl`)"),
        (f"{REAL} certificate generate c.example --ca-location remote", "CSR submission (`puppet ssl`)"),
        (f"{REAL} config print csr_attributes certname hostcert --section agent", "install.bash stand-in (lab)"),
        (f"{REAL} config print server certname hostcert --section agent", "agent settings read"),
        ("/usr/bin/python3 /var/lib/pelab/inhost/bin/pelab-delay install", "install.bash stand-in (lab)"),
        ("ssh -i /etc/puppetlabs/pe-file-sync/id_ed25519 -p 22 primary", "code sync (ssh, rsync)"),
        ("/usr/sbin/cron", "other commands"),
    ],
)
def test_each_command_is_counted_for_what_it_buys(cmdline: str, purpose: str) -> None:
    assert purpose_of(cmdline).startswith(purpose)


def test_every_purpose_is_reachable() -> None:
    labels = [label for _, label in PURPOSES]
    assert len(set(labels)) == len(labels) - 1  # the installer's own settings read shares its label


def test_busy_between_takes_the_nearest_samples() -> None:
    sampled = Sampled(busy=[(10.0, 100.0), (10.2, 100.3), (10.4, 100.7), (10.6, 100.8)])
    assert sampled.busy_between(10.19, 10.61) == pytest.approx(0.5)
    assert Sampled().busy_between(0.0, 1.0) == 0.0


def test_a_stretchs_work_leaves_out_the_samplers_own_share() -> None:
    # 2 s sampled, the sampler spent 0.4 CPU-s: a 1-s stretch carries 0.2 of it
    sampled = Sampled(busy=[(10.0, 100.0), (11.0, 101.5), (12.0, 102.0)], own_cpu=0.4)
    assert sampled.work_between(10.0, 11.0) == pytest.approx(1.3)
    assert Sampled().work_between(0.0, 1.0) == 0.0
