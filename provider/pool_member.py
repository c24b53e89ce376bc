"""PoolMember: a compile master in the load balancer's 8140 pool, as a dynamic resource.

The policy lives here; the load balancer's mechanics in provider/lb/drivers.py:
- create is health-gated: it returns when the load balancer itself reports the server UP
  after a passing check, or fails at the deadline and removes what it added;
- delete drains: no new connections, wait for open ones to finish (or the drain deadline,
  then cut them), then remove from the live pool and the saved configuration;
- weight changes in place; anything that names a different server replaces it;
- refresh reports a member that is missing, unsaved, DOWN, draining or in maintenance.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi import dynamic

from provider.core import inputs, validation
from provider.core.access import LbAccess
from provider.core.errors import DeadlineError, PrivateKeyError, ProviderError, at_boundary
from provider.core.progress import progress, resource_inputs, without_provider
from provider.core.retirement import RETIREMENT
from provider.lb.drivers import DRIVERS, HaproxyRuntimeDriver, MemberSpec, MemberState, PoolDriver
from provider.lb.haproxy import member_problems
from provider.ssh.session import SshSession
from provider.ssh.trust import SshTarget

SECRET_KEYS = ("lb_ssh_private_key",)
# A change of these names another server: replace (see diff for the order).
REPLACE_KEYS = (
    "lb_host",
    "driver",
    "backend",
    "server_name",
    "address",
    "port",
    "check_ca_file",
    "check_inter_ms",
    "socket_path",
    "config_path",
)
LOCAL_ONLY_KEYS = (
    "lb_ssh_port",
    "lb_ssh_user",
    "lb_ssh_private_key",
    "lb_ssh_host_key",
    "lb_ssh_known_hosts",
    "connect_timeout",
    "health_timeout",
    "drain_timeout",
)
UPDATE_KEYS = ("weight", *LOCAL_ONLY_KEYS)
INPUT_KEYS = (*REPLACE_KEYS, *UPDATE_KEYS)
OUTPUT_KEYS = ("status", "endpoint")
DEFAULTS: dict[str, Any] = {
    **inputs.ssh_defaults("lb_ssh"),
    "driver": "haproxy",
    "backend": "puppet_compilers",
    "port": 8140,
    "weight": 100,
    "check_ca_file": "/etc/haproxy/pe-ca.pem",
    "check_inter_ms": 2000,
    "socket_path": "/run/haproxy/admin.sock",
    "config_path": "/etc/haproxy/haproxy.cfg",
    "connect_timeout": 30,
    "health_timeout": 180,
    "drain_timeout": 300,
}
REQUIRED = ("lb_host", "lb_ssh_private_key", "server_name", "address")


@dataclass(frozen=True)
class MemberConfig:
    resource_name: str
    target: SshTarget
    driver: str
    spec: MemberSpec
    socket_path: str
    config_path: str
    connect_timeout: float
    health_timeout: float
    drain_timeout: float
    secrets: list[str] = field(repr=False)

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> MemberConfig:
        m = inputs.with_defaults(DEFAULTS, props)
        return cls(
            resource_name=str(m.get("resource_name") or m["server_name"]),
            target=inputs.ssh_target(m, "lb_ssh", "lb_host"),
            driver=str(m["driver"]),
            spec=MemberSpec(
                backend=str(m["backend"]),
                server=str(m["server_name"]),
                address=str(m["address"]),
                port=int(m["port"]),
                weight=int(m["weight"]),
                check_ca_file=str(m["check_ca_file"]),
                check_inter_ms=int(m["check_inter_ms"]),
            ),
            socket_path=str(m["socket_path"]),
            config_path=str(m["config_path"]),
            connect_timeout=float(m["connect_timeout"]),
            health_timeout=float(m["health_timeout"]),
            drain_timeout=float(m["drain_timeout"]),
            secrets=[str(m["lb_ssh_private_key"])],
        )

    def session(self, connect_timeout: float | None = None) -> SshSession:
        return SshSession(self.target, connect_timeout or self.connect_timeout, self.secrets)

    def driver_on(self, session: SshSession) -> PoolDriver:
        return HaproxyRuntimeDriver(session, self.socket_path, self.config_path)


def problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    """Every reason these inputs cannot work, without touching the load balancer."""
    out = inputs.required_problems(props, REQUIRED)
    out += inputs.ssh_problems(props, "lb_ssh", "lb_host")
    present = inputs.known(props)
    m = inputs.with_defaults(DEFAULTS, present)
    # Absent or unknown names are reported by required_problems / checked at create.
    out += member_problems(m["backend"], m.get("server_name") or "x", m.get("address") or "x", m["port"])
    if m["driver"] not in DRIVERS:
        out.append(("driver", f"driver must be one of {', '.join(DRIVERS)} (got {m['driver']!r})"))
    weight = m["weight"]
    if (
        isinstance(weight, bool)
        or not isinstance(weight, (int, float))
        or (isinstance(weight, float) and not weight.is_integer())
    ):
        out.append(("weight", f"weight must be an integer 0-256, not {weight!r}"))
    elif not 0 <= int(weight) <= 256:
        out.append(("weight", f"weight {int(weight)} is outside HAProxy's 0-256"))
    for key in ("check_ca_file", "socket_path", "config_path"):
        if key in present:
            error = validation.path_error(present[key], key)
            if error:
                out.append((key, error))
    inter = m["check_inter_ms"]
    if isinstance(inter, bool) or not isinstance(inter, (int, float)) or not 100 <= inter <= 3_600_000:
        out.append(("check_inter_ms", f"check_inter_ms must be 100-3600000 milliseconds, not {inter!r}"))
    out += inputs.timeout_problems(props, ("connect_timeout", "health_timeout", "drain_timeout"))
    return out


def describe(state: MemberState) -> str:
    return f"{state.status} (last check {state.check or 'none'})"


@dataclass
class Admission:
    """What one `admit` did: members UP and saved; members left alone because the pool
    holds their name at another endpoint; members that failed (what it added is removed)."""

    healthy: dict[str, MemberState] = field(default_factory=dict)
    conflicts: dict[str, ProviderError] = field(default_factory=dict)
    failed: dict[str, ProviderError] = field(default_factory=dict)


def wait_healthy(
    driver: PoolDriver, pending: list[MemberSpec], timeout: float, out: Admission
) -> dict[str, MemberState]:
    """Poll until every pending member is UP after a passing check (moved to out.healthy),
    gone (out.failed) or the deadline passes (left in `pending`). Returns the last states."""
    last: dict[str, MemberState] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        now = driver.states(pending)
        for spec in list(pending):
            state = now[spec.server]
            if state is None:
                pending.remove(spec)
                out.failed[spec.server] = ProviderError(
                    f"{driver.label}: {spec.backend}/{spec.server} vanished from the running pool while waiting for "
                    "its health check (HAProxy restarted or reloaded before it was saved, or someone removed it); "
                    "nothing was saved for it. Run `pulumi up` again."
                )
            elif state.healthy:
                pending.remove(spec)
                out.healthy[spec.server] = state
            else:
                last[spec.server] = state
        if pending:
            time.sleep(1.0)
    return last


def admit(
    driver: PoolDriver, specs: Sequence[MemberSpec], health_timeout: float, log_for: Callable[[str], Any]
) -> Admission:
    """Converge members together: in the pool, ready, weighed, then ONE health gate (one
    poll of the load balancer per second for all of them) and ONE saved configuration
    edit. A member this call added that never turns healthy is taken out again (no half
    member left behind). `log_for(server)` gives that member's progress logger."""
    out = Admission()
    for spec in specs:  # in the pool again: no longer drained for a removal (provider/core/retirement.py)
        RETIREMENT.draining(spec.server)
    for backend in sorted({spec.backend for spec in specs}):
        driver.require_backend(backend)
    current = driver.states(specs)
    added: set[str] = set()
    pending: list[MemberSpec] = []
    for spec in specs:
        existing, log = current[spec.server], log_for(spec.server)
        if existing is not None and existing.endpoint != spec.endpoint:
            out.conflicts[spec.server] = ProviderError(
                f"{driver.label}: server {spec.backend}/{spec.server} already points at {existing.endpoint}, not "
                f"{spec.endpoint}; nothing was changed. Choose another server_name or remove that server first."
            )
            continue
        if existing is None:
            driver.add(spec)
            added.add(spec.server)
            log("add", f"{spec.backend}/{spec.server} -> {spec.endpoint} added, waiting for its health check")
        else:
            if existing.status in ("MAINT", "DRAIN") or existing.status.startswith("MAINT"):
                driver.make_ready(spec)
                log("add", f"{spec.backend}/{spec.server} was {existing.status}: made ready")
            if existing.weight != spec.weight:
                driver.set_weight(spec)
                log("weight", f"{existing.weight} -> {spec.weight}")
        pending.append(spec)
    try:
        last = wait_healthy(driver, pending, health_timeout, out)
    except ProviderError:  # the load balancer stopped answering: take back what this call added
        for spec in specs:
            if spec.server in added:  # none is saved yet: a reload would drop it half-way
                driver.remove(spec, force=True)
        raise
    for spec in pending:
        state = last.get(spec.server)
        out.failed[spec.server] = DeadlineError(
            f"{driver.label}: {spec.backend}/{spec.server} ({spec.endpoint}) is "
            f"{describe(state) if state else 'unknown'} after {health_timeout:.0f}s: the master's "
            f"https://{spec.endpoint}/status/v1/simple must answer `running` with a certificate from the CA in "
            f"{spec.check_ca_file}. Fix the master, then run `pulumi up` again."
        )
    for spec in specs:
        if spec.server in out.failed and spec.server in added:
            driver.remove(spec, force=True)
            log_for(spec.server)("add", f"not healthy in time: {spec.backend}/{spec.server} removed again")
    saved = [spec for spec in specs if spec.server in out.healthy]
    driver.persist_all(saved)
    for spec in saved:
        state = out.healthy[spec.server]
        log_for(spec.server)(
            "add", f"{spec.backend}/{spec.server} is UP ({state.check}) and saved in the configuration"
        )
    return out


