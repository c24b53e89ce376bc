"""InfraRefresh: the PuppetDB run, then the console run, then the primary's, once per
change of the set of compile masters - PE's "run Puppet on PuppetDB, then on the console
[then on the master of masters]" after new masters, done once for the whole batch instead
of once per master.

From PE 2019.7, when PE-PostgreSQL has a host of its own (`database_host`, optional), a
run there comes first, as in peadm's add_compiler.pp (compiler, then PostgreSQL host, then
PuppetDB [S29]); it has no allowlist to check. From PE 2015.3 (`primary_host`, optional:
PeDeployment passes it where the generation's procedure lists the primary) the primary's
run comes last, and its file sync storage must then serve every master
(`file-sync.client-certnames` in `file_sync_conf`; a file without that setting is not
checked: file sync is not set up there).

Stages on one host are one run, in the place of the first: on a monolithic install
(PuppetDB and the console on the primary, PE's standard and large architectures) PE's
procedure is "compile master, then master of masters", one run that must leave every list
right.

Each run is a real agent run on that host (run lock waited out, deadline); after each,
the host's certificate allowlist must list every master, or the step fails naming the
ones missing. Refresh re-reads both allowlists; a master missing from one is drift, and
the next `up` runs again. Delete changes nothing: entries of removed masters (whose
certificates are revoked by then) go with the next scheduled Puppet runs there.

The allowlist paths are inputs (`puppetdb_whitelist`, `console_whitelist`: names kept for
the state of existing stacks); PeDeployment passes the PE generation's ("...whitelist" up
to 2019.x, "...allowlist" from 2021.1, pe-generations.md §6-7). There is no PE version
input: `puppet` is found on each host (AIO's path, then PE 3.x's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
from pulumi import dynamic

from provider.core import inputs, validation
from provider.core.access import ConsoleAccess, DatabaseAccess, PrimaryAccess, PuppetdbAccess
from provider.core.errors import ProviderError, at_boundary
from provider.core.progress import progress, resource_inputs, without_provider
from provider.pe import agent_runs, file_sync_conf
from provider.ssh.session import SshSession
from provider.ssh.trust import SshTarget

SECRET_KEYS = (
    "puppetdb_ssh_private_key",
    "console_ssh_private_key",
    "database_ssh_private_key",
    "primary_ssh_private_key",
)
DEFAULTS: dict[str, Any] = {
    **inputs.ssh_defaults("puppetdb_ssh"),
    **inputs.ssh_defaults("console_ssh"),
    **inputs.ssh_defaults("database_ssh"),
    **inputs.ssh_defaults("primary_ssh"),
    "database_host": "",
    "database_ssh_private_key": "",
    "primary_host": "",
    "primary_ssh_private_key": "",
    "file_sync_conf": "",
    "masters": [],
    # PE up to 2019.x; a PeDeployment passes its generation's paths (2021.1+: ...-allowlist).
    "puppetdb_whitelist": "/etc/puppetlabs/puppetdb/certificate-whitelist",
    "console_whitelist": "/etc/puppetlabs/console-services/rbac-certificate-whitelist",
    "connect_timeout": 30,
    "run_timeout": 1800,
}
REQUIRED = ("puppetdb_host", "puppetdb_ssh_private_key", "console_host", "console_ssh_private_key")
# No-remote-work changes; everything else (the masters above all) means: run again.
LOCAL_ONLY_KEYS = (
    "puppetdb_ssh_private_key",
    "console_ssh_private_key",
    "puppetdb_ssh_host_key",
    "console_ssh_host_key",
    "puppetdb_ssh_known_hosts",
    "console_ssh_known_hosts",
    "connect_timeout",
    "run_timeout",
    # PE-PostgreSQL's host (PE 2019.7+, when not the PuppetDB host): its run matters once the
    # set of masters changes, so adding it to an existing stack (absent from older state)
    # re-runs nothing.
    *inputs.ssh_input_keys("database_host", "database_ssh"),
    # The primary's run (PE 2015.3+): the same - an existing stack that gains it runs it
    # with its next change of masters (its refresh reads the file sync list meanwhile).
    *inputs.ssh_input_keys("primary_host", "primary_ssh"),
    "file_sync_conf",
)
INPUT_KEYS = (
    "masters",
    "puppetdb_host",
    "puppetdb_ssh_port",
    "puppetdb_ssh_user",
    "console_host",
    "console_ssh_port",
    "console_ssh_user",
    "puppetdb_whitelist",
    "console_whitelist",
    *LOCAL_ONLY_KEYS,
)
OUTPUT_KEYS = ("status", "runs")


ListKind = Literal["allowlist", "file-sync"]


@dataclass(frozen=True)
class Listing:
    """A file a run must leave listing every master: a certificate allowlist (one certname
    a line) or file sync's `client-certnames` (HOCON)."""

    role: str  # whose run writes it: "PuppetDB", "console", "primary"
    path: str
    kind: ListKind = "allowlist"


