"""The stack configuration schema (namespace `pe`), parsed and validated before any
resource exists, so wrong config fails at preview with the key and what it expects.

Plain values come from `pulumi config set` (objects and lists with `--path` or as YAML in
Pulumi.<stack>.yaml); secrets come from `pulumi config set --secret` or, for keys kept in
files on the machine running Pulumi (like `puppet access login`'s token file), from a
`...File` key whose content is read and treated as a secret. See README, "Configuration".
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provider.codesync.plan import METHODS, schedule_error
from provider.core import validation
from provider.pe.generation import check_pe_version, generation_for

NAMESPACE = "pe"
# Structured values (objects, lists) ...
OBJECT_KEYS = (
    "primary",
    "console",
    "puppetdb",
    "database",
    "loadBalancer",
    "fileSync",
    "dnsAltNames",
    "compileMasters",
    "timeouts",
)
# ... and strings: every plain (non-secret) key.
PLAIN_KEYS = (
    "version",
    "sshUser",
    "knownHosts",
    "knownHostsFile",
    "sshPrivateKeyFile",
    "rbacTokenFile",
    "classifierClientCert",
    "classifierClientKeyFile",
    *OBJECT_KEYS,
)
SECRET_KEYS = ("sshPrivateKey", "rbacToken", "classifierClientKey")
TIMEOUTS = ("connect", "install", "sign", "run", "service", "api", "health", "drain", "sync")


class ConfigError(ValueError):
    """Names the config key (`pe:...`) and what it should be."""

    def __init__(self, key: str, expected: str):
        super().__init__(f"{NAMESPACE}:{key}: {expected}")
        self.key = key


@dataclass(frozen=True)
class HostAccess:
    host: str
    port: int = 22
    user: str = "root"
    host_key: str = ""  # pinned "ssh-ed25519 AAAA..."; else the known_hosts text is used


@dataclass(frozen=True)
class MasterSpec:
    certname: str
    access: HostAccess
    pool_address: str
    dns_alt_names: list[str]
    weight: int
    availability_group: str = ""  # peadm's "A"/"B" (PE Compiler Group A/B); "" without peadm

    @property
    def name(self) -> str:
        """The stable resource name prefix: the certname (never an index)."""
        return self.certname


@dataclass(frozen=True)
class FileSyncSpec:
    method: str
    schedule: str
    excludes: list[str]
    code_dir: str
    primary_code_dir: str
    r10k_remote: str
    r10k_cachedir: str
    r10k_bin: str


@dataclass(frozen=True)
class DeploymentSpec:
    pe_version: str
    primary: HostAccess
    primary_certname: str
    console: HostAccess
    classifier_url: str
    puppetdb: HostAccess
    puppetdb_url: str
    # PE-PostgreSQL's host (pe:database, default pe:puppetdb's host access): from PE 2019.7
    # compilers' PuppetDB authenticates there through pg_ident.conf (generation.compiler_puppetdb).
    database: HostAccess
    # The certificate allowlists InfraRefresh checks: pe:puppetdb.allowlist and
    # pe:console.allowlist, else the PE generation's (...-whitelist up to 2019.x, ...-allowlist from 2021.1).
    puppetdb_allowlist: str
    console_allowlist: str
    lb: HostAccess
    lb_backend: str
    lb_check_ca_file: str
    file_sync: FileSyncSpec
    masters: list[MasterSpec]
    known_hosts: str = field(repr=False)
    classifier_client_cert: str = field(repr=False)
    timeouts: dict[str, float]


@dataclass(frozen=True)
class SecretFiles:
    """Secrets read from files named in the config (the program marks them secret)."""

    ssh_private_key: str | None = field(default=None, repr=False)
    rbac_token: str | None = field(default=None, repr=False)
    classifier_client_key: str | None = field(default=None, repr=False)


def _obj(raw: dict[str, Any], key: str, required: bool = True) -> dict[str, Any]:
    value = raw.get(key)
    if value is None:
        if required:
            raise ConfigError(key, "is required (an object, e.g. {host: ..., hostKey: ...})")
        return {}
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be an object, not {type(value).__name__}")
    return value


def _str(obj: dict[str, Any], key: str, path: str, default: str | None = None) -> str:
    value = obj.get(key, default)
    if value is None:
        raise ConfigError(path, "is required")
    if not isinstance(value, str):
        raise ConfigError(path, f"must be a string, not {value!r}")
    return value


def _check(path: str, error: str | None) -> None:
    if error:
        raise ConfigError(path, error)


# Each host section's own settings besides host, port, user and hostKey.
SECTION_KEYS = {
    "primary": ("certname",),
    "console": ("classifierUrl", "allowlist"),
    "puppetdb": ("url", "allowlist"),
    "loadBalancer": ("backend", "caFile"),
}


def _access(
    obj: dict[str, Any], path: str, default_user: str, known_hosts: str, host_field: str = "host"
) -> HostAccess:
    unknown = set(obj) - {"host", "port", "user", "hostKey", *SECTION_KEYS.get(path, ())}
    if unknown:
        raise ConfigError(f"{path}.{sorted(unknown)[0]}", "is not a known setting")
    host = _str(obj, "host", f"{path}.{host_field}")
    _check(f"{path}.{host_field}", validation.host_error(host, "a DNS name or IP address"))
    port = obj.get("port", 22)
    _check(f"{path}.port", validation.port_error(port, "port"))
    user = _str(obj, "user", f"{path}.user", default_user)
    _check(f"{path}.user", validation.user_error(user, "user"))
    host_key = _str(obj, "hostKey", f"{path}.hostKey", "")
    if host_key and (len(host_key.split()) < 2 or not host_key.startswith(("ssh-", "ecdsa-"))):
        raise ConfigError(f"{path}.hostKey", "must be a public key line like 'ssh-ed25519 AAAA...'")
    if not host_key and not _in_known_hosts(known_hosts, host, int(port)):
        raise ConfigError(
            f"{path}.hostKey",
            f"is required: no pe:knownHosts entry for {host} (host keys are pinned, never accepted blindly)",
        )
    return HostAccess(host, int(port), user, host_key)


def _in_known_hosts(text: str, host: str, port: int) -> bool:
    names = {host if port == 22 else f"[{host}]:{port}"}
    return any(
        line.split() and names & set(line.split()[0].split(","))
        for line in text.splitlines()
        if not line.startswith("#")
    )


def _names(value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(path, "must be a list of DNS names")
    for i, name in enumerate(value):
        _check(f"{path}[{i}]", validation.dns_name_error(name, "alt name"))
    return [str(n) for n in value]


def read_file(raw: dict[str, Any], key: str) -> str | None:
    path = raw.get(key)
    if path is None:
        return None
    if not isinstance(path, str) or not path:
        raise ConfigError(key, "must be a file path")
    try:
        return Path(path).expanduser().read_text()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None


def parse(raw: dict[str, Any], secrets_present: set[str]) -> tuple[DeploymentSpec, SecretFiles]:
    """raw: the plain `pe:` keys; secrets_present: which SECRET_KEYS are set (values stay secret)."""
    unknown = set(raw) - set(PLAIN_KEYS) - set(SECRET_KEYS)
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"is not a known setting (known: {', '.join(PLAIN_KEYS + SECRET_KEYS)})")
    version = raw.get("version")
    if not isinstance(version, str):
        raise ConfigError("version", 'is required: the PE version the primary runs, e.g. "2019.8.12" (as a string)')
    try:
        check_pe_version(version)
    except ValueError as exc:
        raise ConfigError("version", str(exc)) from None
    generation = generation_for(version)
    known_hosts = raw.get("knownHosts") or read_file(raw, "knownHostsFile") or ""
    if not isinstance(known_hosts, str):
        raise ConfigError("knownHosts", "must be known_hosts text")
    user = raw.get("sshUser", "root")
    _check("sshUser", validation.user_error(user, "user"))

    files = SecretFiles(
        ssh_private_key=read_file(raw, "sshPrivateKeyFile"),
        rbac_token=(read_file(raw, "rbacTokenFile") or "").strip() or None,
        classifier_client_key=read_file(raw, "classifierClientKeyFile"),
    )
    if "sshPrivateKey" not in secrets_present and files.ssh_private_key is None:
        raise ConfigError(
            "sshPrivateKey",
            "is required: `pulumi config set --secret pe:sshPrivateKey < key` (or pe:sshPrivateKeyFile)",
        )
    has_token = "rbacToken" in secrets_present or files.rbac_token
    has_cert = raw.get("classifierClientCert") and (
        "classifierClientKey" in secrets_present or files.classifier_client_key
    )
    if not has_token and not has_cert:
        raise ConfigError(
            "rbacToken",
            "is required: an RBAC token (`pulumi config set --secret pe:rbacToken ...` or pe:rbacTokenFile), "
            "or pe:classifierClientCert with pe:classifierClientKey of a certificate in the console's rbac allowlist",
        )

    primary_obj = _obj(raw, "primary")
    primary = _access(primary_obj, "primary", user, known_hosts)
    primary_certname = _str(primary_obj, "certname", "primary.certname", primary.host)
    _check("primary.certname", validation.dns_name_error(primary_certname, "certname"))
    console_obj = _obj(raw, "console")
    console = _access(console_obj, "console", user, known_hosts)
    classifier_url = _str(console_obj, "classifierUrl", "console.classifierUrl", f"https://{console.host}:4433")
    if not classifier_url.startswith("https://"):
        raise ConfigError("console.classifierUrl", "must be an https:// URL (the console's port 4433)")
    puppetdb_obj = _obj(raw, "puppetdb")
    puppetdb = _access(puppetdb_obj, "puppetdb", user, known_hosts)
    puppetdb_url = _str(puppetdb_obj, "url", "puppetdb.url", f"https://{puppetdb.host}:8081")
    if not puppetdb_url.startswith("https://"):
        raise ConfigError("puppetdb.url", "must be an https:// URL (PuppetDB's port 8081)")
    # Only host access: PE-PostgreSQL's host is reached over SSH to edit pg_ident.conf and run Puppet.
    database = puppetdb
    if raw.get("database") is not None:
        database = _access(_obj(raw, "database"), "database", user, known_hosts)
    puppetdb_allowlist = _str(puppetdb_obj, "allowlist", "puppetdb.allowlist", generation.puppetdb_allowlist)
    _check("puppetdb.allowlist", validation.path_error(puppetdb_allowlist, "allowlist"))
    console_allowlist = _str(console_obj, "allowlist", "console.allowlist", generation.console_allowlist)
    _check("console.allowlist", validation.path_error(console_allowlist, "allowlist"))
    lb_obj = _obj(raw, "loadBalancer")
    lb = _access(lb_obj, "loadBalancer", user, known_hosts)
    backend = _str(lb_obj, "backend", "loadBalancer.backend", "puppet_compilers")
    _check("loadBalancer.backend", validation.server_name_error(backend, "backend"))
    ca_file = _str(lb_obj, "caFile", "loadBalancer.caFile", "/etc/haproxy/pe-ca.pem")
    _check("loadBalancer.caFile", validation.path_error(ca_file, "caFile"))

    sync = _file_sync(_obj(raw, "fileSync"))
    shared_alt_names = _names(raw.get("dnsAltNames"), "dnsAltNames")
    masters = _masters(raw.get("compileMasters"), user, known_hosts, shared_alt_names, primary_certname)
    timeouts = _timeouts(raw.get("timeouts"))
    spec = DeploymentSpec(
        pe_version=version,
        primary=primary,
        primary_certname=primary_certname,
        console=console,
        classifier_url=classifier_url,
        puppetdb=puppetdb,
        puppetdb_url=puppetdb_url,
        database=database,
        puppetdb_allowlist=puppetdb_allowlist,
        console_allowlist=console_allowlist,
        lb=lb,
        lb_backend=backend,
        lb_check_ca_file=ca_file,
        file_sync=sync,
        masters=masters,
        known_hosts=known_hosts,
        classifier_client_cert=str(raw.get("classifierClientCert") or ""),
        timeouts=timeouts,
    )
    return spec, files


def _file_sync(obj: dict[str, Any]) -> FileSyncSpec:
    method = _str(obj, "method", "fileSync.method")
    if method not in METHODS:
        raise ConfigError("fileSync.method", f"must be one of {', '.join(METHODS)}, not {method!r}")
    schedule = _str(obj, "schedule", "fileSync.schedule", "*/5 * * * *")
    _check("fileSync.schedule", schedule_error(schedule))
    excludes = obj.get("excludes", [])
    if not isinstance(excludes, list) or not all(isinstance(p, str) for p in excludes):
        raise ConfigError("fileSync.excludes", "must be a list of patterns")
    code_dir = _str(obj, "codeDir", "fileSync.codeDir", "/etc/puppetlabs/code")
    _check("fileSync.codeDir", validation.path_error(code_dir, "codeDir"))
    primary_code_dir = _str(obj, "primaryCodeDir", "fileSync.primaryCodeDir", code_dir)
    _check("fileSync.primaryCodeDir", validation.path_error(primary_code_dir, "primaryCodeDir"))
    remote = _str(obj, "r10kRemote", "fileSync.r10kRemote", "")
    if method == "r10k" and not remote:
        raise ConfigError("fileSync.r10kRemote", "is required with method r10k (the control repository's git URL)")
    return FileSyncSpec(
        method=method,
        schedule=schedule,
        excludes=[str(p) for p in excludes],
        code_dir=code_dir,
        primary_code_dir=primary_code_dir,
        r10k_remote=remote,
        r10k_cachedir=_str(obj, "r10kCachedir", "fileSync.r10kCachedir", "/var/cache/r10k"),
        r10k_bin=_str(obj, "r10kBin", "fileSync.r10kBin", "r10k"),
    )


def _masters(
    value: Any, user: str, known_hosts: str, shared_alt_names: list[str], primary_certname: str
) -> list[MasterSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError("compileMasters", "must be a list of {certname, address, dnsAltNames, weight}")
    masters: list[MasterSpec] = []
    for i, item in enumerate(value):
        path = f"compileMasters[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(path, "must be an object {certname, address, ...}")
        known = {"certname", "address", "port", "user", "hostKey", "poolAddress", "dnsAltNames", "weight"}
        unknown = set(item) - known - {"availabilityGroup"}
        if unknown:
            raise ConfigError(f"{path}.{sorted(unknown)[0]}", "is not a known setting")
        certname = _str(item, "certname", f"{path}.certname")
        _check(f"{path}.certname", validation.dns_name_error(certname, "certname"))
        if certname == primary_certname:
            raise ConfigError(f"{path}.certname", f"{certname} is the primary's own certname")
        access = _access(
            {"host": item.get("address"), **{k: item[k] for k in ("port", "user", "hostKey") if k in item}},
            path,
            user,
            known_hosts,
            host_field="address",
        )
        pool_address = _str(item, "poolAddress", f"{path}.poolAddress", access.host)
        try:
            ipaddress.ip_address(pool_address)
        except ValueError:
            raise ConfigError(
                f"{path}.poolAddress", f"must be an IP address for the load balancer (got {pool_address!r})"
            ) from None
        own = _names(item.get("dnsAltNames"), f"{path}.dnsAltNames")
        alt_names = list(dict.fromkeys([*own, *shared_alt_names]))
        weight = item.get("weight", 100)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 256:
            raise ConfigError(f"{path}.weight", f"must be an integer 0-256, not {weight!r}")
        group = item.get("availabilityGroup", "")
        if group not in ("", "A", "B"):
            raise ConfigError(
                f"{path}.availabilityGroup", f"must be A or B (peadm's availability groups), not {group!r}"
            )
        masters.append(MasterSpec(certname, access, pool_address, alt_names, weight, group))
    for attr, what in (("certname", "certname"), ("pool_address", "address")):
        seen: dict[str, int] = {}
        for i, master in enumerate(masters):
            key = getattr(master, attr)
            if key in seen:
                raise ConfigError(
                    f"compileMasters[{i}].{'certname' if attr == 'certname' else 'address'}",
                    f"{what} {key} is already used by compileMasters[{seen[key]}]",
                )
            seen[key] = i
    return masters


def _timeouts(value: Any) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError("timeouts", f"must be an object with some of {', '.join(TIMEOUTS)} (seconds)")
    out = {}
    for key, seconds in value.items():
        if key not in TIMEOUTS:
            raise ConfigError(f"timeouts.{key}", f"is not a known timeout ({', '.join(TIMEOUTS)})")
        _check(f"timeouts.{key}", validation.positive_seconds_error(seconds, key))
        out[key] = float(seconds)
    return out
