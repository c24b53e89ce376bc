"""Load balancer drivers: how a pool member is added, weighed, drained and removed on one
kind of load balancer. PoolMember (provider/pool_member.py) owns the policy - health
gate, drain wait, deadlines, clean-up on failure - and talks to a driver only through
`PoolDriver`, so a second load balancer is one more class here.

HAProxy: the runtime API over SSH (socat on the stats socket) for live changes, and the
same server line in haproxy.cfg so a reload or restart keeps them. Config edits hold a
lock on the LB host (flock, released when the SSH channel closes, even if we die), and
every new config is checked with `haproxy -c` before it replaces the old one, so an
operator's reload is always safe. The driver never reloads HAProxy itself: the runtime
API already applied the change, and a reload would reset other members' health state.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from provider.core.errors import ProviderError
from provider.lb import haproxy
from provider.ssh.session import SshSession, remote_lock


@dataclass(frozen=True)
class MemberSpec:
    """What the pool should hold for one master."""

    backend: str
    server: str
    address: str
    port: int
    weight: int
    check_ca_file: str
    check_inter_ms: int

    @property
    def endpoint(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class MemberState:
    """What the load balancer has for one server name right now."""

    status: str  # UP, DOWN, DRAIN, MAINT, ...
    check: str  # last health check result (L7OK, L4CON, ...)
    healthy: bool  # UP after a passing health check
    sessions: int
    weight: int
    endpoint: str
    persisted: bool  # in the saved configuration, as specified


class PoolDriver(Protocol):
    """One load balancer's operations; each is idempotent and raises ProviderError."""

    label: str

    def require_backend(self, backend: str) -> None: ...
    def state(self, spec: MemberSpec) -> MemberState | None: ...
    def states(self, specs: Sequence[MemberSpec]) -> dict[str, MemberState | None]: ...
    def add(self, spec: MemberSpec) -> None: ...
    def make_ready(self, spec: MemberSpec) -> None: ...
    def set_weight(self, spec: MemberSpec) -> None: ...
    def persist(self, spec: MemberSpec) -> None: ...
    def persist_all(self, specs: Sequence[MemberSpec]) -> None: ...
    def drain(self, spec: MemberSpec) -> None: ...
    def remove(self, spec: MemberSpec, force: bool) -> None: ...


def socket_advice(socket_path: str) -> str:
    return (
        f"check that HAProxy runs and that its global section has `stats socket {socket_path} level admin`, "
        "then run `pulumi up` again"
    )


def server_keywords(spec: MemberSpec) -> str:
    """The member's `server` line keywords, the same at run time and in haproxy.cfg."""
    return haproxy.server_keywords(spec.address, spec.port, spec.weight, spec.check_ca_file, spec.check_inter_ms)


def member_state(stat: haproxy.ServerStat, persisted: bool) -> MemberState:
    return MemberState(
        status=stat.status,
        check=stat.check_status,
        healthy=stat.is_healthy,
        sessions=stat.current_sessions,
        weight=stat.weight,
        endpoint=stat.address,
        persisted=persisted,
    )