def ensure_member(cfg: MemberConfig, driver: PoolDriver, log: Any) -> MemberState:
    """One member through `admit`: its first problem is raised."""
    result = admit(driver, [cfg.spec], cfg.health_timeout, lambda _server: log)
    server = cfg.spec.server
    problem = result.conflicts.get(server) or result.failed.get(server)
    if problem is not None:
        raise problem
    return result.healthy[server]


# What each backend lookup found, per provider process (one `pulumi preview` or `up`): a
# deployment's new members share one LB and backend, and the engine makes Check calls one
# at a time, so N new members were N SSH connections in a row. Keyed by everything the
# lookup depends on (the SSH target with its key, the driver, the config and socket paths).
_BACKEND_LOOKUPS: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
_BACKEND_LOOKUPS_LOCK = threading.Lock()


def _look_up_backend(cfg: MemberConfig) -> list[tuple[str, str]]:
    """One read on the LB, nothing changed: the backend's absence, or an unusable key; an
    unreachable LB is left for create to report."""
    try:
        with cfg.session(connect_timeout=min(cfg.connect_timeout, 5.0)) as session:  # preview: be brief
            cfg.driver_on(session).require_backend(cfg.spec.backend)
    except PrivateKeyError as exc:  # the key itself is unusable
        return [("lb_ssh_private_key", str(exc))]
    except ProviderError as exc:
        if "no `backend" in str(exc):
            return [("backend", str(exc))]
    return []


