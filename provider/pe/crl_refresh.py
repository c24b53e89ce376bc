"""After a compile master's certificate is revoked, the masters that remain take the new
CRL the way PE's node removal procedure has them do it (Generation.crl_refresh,
pe-generations.md §8 [S38]):

* up to PE 2017.1 a Puppet run on the primary "will copy the certificate revocation list
  (CRL) to the correct SSL directory", then pe-puppetserver is restarted (3.7-2015.2) or
  reloaded (2015.3-2017.1: a HUP) on the primary and on every compile master: "the Puppet
  server process won't re-read the certificate revocation list until the service is
  restarted" (PE 3.7's "Deactivating a PE agent node"). A server reads its own CRL file
  (`hostcrl`, its ssl-crl-path), and before 2017.2 nothing distributes the CA's CRL to
  compile masters ("from 2017.2 ... distributed to compile masters" says it was not), so
  the CA's CRL is copied into each compile master's hostcrl before its restart or reload,
  as an admin following the page must;
* from PE 2017.2 "the updated CRL is managed by Puppet and distributed to compile
  masters": a Puppet run on each compile master, nothing on the primary.

The other masters are the deleted master's `peer_masters` input (reached with the shared
SSH key and their pinned host keys). A peer whose certificate is no longer signed on the
CA, or that leaves the stack in this `up` (provider/core/retirement.py), is being removed too
and is skipped. One server at a time, each answering again before the next, so the 8140
pool never loses two at once - across the provider process too: restarts and reloads
take one lock (`Ledger`). Each step checks first and is verified: a run is skipped when
the host's CRL file (`hostcrl`, what its Puppet Server's ssl-crl-path names) already
lists the revoked serials, and must leave them listed; a restart or reload is skipped
when one of that server began after the revocation and its CRL file lists the serials (in
this process: single flight, so sixteen removals in flight restart each server left
once), and must leave the server answering on 8140 with the serials in its CRL file.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from provider.core.command import CommandResult
from provider.core.errors import DeadlineError, ProviderError
from provider.pe import agent_runs, services
from provider.pe.generation import Generation
from provider.pe.primary import parse_config_print
from provider.ssh.session import SshSession

Action = Literal["run", "restart", "reload"]
PRIMARY = "primary"
SERVICE = "pe-puppetserver"
# What each server's check needs, in one `puppet config print` (one Ruby start-up).
SETTINGS = ("hostcrl", "localcacert", agent_runs.RUN_LOCK_SETTING)


@dataclass(frozen=True)
class CrlStep:
    server: str  # PRIMARY or a compile master's certname
    action: Action


def plan(generation: Generation, peers: Sequence[str]) -> list[CrlStep]:
    """The generation's steps, in PE's order: the primary's run and restart/reload first
    (up to 2017.1), then each remaining compile master."""
    if generation.crl_refresh == "run":
        return [CrlStep(p, "run") for p in peers]
    return [
        CrlStep(PRIMARY, "run"),
        CrlStep(PRIMARY, generation.crl_refresh),
        *(CrlStep(p, generation.crl_refresh) for p in peers),
    ]


def service_action_script(action: Action) -> str:
    """`restart` or `reload` pe-puppetserver through the host's service manager."""
    if action == "reload":
        return services.reload_script(SERVICE)
    if action == "restart":
        return services.restart_script(SERVICE)
    raise ValueError(f"not a service action: {action}")


@dataclass
class Ledger:
    """The CRL steps carried out in this provider process: one at a time per server (two
    deletes never run Puppet on the same host at once), every restart or reload under one
    lock (never two servers out of the pool), and when each began."""

    _guard: threading.Lock = field(default_factory=threading.Lock)
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _began: dict[tuple[str, str], float] = field(default_factory=dict)

    @contextmanager
    def holding(self, step: CrlStep) -> Iterator[None]:
        key = step.server if step.action == "run" else "service actions"
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def covers(self, step: CrlStep, since: float) -> bool:
        """A `step.action` of that server began after `since` (the revocation) and ended well."""
        with self._guard:
            return self._began.get((step.server, step.action), float("-inf")) >= since

    def record(self, step: CrlStep, began: float) -> None:
        with self._guard:
            self._began[(step.server, step.action)] = began


LEDGER = Ledger()


