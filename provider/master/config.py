"""PeCompileMaster's inputs: one typed, validated view of the property dict.

`parse(props)` reads every input once (provider.core.inputs.Reader): check() shows its
problems, create builds from it only when there are none; update/read/delete read the
recorded state as it is (`MasterConfig.from_props`). diff() compares the keys listed
here. Secrets live in their own top-level keys so the engine keeps them secret in
outputs (same key).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from provider.core import inputs, validation
from provider.pe.generation import Generation, check_pe_version, generation_for, pe_line
from provider.ssh.trust import SshTarget

SECRET_KEYS = (
    "ssh_private_key",
    "primary_ssh_private_key",
    "database_ssh_private_key",
    "rbac_token",
    "classifier_client_key",
)
# The host of PE-PostgreSQL (PE 2019.7+: compilers' PuppetDB authenticates there, see
# provider/pe/database_access.py) and its SSH access. Stacks older than these inputs have none
# in their state, so a change of any of them is local only: an update that records them,
# never a replace and never a re-run of the masters' steps (the batch treats them alike).
DATABASE_KEYS = inputs.ssh_input_keys("database_host", "database_ssh")
# The deployment's other compile masters, each "certname host" (reached as this master is)
# or {certname, host, ssh_port, ssh_user, ssh_host_key | ssh_known_hosts} (peer_mapping; the
# shared ssh_private_key reaches them; without a key of its own, this master's
# ssh_known_hosts must list them, so that text is not copied N times): after this
# master's certificate is revoked, its delete makes each of them take the new CRL, as PE's
# removal procedure does (provider/master/removal.py, refresh_crl). Local only: the set changes with every
# scale-out or scale-in, and recording it needs no remote work.
PEER_KEY = "peer_masters"
PEER_FIELDS = ("certname", "host", "ssh_port", "ssh_user", "ssh_host_key", "ssh_known_hosts")


def peer_mapping(entry: Any) -> Any:
    """A peer_masters entry as a mapping. The short form is one string, "certname host":
    a peer reached as its master is (SSH port, user and known_hosts - which then lists the
    peer's keys too). Each of N masters lists N - 1 peers and the engine (de)serializes
    every value of them at every preview: one string is a quarter of a three-field mapping's
    cost. Anything else (a mapping, a malformed entry) is returned as it is."""
    if isinstance(entry, str):
        words = entry.split()
        if len(words) == 2:
            return {"certname": words[0], "host": words[1]}
    return entry


def with_peer_mappings(props: dict[str, Any]) -> dict[str, Any]:
    """props with every peer_masters entry a mapping: diffs compare the short and the full
    form (all that states held before the short one) by what they mean."""
    peers = props.get(PEER_KEY)
    if not isinstance(peers, list):
        return props
    return {**props, PEER_KEY: [peer_mapping(e) for e in peers]}


TIMEOUT_KEYS = ("connect_timeout", "install_timeout", "sign_timeout", "run_timeout", "service_timeout", "api_timeout")
# What a change of each input means (diff):
# Inputs whose change needs no remote work at all (only the recorded value changes).
LOCAL_ONLY_KEYS = (
    *TIMEOUT_KEYS,
    "keep_agent_on_delete",
    "adopt",
    "batch_provisioned",
    *DATABASE_KEYS,
    PEER_KEY,
)
REPLACE_KEYS = (
    "certname", "host", "dns_alt_names", "primary_host", "primary_certname", "pe_version", "node_group",
    "availability_group",  # a certificate extension: a new certificate, so a new master
)  # fmt: skip


def replaces_master(key: str, old: Any, new: Any) -> bool:
    """Whether this input's change replaces the master. A pe_version change within its line
    (2019.8.5 -> 2019.8.12: a patch upgrade, done by PE's own procedure) is not a new
    generation: the master is updated (re-verified) in place, never re-provisioned."""
    if key == "pe_version" and old is not None and new is not None:
        return pe_line(old) != pe_line(new)
    return key in REPLACE_KEYS


UPDATE_KEYS = (
    "ssh_port",
    "ssh_user",
    "ssh_private_key",
    "ssh_host_key",
    "ssh_known_hosts",
    "primary_ssh_port",
    "primary_ssh_user",
    "primary_ssh_private_key",
    "primary_ssh_host_key",
    "primary_ssh_known_hosts",
    "environmentpath",
    "classifier_url",
    "rbac_token",
    "classifier_client_cert",
    "classifier_client_key",
    "puppetdb_url",
    *LOCAL_ONLY_KEYS,
)
DEFAULTS: dict[str, Any] = {
    "ssh_port": 22,
    "ssh_user": "root",
    "ssh_host_key": "",
    "ssh_known_hosts": "",
    "primary_ssh_port": 22,
    "primary_ssh_user": "root",
    "primary_ssh_host_key": "",
    "primary_ssh_known_hosts": "",
    "database_host": "",
    "database_ssh_port": 22,
    "database_ssh_user": "root",
    "database_ssh_private_key": "",
    "database_ssh_host_key": "",
    "database_ssh_known_hosts": "",
    "dns_alt_names": [],
    "environmentpath": "",
    "rbac_token": "",
    "classifier_client_cert": "",
    "classifier_client_key": "",
    "puppetdb_url": "",
    "node_group": "",
    "availability_group": "",
    "connect_timeout": 30,
    "install_timeout": 900,
    "sign_timeout": 300,
    "run_timeout": 1800,
    "service_timeout": 600,
    "api_timeout": 30,
    "keep_agent_on_delete": False,
    "adopt": False,
    "batch_provisioned": False,
    PEER_KEY: [],
}
# peadm::oid('peadm_availability_group') (functions/oid.pp): an extension in Puppet's
# registered arc that Puppet's OID registry does not name, so trusted.extensions keys it by
# the dotted OID - as peadm's PE Compiler Group A/B rules do (manifests/setup/node_manager.pp).
PEADM_AVAILABILITY_GROUP_OID = "1.3.6.1.4.1.34380.1.1.9813"
AVAILABILITY_GROUPS = ("A", "B")

REQUIRED = (
    "host",
    "ssh_private_key",
    "certname",
    "primary_host",
    "primary_ssh_private_key",
    "primary_certname",
    "pe_version",
    "classifier_url",
)


@dataclass(frozen=True)
class PeerMaster:
    """Another compile master of the deployment, reached with the shared SSH key."""

    certname: str
    target: SshTarget

    @classmethod
    def from_entry(cls, entry: str | dict[str, Any], master: dict[str, Any]) -> PeerMaster:
        """A peer entry's SSH port, user and known_hosts default to the master's own (the
        program leaves them out when equal: each of N masters lists N - 1 peers, and the
        engine (de)serializes every field of them at every preview)."""
        e = {**inputs.ssh_defaults("ssh"), **inputs.inherit_access(peer_mapping(entry), master)}
        private_key = str(master["ssh_private_key"])
        return cls(str(e["certname"]), inputs.ssh_target({**e, "ssh_private_key": private_key}, "ssh", "host"))


@dataclass(frozen=True)
class MasterConfig:
    resource_name: str
    # The three SSH targets, each read from its `<prefix>_host`/`_ssh_*` inputs in one place
    # (provider.core.inputs.ssh_target); SshTarget's repr never shows the key.
    target: SshTarget
    certname: str
    dns_alt_names: list[str]
    environmentpath: str
    primary_target: SshTarget
    primary_certname: str
    # PE-PostgreSQL's host; None before PE 2019.7 (and in older stacks' state).
    database_target: SshTarget | None
    pe_version: str
    classifier_url: str
    rbac_token: str = field(repr=False)
    classifier_client_cert: str = field(repr=False)
    classifier_client_key: str = field(repr=False)
    puppetdb_url: str
    node_group: str
    # peadm's availability group ("A"/"B"; "" without peadm): PE Compiler Group A/B match it
    # on the certificate extension peadm_availability_group (peadm::oid, [S29,S34]).
    availability_group: str
    connect_timeout: float
    install_timeout: float
    sign_timeout: float
    run_timeout: float
    service_timeout: float
    api_timeout: float  # each PE REST call (console); 5xx and timeouts are retried 3 times
    keep_agent_on_delete: bool
    adopt: bool
    batch_provisioned: bool  # CompileMasterBatch did the long work: create/update only verify
    peer_masters: tuple[PeerMaster, ...] = ()

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> MasterConfig:
        """A recorded state's config (read, update, delete), as it is: never refused."""
        return parse(props, judging=False).valid()

    @property
    def generation(self) -> Generation:
        """What this PE version does differently (paths, CLIs, endpoints): provider.pe.generation."""
        return generation_for(self.pe_version, self.node_group or None)

    @property
    def extension_requests(self) -> tuple[tuple[str, str], ...]:
        """The certificate extensions this master requests: the generation's (pp_auth_role
        from 2019.7) and peadm's availability group, as peadm's component_install plan
        requests them (plans/subplans/component_install.pp)."""
        group = ((PEADM_AVAILABILITY_GROUP_OID, self.availability_group),) if self.availability_group else ()
        return (*self.generation.extension_requests, *group)

    @property
    def availability_node_group(self) -> str:
        """peadm's child group of PE Compiler this master must land in ("" without one)."""
        return f"PE Compiler Group {self.availability_group}" if self.availability_group else ""

    @property
    def host(self) -> str:
        return self.target.host

    @property
    def primary_host(self) -> str:
        return self.primary_target.host

    @property
    def secrets(self) -> list[str]:
        keys = [target.private_key for target in (self.target, self.primary_target, self.database_target) if target]
        return [s for s in (*keys, self.rbac_token, self.classifier_client_key) if s]


def parse(props: dict[str, Any], judging: bool = True) -> inputs.Parsed[MasterConfig]:
    """PeCompileMaster's inputs in one pass: every reason they cannot work, as (input,
    reason) - what check() shows in a preview and what stops a create -, or the typed
    MasterConfig they make. A value not known until apply is judged at create."""
    r = inputs.Reader(props, DEFAULTS, judging)
    r.require(*REQUIRED)
    target = r.ssh_target("ssh", "host")
    primary_target = r.ssh_target("primary_ssh", "primary_host")
    certname = r.text("certname", validation.dns_name_error)
    primary_certname = r.text("primary_certname", validation.dns_name_error)
    if r.given("certname") and r.present["certname"] == r.present.get("primary_certname"):
        r.problem(
            "certname",
            f"{certname} is the primary's own certname: a compile master needs its own "
            "(and this provider never touches the primary's certificate)",
        )
    dns_alt_names = alt_names(r)
    environmentpath = r.text("environmentpath", validation.path_error)
    generation = pe_generation(r)
    compiler_puppetdb = generation is not None and generation.compiler_puppetdb
    if compiler_puppetdb and r.judging:  # (a recorded state's host keys are not parsed again)
        r.judge(database_problems(props))
    database_target = r.ssh_target("database_ssh", "database_host", judged=False)
    classifier_access(r, generation)
    group = r.present.get("availability_group")
    if group not in (None, "", *AVAILABILITY_GROUPS):
        r.problem("availability_group", f"availability_group must be A or B (peadm's letters), not {group!r}")
    classifier_url = r.text("classifier_url", https_error("the console, port 4433"))
    puppetdb_url = r.text("puppetdb_url", https_error("PuppetDB, port 8081"))
    if r.judging:
        r.judge(peer_problems(props.get(PEER_KEY), r.present.get("certname"), r.present))
    timeouts = {key: r.seconds(key) for key in TIMEOUT_KEYS}
    values = r.values

    def build() -> MasterConfig:
        assert target is not None and primary_target is not None  # required: judged above
        return MasterConfig(
            resource_name=str(values.get("resource_name") or certname or "pe-compile-master"),
            target=target,
            certname=certname,
            dns_alt_names=dns_alt_names,
            environmentpath=environmentpath,
            primary_target=primary_target,
            primary_certname=primary_certname,
            database_target=database_target,
            pe_version=r.text("pe_version"),
            classifier_url=classifier_url,
            rbac_token=r.text("rbac_token"),
            classifier_client_cert=r.text("classifier_client_cert"),
            classifier_client_key=r.text("classifier_client_key"),
            puppetdb_url=puppetdb_url,
            node_group=r.text("node_group"),
            availability_group=r.text("availability_group"),
            **timeouts,
            keep_agent_on_delete=r.flag("keep_agent_on_delete"),
            adopt=r.flag("adopt"),
            batch_provisioned=r.flag("batch_provisioned"),
            peer_masters=tuple(PeerMaster.from_entry(e, values) for e in values[PEER_KEY] or []),
        )

    return r.result(build)


def problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    """Every reason these inputs cannot work, as (property, reason); unknown values
    (not known until apply) are skipped here and judged again at create."""
    return parse(props).problems


def alt_names(r: inputs.Reader) -> list[str]:
    """dns_alt_names: a list of DNS names, each once (the certificate's SANs)."""
    names = r.values.get("dns_alt_names")
    names = [] if names is None else names
    if not isinstance(names, list):
        r.problem("dns_alt_names", "dns_alt_names must be a list of DNS names")
        return []
    if "dns_alt_names" in r.present:
        for name in names:
            if inputs.is_unknown(name):
                r.incomplete = True
            else:
                r.problem("dns_alt_names", validation.dns_name_error(name, "dns alt name"))
        if len(set(names)) != len(names):
            r.problem("dns_alt_names", "dns_alt_names lists a name twice")
    return [str(n) for n in names]


def pe_generation(r: inputs.Reader) -> Generation | None:
    """The generation pe_version (and node_group, PE 3.x's) names; None while unknown."""
    if "pe_version" not in r.present:
        return None
    try:
        check_pe_version(r.present["pe_version"])
        return generation_for(str(r.present["pe_version"]), r.text("node_group") or None)
    except ValueError as exc:
        r.problem("pe_version", str(exc))
        return None


def classifier_access(r: inputs.Reader, generation: Generation | None) -> None:
    """A token or an allow-listed client certificate; peadm's availability groups and RBAC
    tokens only where the generation has them."""
    if generation is not None and r.given("availability_group") and generation.classification != "trusted":
        r.problem(
            "availability_group",
            f"availability groups are peadm's (PE 2019.7+, PE Compiler Group A/B); {generation.label} "
            "has none: leave it unset",
        )
    if generation is not None and r.given("rbac_token") and not generation.tokens_supported:
        r.problem(
            "rbac_token",
            f"{generation.label} has no RBAC tokens (from PE 2015.3): use an allow-listed "
            "client certificate (classifier_client_cert / classifier_client_key)",
        )
    props = r.props
    has_token = bool(props.get("rbac_token"))
    has_cert = bool(props.get("classifier_client_cert")) and bool(props.get("classifier_client_key"))
    unknown = inputs.is_unknown(props.get("rbac_token")) or inputs.is_unknown(props.get("classifier_client_cert"))
    if not (has_token or has_cert or unknown):
        r.problem(
            "rbac_token",
            "classifier access needs rbac_token, or classifier_client_cert and "
            "classifier_client_key of a certificate in the console's rbac allowlist",
        )


def https_error(what: str) -> Callable[[Any, str], str | None]:
    def error(value: Any, key: str) -> str | None:
        return None if str(value).startswith("https://") else f"{key} must be https:// ({what})"

    return error


DATABASE_REQUIRED = (
    "database_host is required from PE 2019.7: compilers' PuppetDB authenticates to PE-PostgreSQL there "
    "(its pg_ident.conf maps each compiler's certificate; the primary in a standard installation)"
)


def database_problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    """PE 2019.7+: the database host and its SSH access (pinned key, private key)."""
    host = props.get("database_host")
    if not inputs.is_unknown(host) and not host:
        return [("database_host", DATABASE_REQUIRED)]
    out = inputs.ssh_problems(props, "database_ssh", "database_host")
    key = props.get("database_ssh_private_key")
    if not inputs.is_unknown(key) and not key:
        out.append(("database_ssh_private_key", "database_ssh_private_key is required with database_host"))
    return out


def peer_problems(peers: Any, certname: Any, master: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """peer_masters: a list of "certname host" strings or {certname, host[, ssh_port,
    ssh_user, ssh_host_key, ssh_known_hosts]} mappings, each certname once and never this
    master's own; what an entry leaves out is the master's own (port, user; without a key
    of its own, the master's ssh_known_hosts must have the peer's host)."""
    if peers is None or inputs.is_unknown(peers):
        return []
    if not isinstance(peers, list):
        return [(PEER_KEY, f"{PEER_KEY} must be a list of the deployment's other masters")]
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, peer in enumerate(peers):
        where = f"{PEER_KEY}[{i}]"
        if inputs.is_unknown(peer):
            continue
        peer = peer_mapping(peer)
        if not isinstance(peer, dict):
            out.append(
                (PEER_KEY, f'{where} must be "certname host" or a mapping with {", ".join(PEER_FIELDS)}: {peer!r}')
            )
            continue
        unknown_fields = sorted(set(peer) - set(PEER_FIELDS))
        if unknown_fields:
            out.append((PEER_KEY, f"{where} has unknown fields: {', '.join(unknown_fields)}"))
        name = peer.get("certname")
        if not inputs.is_unknown(name):
            error = validation.dns_name_error(name, f"{where}.certname") if name else f"{where}.certname is required"
            if error:
                out.append((PEER_KEY, error))
            elif name == certname:
                out.append((PEER_KEY, f"{where} is this master itself ({name})"))
            elif name in seen:
                out.append((PEER_KEY, f"{where}: {name} is listed twice"))
            seen.add(str(name))
        if not peer.get("host") and not inputs.is_unknown(peer.get("host")):
            out.append((PEER_KEY, f"{where}.host is required"))
        access = inputs.inherit_access(peer, master or {})
        out += [(PEER_KEY, f"{where}: {reason}") for reason in peer_access_problems(access)]
    return out


def peer_access_problems(access: dict[str, Any]) -> tuple[str, ...]:
    """ssh_problems of one peer's access. A deployment of N masters lists each master as a
    peer N - 1 times and checking a host key parses it: the answer is remembered per access
    (a no-change preview of 50 masters checked 2,450 peers for 50 distinct ones)."""
    items = tuple(sorted(access.items()))
    try:
        return _peer_access_problems(items)
    except TypeError:  # a value that cannot be a key (a list where a string belongs): not worth remembering
        return tuple(reason for _, reason in inputs.ssh_problems(access, "ssh", "host"))


@functools.lru_cache(maxsize=4096)
def _peer_access_problems(items: tuple[tuple[str, Any], ...]) -> tuple[str, ...]:
    return tuple(reason for _, reason in inputs.ssh_problems(dict(items), "ssh", "host"))
