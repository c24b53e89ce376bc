"""A deadline the host enforces on a shell command: stopped with its whole process group
when the time is up, so nothing is left running there (a lost connection, a provider
that gave up).

coreutils' timeout(1) does this, from coreutils 7.0 (`-k` from 8.x). RHEL 5 (5.97, a PE 3.7
master platform) and SLES 11 (6.12, a PE 2016.4 one) have none (docs/pe-platforms.md); their
base system has Perl 5.8+, so there the same is done by a few lines of Perl: the command in
a process group of its own, TERM to the group at the deadline, KILL `grace` seconds later;
exit 124 (stopped by TERM) or 137 (needed KILL); HUP, INT, QUIT and TERM sent to the
watchdog go on to the group - all as timeout(1) does. Pure: no I/O here.
"""

from __future__ import annotations

import math
import shlex

# timeout(1): 124 when the command was stopped at the deadline, 137 when it needed KILL.
DEADLINE_EXIT_STATUSES = (124, 137)

PERL_DEADLINE = r"""
use POSIX ":sys_wait_h";
my ($t, $k) = splice @ARGV, 0, 2;
my $pid = fork;
defined $pid or die "fork: $!\n";
if (!$pid) { setpgrp(0, 0); exec { $ARGV[0] } @ARGV; exit 127 }
for my $sig (qw(HUP INT QUIT TERM)) { $SIG{$sig} = sub { kill $sig, -$pid } }
my $status;
eval { local $SIG{ALRM} = sub { die "deadline\n" }; alarm $t; waitpid($pid, 0); $status = $?; alarm 0; };
if (!defined $status) {
  kill "TERM", -$pid;
  for (1 .. $k) { exit 124 if waitpid($pid, WNOHANG) > 0; sleep 1 }
  kill "KILL", -$pid; waitpid($pid, 0); exit 137;
}
exit($status & 127 ? 128 + ($status & 127) : $status >> 8);
""".strip()


def with_deadline(line: str, timeout: float, grace: float, interpreter: str = '"${SHELL:-/bin/sh}"') -> str:
    """`line` run by `interpreter` (a shell) under a deadline of `timeout` seconds (then
    TERM, KILL after `grace`): timeout(1) where the host has it, else Perl (RHEL 5, SLES 11)."""
    seconds, kill_after = max(1, math.ceil(timeout)), max(1, math.ceil(grace))
    command = f"{interpreter} -c {shlex.quote(line)}"
    return (
        f"if command -v timeout >/dev/null 2>&1; then exec timeout -k {kill_after} {seconds} {command}; "
        f"else exec perl -e {shlex.quote(PERL_DEADLINE)} {seconds} {kill_after} {command}; fi"
    )