@dataclass
class Server:
    """One server the CRL must reach: its session, certname and generation's binaries."""

    session: SshSession
    certname: str
    generation: Generation
    log: Callable[[str, str], None]
    # (session, certname, cafile) -> 8140 answers as the LB's check sees it
    probe: Callable[[SshSession, str, str], bool]
    settings: dict[str, str] | None = None

    def setting(self, name: str) -> str:
        if self.settings is None:
            printed = self.session.run(
                [self.generation.puppet_bin, "config", "print", *SETTINGS, "--section", "agent"], timeout=120
            )
            printed.check("CRL refresh", f"read {', '.join(SETTINGS)}")
            self.settings = parse_config_print(printed.stdout)
        value = self.settings.get(name, "")
        if not value.startswith("/"):
            label = self.session.target.label
            raise ProviderError(f"[{label}] CRL refresh: `puppet config print {name}` gave {value!r}")
        return value

    def run(self, timeout: float) -> None:
        agent_runs.agent_run(
            self.session,
            "CRL refresh",
            timeout,
            self.log,
            self.setting(agent_runs.RUN_LOCK_SETTING),
            self.generation.puppet_bin,
        )

    def crl(self) -> bytes | None:
        return self.session.get(self.setting("hostcrl"))

    def unlisted(self, serials: Sequence[int], serial_revoked: Callable[[bytes, int], bool]) -> list[int]:
        """The serials the host's CRL file does not list yet."""
        crl = self.crl()
        return [s for s in serials if crl is None or not serial_revoked(crl, s)]

    def deliver(self, crl_pem: bytes) -> None:
        """The CA's CRL into this server's hostcrl: written beside it, given the old file's
        owner and mode, then moved over it (a reader never sees half a file)."""
        hostcrl = self.setting("hostcrl")
        tmp = f"{hostcrl}.pe-compile-masters.tmp"
        self.session.put(tmp, crl_pem)
        script = (
            f'set -e; t={shlex.quote(tmp)}; f={shlex.quote(hostcrl)}; chmod 644 "$t"; '
            'if [ -e "$f" ]; then chown --reference="$f" "$t"; fi; mv -f "$t" "$f"'
        )
        self.session.run(script, timeout=60).check("CRL refresh", f"copy the CA's CRL to {hostcrl}")

    def service(self, action: Action) -> CommandResult:
        return self.session.run(service_action_script(action), timeout=300)

    def answers(self) -> bool:
        return self.probe(self.session, self.certname, self.setting("localcacert"))


def carry_out(
    step: CrlStep,
    server: Server,
    serials: Sequence[int],
    serial_revoked: Callable[[bytes, int], bool],
    run_timeout: float,
    service_timeout: float,
    since: float,
    ledger: Ledger = LEDGER,
    ca_crl: Callable[[], bytes] | None = None,
) -> None:
    """One step, checked first and verified: a run leaves the serials in the host's CRL
    file; a restart or reload (the CA's CRL copied into a compile master's CRL file first,
    `ca_crl`) leaves the server answering on 8140 within service_timeout, with the serials
    in the CRL file it read. `since`: when the revocations were done (time.monotonic())."""
    label = server.session.target.label
    with ledger.holding(step):
        if step.action == "run":
            if serials and not server.unlisted(serials, serial_revoked):
                server.log("CRL refresh", f"{server.certname}: its CRL already lists the revoked serial(s): no run")
                return
            server.run(run_timeout)
            missing = server.unlisted(serials, serial_revoked)
            if missing:
                raise ProviderError(
                    f"[{label}] CRL refresh: after its Puppet run, {server.setting('hostcrl')} does not list serial "
                    f"{', '.join(map(str, missing))}; PE's run should have copied the CA's CRL there - check the "
                    "host's master profile"
                )
            server.log("CRL refresh", f"{server.certname}: Puppet run done, its CRL lists the revoked serial(s)")
            return
        delivered = False
        if ca_crl is not None and step.server != PRIMARY and server.unlisted(serials, serial_revoked):
            server.deliver(ca_crl())
            delivered = True
            server.log("CRL refresh", f"{server.certname}: the CA's CRL copied to {server.setting('hostcrl')}")
        if not delivered and ledger.covers(step, since):
            server.log("CRL refresh", f"{server.certname}: a {step.action} began after the revocation: not repeated")
            return
        began = time.monotonic()
        server.service(step.action).check("CRL refresh", f"{step.action} {SERVICE}")
        deadline = time.monotonic() + service_timeout
        time.sleep(1)  # a reload (HUP) is asynchronous: let it begin before asking
        while not server.answers():
            if time.monotonic() > deadline:
                raise DeadlineError(
                    f"[{label}] CRL refresh: {SERVICE} does not answer on {server.certname}:8140 within "
                    f"{service_timeout:.0f}s of its {step.action}"
                )
            time.sleep(2)
        missing = server.unlisted(serials, serial_revoked)
        if missing:  # what the server read at its restart or reload
            raise ProviderError(
                f"[{label}] CRL refresh: {server.setting('hostcrl')}, which {SERVICE} reads at its {step.action}, "
                f"does not list serial {', '.join(map(str, missing))}"
            )
        ledger.record(step, began)
    server.log("CRL refresh", f"{server.certname}: {SERVICE} {step.action}ed and answering again")