class PoolMemberProvider(dynamic.ResourceProvider):
    @at_boundary
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = [dynamic.CheckFailure(prop, reason) for prop, reason in problems(news)]
        if not failures:
            failures += self.backend_failures(olds, news)
        return dynamic.CheckResult(news, failures)

    @staticmethod
    def backend_failures(olds: dict[str, Any], news: dict[str, Any]) -> list[dynamic.CheckFailure]:
        """A new member, or one moved to another backend or LB: look the backend up (once
        per LB and backend in this provider process). Unchanged members cost no remote call."""
        keys = ("lb_host", "backend", "config_path")
        if olds and all(olds.get(k) == news.get(k) for k in keys):
            return []
        if any(inputs.is_unknown(v) for v in news.values()):
            return []
        cfg = MemberConfig.from_props(news)
        where = (cfg.target, cfg.driver, cfg.socket_path, cfg.config_path, cfg.spec.backend)
        with _BACKEND_LOOKUPS_LOCK:
            if where not in _BACKEND_LOOKUPS:
                _BACKEND_LOOKUPS[where] = _look_up_backend(cfg)
            return [dynamic.CheckFailure(prop, reason) for prop, reason in _BACKEND_LOOKUPS[where]]

    @at_boundary
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        """Inputs only, no remote call. A replacement under the same server name (new
        address) must remove the old one first; a new name can be added first."""
        changed = inputs.changed_keys(INPUT_KEYS, olds, news, DEFAULTS)
        replaces = [k for k in changed if k in REPLACE_KEYS]
        same_name = not any(k in replaces for k in ("lb_host", "backend", "server_name"))
        drifted = olds.get("status") not in (None, "UP")
        return dynamic.DiffResult(
            changes=bool(changed) or drifted, replaces=replaces, delete_before_replace=bool(replaces) and same_name
        )

    @at_boundary
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        cfg = inputs.parse(props, problems, MemberConfig.from_props)
        with cfg.session() as session:
            state = ensure_member(cfg, cfg.driver_on(session), progress(cfg.resource_name))
        return dynamic.CreateResult(f"{cfg.spec.backend}/{cfg.spec.server}", self.outputs(props, state))

    @at_boundary
    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        cfg = MemberConfig.from_props(news)
        changed = inputs.changed_keys(INPUT_KEYS, olds, news, DEFAULTS)
        if olds.get("status") == "UP" and all(k in LOCAL_ONLY_KEYS for k in changed):
            return dynamic.UpdateResult({**self.outputs(news, None), "status": "UP"})  # current inputs only
        with cfg.session() as session:
            state = ensure_member(cfg, cfg.driver_on(session), progress(cfg.resource_name))
        return dynamic.UpdateResult(self.outputs(news, state))

    @at_boundary
    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        cfg = MemberConfig.from_props(props)
        with cfg.session() as session:
            state = cfg.driver_on(session).state(cfg.spec)
        drift = member_drift(cfg.spec, state)
        status = "UP" if not drift else "drifted: " + "; ".join(drift)
        if drift:
            progress(cfg.resource_name)("refresh", status)
        return dynamic.ReadResult(id_, {**props, "status": status})

    @at_boundary
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        cfg = MemberConfig.from_props(props)
        log = progress(cfg.resource_name)
        spec = cfg.spec
        RETIREMENT.draining(spec.server)
        with cfg.session() as session:
            driver = cfg.driver_on(session)
            state = driver.state(spec)
            if state is not None and state.endpoint != spec.endpoint:
                log("remove", f"{spec.backend}/{spec.server} now points at {state.endpoint}: not ours, left alone")
                return
            force = False
            if state is not None:
                driver.drain(spec)
                log("drain", f"{spec.backend}/{spec.server}: no new connections; {state.sessions} open session(s)")
                force = drain(driver, spec, cfg.drain_timeout, log)
            driver.remove(spec, force)
            log("remove", f"{spec.backend}/{spec.server} removed from the pool and the configuration")
        # Out of the pool: if its master leaves the stack, the first master delete to run may
        # remove it with the others (provider/core/retirement.py).
        RETIREMENT.drained(spec.server)

    @staticmethod
    def outputs(props: dict[str, Any], state: MemberState | None) -> dict[str, Any]:
        cfg = MemberConfig.from_props(props)
        return {
            **without_provider(props),
            "status": state.status if state else props.get("status"),
            "endpoint": cfg.spec.endpoint,
        }