@dataclass(frozen=True)
class Stage:
    """One agent run on one host, for one or more of PE's roles there (in PE's order)."""

    roles: tuple[str, ...]
    target: SshTarget
    listings: tuple[Listing, ...]

    @property
    def label(self) -> str:
        """'PuppetDB run', or 'primary run (PuppetDB, console, primary)' for a host of several roles."""
        if len(self.roles) == 1:
            return f"{self.roles[0]} run"
        return f"{self.roles[-1]} run ({', '.join(self.roles)})"


def merged_by_host(roles: list[tuple[str, SshTarget, tuple[Listing, ...]]]) -> list[Stage]:
    """PE's order with the roles of one host in one run, in the place of its first role."""
    stages: list[Stage] = []
    for role, target, listings in roles:
        same = next(
            (i for i, st in enumerate(stages) if (st.target.host, st.target.port) == (target.host, target.port)), None
        )
        if same is None:
            stages.append(Stage((role,), target, listings))
        else:
            st = stages[same]
            stages[same] = Stage((*st.roles, role), st.target, (*st.listings, *listings))
    return stages


@dataclass(frozen=True)
class RefreshConfig:
    resource_name: str
    masters: list[str]
    puppetdb: SshTarget
    console: SshTarget
    database: SshTarget | None  # PE-PostgreSQL's host when it is not the PuppetDB host
    primary: SshTarget | None  # the primary, where its generation's procedure runs it
    puppetdb_whitelist: str
    console_whitelist: str
    file_sync_conf: str
    connect_timeout: float
    run_timeout: float
    secrets: list[str] = field(repr=False)

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> RefreshConfig:
        m = inputs.with_defaults(DEFAULTS, props)
        return cls(
            resource_name=str(m.get("resource_name") or "infra-refresh"),
            masters=sorted({str(c) for c in m["masters"]}),
            puppetdb=inputs.ssh_target(m, "puppetdb_ssh", "puppetdb_host"),
            console=inputs.ssh_target(m, "console_ssh", "console_host"),
            database=inputs.ssh_target(m, "database_ssh", "database_host")
            if m["database_host"] and m["database_host"] != m["puppetdb_host"]
            else None,
            primary=inputs.ssh_target(m, "primary_ssh", "primary_host") if m["primary_host"] else None,
            puppetdb_whitelist=str(m["puppetdb_whitelist"]),
            console_whitelist=str(m["console_whitelist"]),
            file_sync_conf=str(m["file_sync_conf"]),
            connect_timeout=float(m["connect_timeout"]),
            run_timeout=float(m["run_timeout"]),
            secrets=[str(m[f"{p}_ssh_private_key"]) for p in ("puppetdb", "console", "database", "primary")],
        )

    def stages(self) -> list[Stage]:
        """In PE's order: PuppetDB first (the console's run needs PuppetDB to know the masters),
        then the console, then the primary (its run asks PuppetDB for the masters too).
        Before all, PE-PostgreSQL's host when it is another one (PE 2019.7+; peadm's
        add_compiler.pp runs the compiler, then the PostgreSQL host, then PuppetDB [S29]);
        it has no list to check. Roles on one host are one run (merged_by_host)."""
        roles: list[tuple[str, SshTarget, tuple[Listing, ...]]] = []
        if self.database is not None:
            roles.append(("database", self.database, ()))
        roles.append(("PuppetDB", self.puppetdb, (Listing("PuppetDB", self.puppetdb_whitelist),)))
        roles.append(("console", self.console, (Listing("console", self.console_whitelist),)))
        if self.primary is not None:
            file_sync = (Listing("primary", self.file_sync_conf, "file-sync"),) if self.file_sync_conf else ()
            roles.append(("primary", self.primary, file_sync))
        return merged_by_host(roles)


def problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    out = inputs.required_problems(props, REQUIRED)
    out += inputs.ssh_problems(props, "puppetdb_ssh", "puppetdb_host")
    out += inputs.ssh_problems(props, "console_ssh", "console_host")
    for optional in ("database", "primary"):  # optional hosts (unknown in preview counts as given)
        if props.get(f"{optional}_host"):
            out += inputs.ssh_problems(props, f"{optional}_ssh", f"{optional}_host")
            out += inputs.required_problems(props, (f"{optional}_ssh_private_key",))
    masters = props.get("masters", [])
    if not inputs.is_unknown(masters):
        if not isinstance(masters, list):
            out.append(("masters", "masters must be a list of certnames"))
        else:
            for name in masters:
                if not inputs.is_unknown(name):
                    error = validation.dns_name_error(name, "master certname")
                    if error:
                        out.append(("masters", error))
            known = [m for m in masters if not inputs.is_unknown(m)]
            if len(set(known)) != len(known):
                out.append(("masters", "masters lists a certname twice"))
    present = inputs.with_defaults(DEFAULTS, inputs.known(props))
    for key in ("puppetdb_whitelist", "console_whitelist", "file_sync_conf"):
        if key == "file_sync_conf" and not present[key]:
            continue  # optional: no file sync before PE 2015.3
        error = validation.path_error(present[key], key)
        if error:
            out.append((key, error))
    out += inputs.timeout_problems(props, ("connect_timeout", "run_timeout"))
    return out


def input_value(props: dict[str, Any], key: str) -> Any:
    """An input as diff and update compare it: defaulted, and masters as a set."""
    v = props.get(key)
    v = DEFAULTS.get(key) if v is None else v
    return sorted(v) if key == "masters" and isinstance(v, list) else v


