"""PeCompileMaster's inputs: one typed, validated view of the property dict.

check() reports `MasterConfig.problems(...)`; diff() compares the keys listed here;
create/update/read/delete work from `MasterConfig.from_props(...)`. Secrets live in
their own top-level keys so the engine keeps them secret in outputs (same key).
"""

from __future__ import annotations

import functools
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


# What a change of each input means (diff):
# Inputs whose change needs no remote work at all (only the recorded value changes).
LOCAL_ONLY_KEYS = (
    "connect_timeout",
    "install_timeout",
    "sign_timeout",
    "run_timeout",
    "service_timeout",
    "api_timeout",
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
        merged = {**DEFAULTS, **{k: v for k, v in props.items() if v is not None}}
        return cls(
            resource_name=str(merged.get("resource_name") or merged.get("certname") or "pe-compile-master"),
            target=inputs.ssh_target(merged, "ssh", "host"),
            certname=str(merged["certname"]),
            dns_alt_names=[str(n) for n in merged["dns_alt_names"]],
            environmentpath=str(merged["environmentpath"]),
            primary_target=inputs.ssh_target(merged, "primary_ssh", "primary_host"),
            primary_certname=str(merged["primary_certname"]),
            database_target=inputs.ssh_target(merged, "database_ssh", "database_host")
            if merged["database_host"]
            else None,
            pe_version=str(merged["pe_version"]),
            classifier_url=str(merged["classifier_url"]),
            rbac_token=str(merged["rbac_token"]),
            classifier_client_cert=str(merged["classifier_client_cert"]),
            classifier_client_key=str(merged["classifier_client_key"]),
            puppetdb_url=str(merged["puppetdb_url"]),
            node_group=str(merged["node_group"]),
            availability_group=str(merged["availability_group"]),
            connect_timeout=float(merged["connect_timeout"]),
            install_timeout=float(merged["install_timeout"]),
            sign_timeout=float(merged["sign_timeout"]),
            run_timeout=float(merged["run_timeout"]),
            service_timeout=float(merged["service_timeout"]),
            api_timeout=float(merged["api_timeout"]),
            keep_agent_on_delete=bool(merged["keep_agent_on_delete"]),
            adopt=bool(merged["adopt"]),
            batch_provisioned=bool(merged["batch_provisioned"]),
            peer_masters=tuple(PeerMaster.from_entry(e, merged) for e in merged[PEER_KEY] or []),
        )

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


def problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    """Every reason these inputs cannot work, as (property, reason); unknown values
    (not known until apply) are skipped here and validated again at create."""
    out: list[tuple[str, str]] = []
    known = {k: v for k, v in props.items() if not inputs.is_unknown(v)}

    def add(key: str, error: str | None) -> None:
        if error:
            out.append((key, error))

    for key in REQUIRED:
        if key in props and inputs.is_unknown(props[key]):
            continue
        if not props.get(key):
            out.append((key, f"{key} is required"))
    merged = {**DEFAULTS, **{k: v for k, v in known.items() if v is not None}}
    out += inputs.ssh_problems(props, "ssh", "host")
    out += inputs.ssh_problems(props, "primary_ssh", "primary_host")
    for key in ("certname", "primary_certname"):
        if known.get(key):
            add(key, validation.dns_name_error(known[key], key))
    names = merged.get("dns_alt_names")
    if "dns_alt_names" in known:
        if not isinstance(names, list):
            out.append(("dns_alt_names", "dns_alt_names must be a list of DNS names"))
        else:
            for name in names:
                if not inputs.is_unknown(name):
                    add("dns_alt_names", validation.dns_name_error(name, "dns alt name"))
            if len(set(names)) != len(names):
                out.append(("dns_alt_names", "dns_alt_names lists a name twice"))
    if known.get("environmentpath"):
        add("environmentpath", validation.path_error(known["environmentpath"], "environmentpath"))
    if known.get("certname") and known.get("certname") == known.get("primary_certname"):
        out.append(
            (
                "certname",
                f"{known['certname']} is the primary's own certname: a compile master needs its own "
                "(and this provider never touches the primary's certificate)",
            )
        )
    if "pe_version" in known:
        try:
            check_pe_version(known["pe_version"])
            generation = generation_for(str(known["pe_version"]), str(merged.get("node_group") or "") or None)
        except ValueError as exc:
            out.append(("pe_version", str(exc)))
            generation = None
        if generation is not None and generation.compiler_puppetdb:
            out += database_problems(props)
        group = known.get("availability_group")
        if group and generation is not None and generation.classification != "trusted":
            out.append(
                (
                    "availability_group",
                    f"availability groups are peadm's (PE 2019.7+, PE Compiler Group A/B); {generation.label} "
                    "has none: leave it unset",
                )
            )
        if (
            generation is not None
            and "rbac_token" in known
            and known.get("rbac_token")
            and not generation.tokens_supported
        ):
            out.append(
                (
                    "rbac_token",
                    f"{generation.label} has no RBAC tokens (from PE 2015.3): use an allow-listed "
                    "client certificate (classifier_client_cert / classifier_client_key)",
                )
            )
    has_token = bool(props.get("rbac_token"))
    has_cert = bool(props.get("classifier_client_cert")) and bool(props.get("classifier_client_key"))
    if (
        not has_token
        and not has_cert
        and not (inputs.is_unknown(props.get("rbac_token")) or inputs.is_unknown(props.get("classifier_client_cert")))
    ):
        out.append(
            (
                "rbac_token",
                "classifier access needs rbac_token, or classifier_client_cert and "
                "classifier_client_key of a certificate in the console's rbac allowlist",
            )
        )
    group = known.get("availability_group")
    if group not in (None, "", *AVAILABILITY_GROUPS):
        out.append(("availability_group", f"availability_group must be A or B (peadm's letters), not {group!r}"))
    url = known.get("classifier_url")
    if url and not str(url).startswith("https://"):
        out.append(("classifier_url", "classifier_url must be https:// (the console, port 4433)"))
    pdb = known.get("puppetdb_url")
    if pdb and not str(pdb).startswith("https://"):
        out.append(("puppetdb_url", "puppetdb_url must be https:// (PuppetDB, port 8081)"))
    out += peer_problems(props.get(PEER_KEY), known.get("certname"), known)
    out += inputs.timeout_problems(
        props, ("connect_timeout", "install_timeout", "sign_timeout", "run_timeout", "service_timeout", "api_timeout")
    )
    return out


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