def drain(driver: PoolDriver, spec: MemberSpec, timeout: float, log: Any) -> bool:
    """Wait for open sessions to end; True if some were still open at the deadline."""
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 10
    while True:
        state = driver.state(spec)
        if state is None or state.sessions == 0:
            return False
        if time.monotonic() >= deadline:
            log("drain", f"deadline ({timeout:.0f}s) passed with {state.sessions} sessions open: cutting them")
            return True
        if time.monotonic() >= next_note:
            log("drain", f"{state.sessions} sessions still open")
            next_note += 10
        time.sleep(0.5)


def member_drift(spec: MemberSpec, state: MemberState | None) -> list[str]:
    if state is None:
        return ["missing from the pool"]
    drift = []
    if state.status.startswith("MAINT"):
        drift.append("in maintenance")
    elif state.status.startswith("DRAIN") or state.status == "NOLB":
        drift.append("draining")
    elif not state.healthy:
        drift.append(describe(state))
    if state.weight != spec.weight:
        drift.append(f"weight {state.weight}, not {spec.weight}")
    if not state.persisted:
        drift.append("not saved in the configuration (a reload would drop it)")
    return drift


class PoolMemberArgs(LbAccess, total=False):
    """The inputs (see docs/resources/pool-member.md); validated in check()."""

    driver: pulumi.Input[str]
    backend: pulumi.Input[str]
    server_name: pulumi.Input[str]
    address: pulumi.Input[str]
    port: pulumi.Input[int]
    weight: pulumi.Input[int]
    check_ca_file: pulumi.Input[str]
    check_inter_ms: pulumi.Input[int]
    socket_path: pulumi.Input[str]
    config_path: pulumi.Input[str]
    connect_timeout: pulumi.Input[float]
    health_timeout: pulumi.Input[float]
    drain_timeout: pulumi.Input[float]


class PoolMember(dynamic.Resource):
    """A master in the load balancer's 8140 pool; lb_ssh_private_key is kept secret."""

    status: pulumi.Output[str]
    endpoint: pulumi.Output[str]

    def __init__(self, name: str, props: PoolMemberArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(PoolMemberProvider(), name, resource_inputs(name, dict(props), SECRET_KEYS, OUTPUT_KEYS), opts)