class HaproxyRuntimeDriver:
    """HAProxy >= 2.6 through its stats socket (`level admin`) and haproxy.cfg, over SSH."""

    def __init__(
        self,
        session: SshSession,
        socket_path: str,
        config_path: str,
        lock_timeout: float = 120.0,
        haproxy_bin: str = "haproxy",
    ):
        self.session = session
        self.socket_path = socket_path
        self.config_path = config_path
        self.lock_timeout = lock_timeout
        self.haproxy_bin = haproxy_bin
        self.label = f"HAProxy on {session.target.label}"
        self.lock_path = "/var/lock/pe-compile-masters-haproxy.lock"  # every platform has /var/lock

    # --- runtime API ------------------------------------------------------------------
    def runtime(self, command: str, step: str, allowed_errors: tuple[str, ...] = (), query: bool = False) -> str:
        """One runtime API command; a change answered with anything but success raises."""
        result = self.session.run(haproxy.socket_command(command, self.socket_path), timeout=30)
        result.check(step, f"cannot reach HAProxy's stats socket {self.socket_path}: {socket_advice(self.socket_path)}")
        error = None if query else haproxy.runtime_error(result.stdout)
        if error and not any(a in error for a in allowed_errors):
            raise ProviderError(f"[{self.session.target.label}] {step}: HAProxy answered `{command}` with: {error}")
        return result.stdout

    def stats(self) -> dict[tuple[str, str], haproxy.ServerStat]:
        text = self.runtime("show stat", "read pool state", query=True)
        if not text.startswith("# "):
            raise ProviderError(
                f"[{self.session.target.label}] step 'read pool state' failed: unexpected answer from HAProxy's stats "
                f"socket {self.socket_path} ({text[:100]!r}): {socket_advice(self.socket_path)}"
            )
        return haproxy.parse_show_stat(text)

    # --- configuration -----------------------------------------------------------------
    def read_config(self) -> str:
        data = self.session.get(self.config_path)
        if data is None:
            raise ProviderError(f"[{self.session.target.label}] no HAProxy configuration at {self.config_path}")
        return data.decode()

    def require_backend(self, backend: str) -> None:
        if not haproxy.has_backend(self.read_config(), backend):
            raise ProviderError(
                f"[{self.session.target.label}] there is no `backend {backend}` in {self.config_path}: "
                "name an existing backend (the one the 8140 frontend uses)"
            )

    def edit_config(self, edit: str, change: Callable[[str], str]) -> None:
        """Apply `change(cfg) -> cfg` under the LB host's lock; validate before replacing."""
        with remote_lock(self.session, self.lock_path, self.lock_timeout, f"{edit} (HAProxy config lock)"):
            current = self.read_config()
            wanted = change(current)
            if wanted == current:
                return
            candidate = f"{self.config_path}.pe-compile-masters.new"
            self.session.put(candidate, wanted.encode())
            check = self.session.run([self.haproxy_bin, "-c", "-q", "-f", candidate], timeout=60)
            if check.exit_status != 0:
                self.session.run(["rm", "-f", candidate], timeout=30)
                check.check(edit, "the edited configuration does not validate; the running one was left untouched")
            path, new = shlex.quote(self.config_path), shlex.quote(candidate)
            self.session.run(
                f"chown --reference={path} {new} && chmod --reference={path} {new} && mv -f {new} {path}",
                timeout=30,
            ).check(edit)

    # --- PoolDriver -------------------------------------------------------------------
    def state(self, spec: MemberSpec) -> MemberState | None:
        return self.states([spec])[spec.server]

    def states(self, specs: Sequence[MemberSpec]) -> dict[str, MemberState | None]:
        """Every spec's state from ONE `show stat` and ONE read of the configuration
        (a pool batch polls its members together)."""
        stats, config = self.stats(), self.read_config()
        out: dict[str, MemberState | None] = {}
        for spec in specs:
            stat = stats.get((spec.backend, spec.server))
            saved = haproxy.config_server_line(config, spec.backend, spec.server) == server_keywords(spec)
            out[spec.server] = None if stat is None else member_state(stat, saved)
        return out

    def require_version(self) -> None:
        """Refuse an HAProxy whose runtime API cannot add a health-checked TLS server."""
        version = haproxy.parse_version(self.runtime("show info", "read HAProxy's version", query=True))
        if version is None or version < haproxy.MIN_RUNTIME_VERSION:
            found = "an unknown version" if version is None else f"{version[0]}.{version[1]}"
            raise ProviderError(
                f"[{self.session.target.label}] HAProxy is {found}: adding a health-checked server at run time "
                "(`add server ... check check-ssl ca-file`) needs HAProxy 2.6 or later; upgrade it"
            )

    def add(self, spec: MemberSpec) -> None:
        self.require_version()
        for command in haproxy.add_server_commands(spec.backend, spec.server, server_keywords(spec)):
            self.runtime(command, "add to pool")

    def make_ready(self, spec: MemberSpec) -> None:
        self.runtime(f"enable health {spec.backend}/{spec.server}", "enable health checks")
        self.runtime(haproxy.ready_command(spec.backend, spec.server), "take out of drain/maintenance")

    def set_weight(self, spec: MemberSpec) -> None:
        self.runtime(haproxy.weight_command(spec.backend, spec.server, spec.weight), "set weight")

    def persist(self, spec: MemberSpec) -> None:
        self.persist_all([spec])

    def persist_all(self, specs: Sequence[MemberSpec]) -> None:
        """Save every spec's server line in ONE locked, validated configuration edit."""
        if not specs:
            return

        def change(cfg: str) -> str:
            for spec in specs:
                cfg = haproxy.config_with_server(cfg, spec.backend, spec.server, server_keywords(spec))
            return cfg

        self.edit_config("save pool member" if len(specs) == 1 else f"save {len(specs)} pool members", change)

    def drain(self, spec: MemberSpec) -> None:
        self.runtime(haproxy.drain_command(spec.backend, spec.server), "drain")

    def remove(self, spec: MemberSpec, force: bool) -> None:
        """Out of the runtime pool (maintenance first; `force` cuts remaining sessions) and
        out of the saved configuration. A server that is already gone is fine."""
        gone = ("No such server", "No such backend")
        if (spec.backend, spec.server) in self.stats():
            self.runtime(haproxy.remove_commands(spec.backend, spec.server)[0], "put in maintenance", gone)
            if force:
                self.runtime(haproxy.shutdown_sessions_command(spec.backend, spec.server), "cut sessions", gone)
            deadline = time.monotonic() + 20
            while True:  # `del server` refuses while cut sessions are still closing
                try:
                    self.runtime(haproxy.remove_commands(spec.backend, spec.server)[1], "remove from pool", gone)
                    break
                except ProviderError as exc:
                    if "connection" not in str(exc).lower() or time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
        self.edit_config(
            "remove pool member from config",
            lambda cfg: haproxy.config_without_server(cfg, spec.backend, spec.server),
        )


DRIVERS = ("haproxy",)