def changed_keys(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    olds, news = inputs.trust_view(olds), inputs.trust_view(news)
    return [k for k in INPUT_KEYS if input_value(olds, k) != input_value(news, k)]


def allowlist_lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


class Refresh:
    def __init__(self, cfg: RefreshConfig):
        self.cfg = cfg
        self.log = progress(cfg.resource_name)

    def session(self, target: SshTarget) -> SshSession:
        return SshSession(target, self.cfg.connect_timeout, self.cfg.secrets)

    def missing(self, session: SshSession, listing: Listing) -> list[str] | None:
        """The masters `listing` lacks; None when the file has no list to check (file sync
        not set up: no file, or no `file-sync.client-certnames` in it)."""
        raw = session.get(listing.path)
        if listing.kind == "allowlist":
            listed = allowlist_lines((raw or b"").decode())
        else:
            names = file_sync_conf.client_certnames((raw or b"").decode(errors="replace"), listing.path)
            if names is None:
                return None
            listed = set(names)
        return [m for m in self.cfg.masters if m not in listed]

    def run_all(self) -> dict[str, str]:
        """Each stage: agent run, then each of its lists must name every master."""
        runs = {}
        for stage in self.cfg.stages():
            label, target = stage.label, stage.target
            with self.session(target) as session:
                t0 = time.monotonic()
                puppet = agent_runs.locate_puppet(session)
                lock = session.run([puppet, "config", "print", agent_runs.RUN_LOCK_SETTING, "--section", "agent"], 120)
                lock.check(label, f"read {agent_runs.RUN_LOCK_SETTING} with {puppet}")
                path = lock.stdout.strip()
                if not path.startswith("/"):
                    raise ProviderError(
                        f"[{target.label}] {label}: `{puppet} config print {agent_runs.RUN_LOCK_SETTING}` "
                        f"printed {path!r}, not the run lock's path"
                    )
                agent_runs.agent_run(session, label, self.cfg.run_timeout, self.log, path, puppet)
                said = []
                for listing in stage.listings:
                    missing = self.missing(session, listing)
                    if missing is None:
                        said.append(
                            f"{listing.path} has no file-sync.client-certnames (file sync not set up): not checked"
                        )
                    elif missing:
                        raise ProviderError(
                            f"[{target.label}] {label}: {listing.path} does not list {', '.join(missing)} after the "
                            "run. Each master's own Puppet run must have reached PuppetDB (which the console's and "
                            "the primary's runs ask); check those runs, then run `pulumi up` again."
                        )
                    else:
                        said.append(f"{listing.path} lists all masters")
                self.log(label, "; ".join([f"done in {time.monotonic() - t0:.1f}s", *said]))
                for role in stage.roles:
                    runs[role] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return runs

    def drift(self) -> list[str]:
        out = []
        for stage in self.cfg.stages():
            if not stage.listings:
                continue
            with self.session(stage.target) as session:
                for listing in stage.listings:
                    missing = self.missing(session, listing)
                    if missing:
                        what = "file sync clients" if listing.kind == "file-sync" else "allowlist"
                        out.append(f"{listing.role} {what} {listing.path} lacks {', '.join(missing)}")
        return out


class InfraRefreshProvider(dynamic.ResourceProvider):
    @at_boundary
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        return dynamic.CheckResult(news, [dynamic.CheckFailure(p, r) for p, r in problems(news)])

    @at_boundary
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        """The set of masters (order-free) and the hosts: a change means one more pair of runs."""
        changed = changed_keys(olds, news)
        drifted = olds.get("status") not in (None, "whitelisted")
        return dynamic.DiffResult(changes=bool(changed) or drifted, replaces=[], delete_before_replace=False)

    @at_boundary
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        cfg = inputs.parse(props, problems, RefreshConfig.from_props)
        runs = Refresh(cfg).run_all()
        return dynamic.CreateResult("infra-refresh", self.outputs(props, runs))

    @at_boundary
    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        changed = changed_keys(olds, news)  # the masters compared as a set
        if olds.get("status") == "whitelisted" and all(k in LOCAL_ONLY_KEYS for k in changed):
            return dynamic.UpdateResult({**self.outputs(news, olds.get("runs") or {})})
        runs = Refresh(RefreshConfig.from_props(news)).run_all()
        return dynamic.UpdateResult(self.outputs(news, runs))

    @at_boundary
    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        refresh = Refresh(RefreshConfig.from_props(props))
        drift = refresh.drift()
        status = "whitelisted" if not drift else "drifted: " + "; ".join(drift)
        if drift:
            refresh.log("refresh", status)
        return dynamic.ReadResult(id_, {**props, "status": status})

    @at_boundary
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        Refresh(RefreshConfig.from_props(props)).log(
            "delete", "nothing to undo; removed masters leave the allowlists with the next runs there"
        )

    @staticmethod
    def outputs(props: dict[str, Any], runs: dict[str, str]) -> dict[str, Any]:
        return {**without_provider(props), "status": "whitelisted", "runs": runs}


class InfraRefreshArgs(PuppetdbAccess, ConsoleAccess, DatabaseAccess, PrimaryAccess, total=False):
    """The inputs (see docs/resources/infra-refresh.md); validated in check()."""

    masters: pulumi.Input[list[pulumi.Input[str]]]
    puppetdb_whitelist: pulumi.Input[str]
    console_whitelist: pulumi.Input[str]
    file_sync_conf: pulumi.Input[str]
    connect_timeout: pulumi.Input[float]
    run_timeout: pulumi.Input[float]


class InfraRefresh(dynamic.Resource):
    """The deployment's PuppetDB, console and primary runs; SSH keys are kept secret."""

    status: pulumi.Output[str]
    runs: pulumi.Output[dict[str, str]]

    def __init__(self, name: str, props: InfraRefreshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args = resource_inputs(name, dict(props), SECRET_KEYS, OUTPUT_KEYS)
        super().__init__(InfraRefreshProvider(), name, args, opts)
