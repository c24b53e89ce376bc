"""PeCompileMaster's steps: each checks the current state, acts only if needed, verifies.

A step is a function `(ctx) -> None` run in order by `converge()` (create and update) or
`remove()` (delete). Every remote wait has a deadline from the inputs; every step is
safe to repeat, so re-running after a failure - or after the process was killed - resumes
instead of duplicating. Progress lines are `[<resource>] <step>: <what happened>`.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from provider.core.errors import (
    AGAIN,
    AvailabilityGroupError,
    CaRefusedError,
    ClassifierError,
    DeadlineError,
    ForeignAgentError,
    ProviderError,
    SanMismatchError,
    SshUnreachableError,
    StepFailedError,
)
from provider.master.config import DATABASE_REQUIRED, PEADM_AVAILABILITY_GROUP_OID, MasterConfig
from provider.pe import agent_runs as runs
from provider.pe import ca, curl, services
from provider.pe import crl_refresh as crl
from provider.pe import database_access as pgident
from provider.pe.agent_runs import RUN_LOCK_SETTING, file_exists
from provider.pe.classifier import Classifier, ClassifierAuth, is_pinned
from provider.pe.generation import PUPPET_BINARIES, Generation
from provider.pe.primary import Primary, parse_config_print
from provider.ssh.session import CommandResult, SshSession

AGENT_SETTINGS = (
    "server",
    "certname",
    "hostcert",
    "hostprivkey",
    "hostcsr",
    "localcacert",
    RUN_LOCK_SETTING,
    "csr_attributes",
    "ssldir",
    "config",  # puppet.conf: delete strips what install.bash wrote there
    "classfile",  # the classes of the catalog the last run applied (master_run checks it)
)
IDENTITY_FILES = ("hostcert", "hostprivkey", "hostcsr")  # each `<dir>/<certname>.pem` by default
# What install.bash writes into puppet.conf for a master, removed again on delete.
AGENT_CONFIG_KEYS = ("server", "certname", "dns_alt_names", "environmentpath")
AGENT_CONFIG_SECTIONS = ("main", "agent")


def fingerprint_of_pem(pem: bytes) -> str:
    from cryptography import x509  # here, not at the top: a preview (check, diff) parses no certificate
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(pem)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# Puppet's authorization extensions (ppAuthCertExt, 1.3.6.1.4.1.34380.1.3): what the CA
# copies from csr_attributes.yaml's extension_requests into the certificate, and what the
# classifier's `trusted.extensions` rules match (PE Compiler: pp_auth_role, [S45]).
AUTH_EXTENSION_ARC = "1.3.6.1.4.1.34380.1.3."
AUTH_EXTENSION_NAMES = {"1.3.6.1.4.1.34380.1.3.1": "pp_authorization", "1.3.6.1.4.1.34380.1.3.13": "pp_auth_role"}


def der_string(value: bytes) -> str:
    """The text of a DER string (UTF8String, PrintableString, IA5String: what Puppet writes
    for an extension request); the raw bytes decoded when it is not one."""
    if len(value) >= 2 and value[0] in (0x0C, 0x13, 0x16) and value[1] < 0x80 and len(value) == value[1] + 2:
        return value[2:].decode(errors="replace")
    return value.decode(errors="replace")


@dataclass(frozen=True)
class IssuedCert:
    fingerprint: str
    serial: int
    sans: frozenset[str]
    extensions: tuple[tuple[str, str], ...] = ()  # Puppet's authorization extensions, by name

    @classmethod
    def from_pem(cls, pem: bytes) -> IssuedCert:
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(pem)
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = frozenset(str(n) for n in names.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            sans = frozenset()
        extensions = []
        for ext in cert.extensions:
            oid = ext.oid.dotted_string
            ours = oid.startswith(AUTH_EXTENSION_ARC) or oid == PEADM_AVAILABILITY_GROUP_OID
            if ours and isinstance(ext.value, x509.UnrecognizedExtension):
                extensions.append((AUTH_EXTENSION_NAMES.get(oid, oid), der_string(ext.value.value)))
        return cls(fingerprint_of_pem(pem), cert.serial_number, sans, tuple(sorted(extensions)))


def missing_extensions(have: tuple[tuple[str, str], ...], wanted: tuple[tuple[str, str], ...]) -> list[str]:
    """The requested extensions (`name=value`) a CSR or certificate does not carry."""
    present = set(have)
    return [f"{k}={v}" for k, v in wanted if (k, v) not in present]


def trusted_facts(cfg: MasterConfig, issued: IssuedCert | None) -> dict[str, Any]:
    """What the classifier matches for this node: its certname and the extensions its
    certificate really carries (never the ones we merely asked for)."""
    return {"certname": cfg.certname, "extensions": dict(issued.extensions) if issued else {}}


def install_arguments(cfg: MasterConfig) -> list[str]:
    """PE's install.bash arguments for this master: `section:key=value` (every generation),
    then the service flags where install.bash has them (2016.4+, pe-generations.md §5).
    certname goes in [main], as PE's docs and peadm write it."""
    generation = cfg.generation
    args = [f"main:certname={cfg.certname}"]
    if cfg.dns_alt_names:
        args.append(f"main:dns_alt_names={','.join(cfg.dns_alt_names)}")
    if cfg.environmentpath:
        args.append(f"main:environmentpath={cfg.environmentpath}")
    # The generation's (pp_auth_role): peadm's availability group is merged into
    # csr_attributes.yaml after the install (merge_csr_extension_requests), as peadm does.
    args += [f"extension_requests:{k}={v}" for k, v in generation.extension_requests]
    if generation.install_service_flags:
        args += ["--puppet-service-ensure", "stopped", "--puppet-service-enable", "false"]
    return args


def agent_probe_paths(generation: Generation) -> tuple[str, ...]:
    """Where to look for `puppet` on a master: this generation's path first, then the
    others', so an agent of another PE generation is seen rather than installed over."""
    return (generation.puppet_bin, *(p for p in PUPPET_BINARIES if p != generation.puppet_bin))


def agent_settings(
    found: list[str], generation: Generation, printed: CommandResult | None, host: str
) -> dict[str, str]:
    """What the host's agent is, from the probe (`found`: the probed paths that exist) and
    `puppet config print` (None when not run). No `puppet` at the generation's path and
    none elsewhere: no agent ({}), install.bash brings one. Any failure to print the
    settings means we cannot tell - never "no agent", or we would install over one."""
    if generation.puppet_bin not in found:
        if found:
            raise ForeignAgentError(
                f"[{host}] step 'preflight': this host has a Puppet agent at {found[0]}, not at "
                f"{generation.puppet_bin} where {generation.label} keeps it; check pe_version, or decommission "
                "that agent first (PE requires a host without an agent)"
            )
        return {}
    if printed is None or printed.exit_status != 0:
        status = "not run" if printed is None else f"exit {printed.exit_status}"
        tail = f":\n{printed.tail(5)}" if printed is not None else ""
        raise ProviderError(
            f"[{host}] cannot tell whether/which Puppet agent is configured: `{generation.puppet_bin} config print` "
            f"failed ({status}); fix the agent on the host (or remove it) and run `pulumi up` again{tail}"
        )
    settings = parse_config_print(printed.stdout)
    missing = [k for k in AGENT_SETTINGS if k not in settings]
    if missing:
        raise ProviderError(
            f"[{host}] cannot tell which Puppet agent is configured: `{generation.puppet_bin} config print` "
            f"did not show {', '.join(missing)}"
        )
    return settings


def remove_stale_script(paths: dict[str, str]) -> str:
    """Remove each existing file of {label: path}, printing the labels of those removed."""
    q = shlex.quote
    parts = [f"if test -e {q(path)}; then rm -f {q(path)}; echo {q(label)}; fi" for label, path in paths.items()]
    return "set -e; " + "; ".join(parts) if parts else "true"


# Lines before the first [section] are [main]'s; a key line is `name = value`.
_STRIP_AWK = (
    r'BEGIN { n = split(keys, k, " "); for (i = 1; i <= n; i++) drop[k[i]] = 1; '
    r'n = split(sections, s, " "); for (i = 1; i <= n; i++) wanted[s[i]] = 1; section = "main" } '
    r'/^[ \t]*\[[^]]*\][ \t]*$/ { section = $0; gsub(/^[ \t]*\[|\][ \t]*$/, "", section); print; next } '
    r'{ name = $0; sub(/^[ \t]*/, "", name); sub(/[ \t]*=.*$/, "", name) } '
    r"(section in wanted) && (name in drop) && /=/ { next } "
    r"{ print }"
)


def puppet_conf_strip_script(conf: str, keys: tuple[str, ...], sections: tuple[str, ...]) -> str:
    """Remove these keys from these sections of puppet.conf in place (owner and mode kept):
    what `puppet config delete` does (Puppet 5.4+ only), in one awk on every generation,
    not a Ruby start-up per key and section. A missing file has nothing to remove."""
    q = shlex.quote
    awk = shlex.join(["awk", "-v", f"keys={' '.join(keys)}", "-v", f"sections={' '.join(sections)}", _STRIP_AWK])
    return (
        f'f={q(conf)}; test -f "$f" || exit 0; tmp=$(mktemp "$f.XXXXXX"); '
        f'if {awk} "$f" > "$tmp" && cat "$tmp" > "$f"; then rm -f "$tmp"; else rm -f "$tmp"; exit 1; fi'
    )


def classifier_refusal_hint(generation: Generation) -> str:
    """What to check when the classifier answers 401, in this generation's terms (§7)."""
    cert = f"that the client certificate is listed in {generation.console_allowlist}"
    if not generation.tokens_supported:
        return f"check {cert} ({generation.label} has no RBAC tokens)"
    return (
        f"check the RBAC token (`puppet-access login` tokens expire after {generation.token_lifetime_default} by "
        f"default on {generation.label}: use --lifetime), or {cert}"
    )


@dataclass
class Context:
    cfg: MasterConfig
    host: SshSession
    primary: SshSession
    log: Callable[[str, str], None]
    # The CA's side of the steps; a CompileMasterBatch passes one that all its threads share.
    ca: Primary | None = None
    # PE-PostgreSQL's host (PE 2019.7+; the primary's session when it is the same host):
    # opened by the caller like the primary's, shared by a CompileMasterBatch's threads.
    database: SshSession | None = None
    # discovered along the way
    agent: dict[str, str] = field(default_factory=dict)
    ca_pem: str = ""
    agent_service_was: str = ""
    agent_configured: bool = False  # preflight found an agent configured (ours: resuming)
    issued: IssuedCert | None = None
    group_id: str = ""
    installed: dict[str, Any] = field(default_factory=dict)
    first_run_classes: frozenset[str] = frozenset()  # what the first agent run's catalog applied
    reclassified: bool = False  # classify pinned the master or set class parameters after that run

    def __post_init__(self) -> None:
        if self.ca is None:
            self.ca = Primary(self.primary, self.cfg.generation, self.cfg.primary_certname)

    @property
    def primary_ca(self) -> Primary:
        assert self.ca is not None  # set in __post_init__
        return self.ca

    def classifier(self) -> Classifier:
        auth = ClassifierAuth(self.cfg.rbac_token, self.cfg.classifier_client_cert, self.cfg.classifier_client_key)
        return Classifier(
            self.cfg.classifier_url,
            self.ca_pem,
            auth,
            timeout=self.cfg.api_timeout,
            refused_hint=classifier_refusal_hint(self.cfg.generation),
        )


# --- shared helpers ----------------------------------------------------------------------


def read_agent(ctx: Context) -> dict[str, str]:
    """The host's agent settings, {} when there is no agent (see agent_settings)."""
    generation = ctx.cfg.generation
    paths = agent_probe_paths(generation)
    probe = ctx.host.run(runs.probe_script(paths), timeout=60)
    probe.check("look for the Puppet agent")
    found = runs.parse_probe(probe.stdout, paths)
    printed = None
    if generation.puppet_bin in found:
        printed = ctx.host.run(
            [generation.puppet_bin, "config", "print", *AGENT_SETTINGS, "--section", "agent"], timeout=120
        )
    ctx.agent = agent_settings(found, generation, printed, ctx.cfg.host)
    return ctx.agent


def ca_entry(ctx: Context, certname: str = "") -> ca.CaEntry | None:
    """`certname`'s (default: this master's) entry on the CA, read by name (retried: see
    provider.pe.primary)."""
    return ctx.primary_ca.entry(certname or ctx.cfg.certname, ctx.cfg.sign_timeout, ctx.log)


def fetch_ca_pem(ctx: Context) -> str:
    """The PE CA certificate, read over the pinned SSH channel to the primary."""
    if not ctx.ca_pem:
        ctx.ca_pem = ctx.primary_ca.ca_pem()
    return ctx.ca_pem


def agent_run(ctx: Context, session: SshSession, step: str, timeout: float) -> CommandResult:
    lock = ctx.agent.get(RUN_LOCK_SETTING, "")
    if not lock:  # never guess: the lock's path differs between generations (§4)
        raise ProviderError(f"[{ctx.cfg.host}] step '{step}': the agent's settings name no {RUN_LOCK_SETTING}")
    return runs.agent_run(session, step, timeout, ctx.log, lock, ctx.cfg.generation.puppet_bin)


def database_session(cfg: MasterConfig, stack: ExitStack, primary: SshSession) -> SshSession | None:
    """PE-PostgreSQL's host for the database steps (PE 2019.7+), opened up front so an
    unreachable one fails before anything changes; the primary's session when it is the
    same host (a standard installation). None when there is no database host."""
    target = cfg.database_target
    if not cfg.generation.compiler_puppetdb or target is None:
        return None
    if target == primary.target:
        return primary
    return stack.enter_context(SshSession(target, cfg.connect_timeout, cfg.secrets))


def host_serial(ctx: Context, fingerprint: str) -> str | None:
    """The serial of the host's own certificate when it is the one the CA signed (a
    re-issued certificate has a new serial: delete checks that serial in the CRL)."""
    path = ctx.agent.get("hostcert", "")
    pem = ctx.host.get(path) if path else None
    if not pem:
        return None
    issued = IssuedCert.from_pem(pem)
    return str(issued.serial) if issued.fingerprint == fingerprint else None


# --- create / update steps ---------------------------------------------------------------


def preflight(ctx: Context) -> None:
    """Refuse a host whose agent belongs to someone else; resume one that is ours."""
    agent = read_agent(ctx)
    cfg = ctx.cfg
    if not agent:
        ctx.log("preflight", "no Puppet agent yet; install.bash will bring it")
        return
    has_cert = file_exists(ctx.host, agent.get("hostcert", "/nonexistent"))
    has_key = file_exists(ctx.host, agent.get("hostprivkey", "/nonexistent"))
    server = agent.get("server", "")
    server_is_ours = server in {cfg.primary_certname, cfg.primary_host}
    configured = has_cert or has_key or server not in ("", "puppet")
    ctx.agent_configured = configured
    if configured and (not server_is_ours or agent.get("certname") != cfg.certname):
        raise ForeignAgentError(
            f"[{cfg.host}] step 'preflight': this host already runs a Puppet agent that is not ours "
            f"(server={server or '?'}, certname={agent.get('certname', '?')}); PE requires a host without an agent. "
            "Decommission that agent first, or use `adopt` if it is already a healthy compile master of this primary."
        )
    ctx.log(
        "preflight",
        "agent already configured for this primary and certname: resuming"
        if configured
        else "host reachable, no agent configured",
    )


# peadm names its compiler pools "PE Compiler Group A" and "... B" (manifests/setup/node_manager.pp).
PEADM_GROUP_PREFIX = "PE Compiler Group "


def availability_preflight(ctx: Context) -> None:
    """On an install built with peadm (PE 2019.7+: the console has PE Compiler Group A/B),
    a compiler must name its availability group, as peadm's add_compilers plan requires
    (`avail_group_letter`): without the extension it joins neither child group, whose
    classes point its PuppetDB at that group's database. Refused before anything changes."""
    cfg = ctx.cfg
    if cfg.generation.classification != "trusted":
        return
    fetch_ca_pem(ctx)  # the classifier's TLS is verified against the PE CA
    with ctx.classifier().opened() as classifier:
        names = classifier.group_names()
    pools = sorted(n for n in names if n.startswith(PEADM_GROUP_PREFIX))
    if pools and not cfg.availability_group:
        raise AvailabilityGroupError(
            f"[{cfg.classifier_url}] step 'availability group': this PE was installed with peadm (the console has "
            f"{', '.join(pools)}), and {cfg.certname} names no availability group, so it would join neither: set "
            "availabilityGroup (A or B) for it in pe:compileMasters - the group whose PuppetDB database it should use"
        )
    if cfg.availability_group and cfg.availability_node_group not in names:
        raise AvailabilityGroupError(
            f"[{cfg.classifier_url}] step 'availability group': {cfg.certname} names availability group "
            f"{cfg.availability_group}, but the console has no {cfg.availability_node_group} (peadm creates it); "
            "unset availabilityGroup on an install not built with peadm"
        )
    if cfg.availability_group:
        ctx.log(
            "availability group",
            f"joins {cfg.availability_node_group} (peadm availability group {cfg.availability_group})",
        )


def check_availability_group(ctx: Context, classifier: Classifier, trusted: dict[str, Any]) -> None:
    """The master is classified in its peadm child group (PE Compiler Group A/B)."""
    cfg = ctx.cfg
    if not cfg.availability_group:
        return
    child = classifier.group_by_name(cfg.availability_node_group)
    if str(child["id"]) not in classifier.classified_groups(cfg.certname, trusted):
        raise ClassifierError(
            f"[{cfg.classifier_url}] {cfg.certname} carries peadm_availability_group={cfg.availability_group} but is "
            f"not in {cfg.availability_node_group}; check that group's rules"
        )


def stop_agent_service(ctx: Context) -> None:
    if not ctx.agent_configured:
        # No agent of ours (nor anyone's) is configured, so no service of ours to stop, and
        # install.bash runs with --puppet-service-ensure stopped. Saves a Ruby start-up.
        ctx.agent_service_was = "stopped"
        return
    service = ctx.cfg.generation.agent_service  # pe-puppet in PE 3.x, puppet after (§10)
    state = ctx.host.run(services.service_state_script(service), timeout=120)
    state.check("read the agent service's state")
    ctx.agent_service_was = "running" if state.stdout.strip() == "running" else "stopped"
    if ctx.agent_service_was == "running":
        ctx.host.run(services.service_script(service, "stopped"), timeout=120).check("stop the agent service")
        ctx.log("agent service", f"{service} stopped for the procedure")


def restore_agent_service(ctx: Context, succeeded: bool) -> None:
    want = "running" if succeeded else (ctx.agent_service_was or "stopped")
    service = ctx.cfg.generation.agent_service
    result = ctx.host.run(services.service_script(service, want, enable=want == "running"), timeout=120)
    if result.exit_status == 0:
        ctx.log("agent service", f"{service} {want}")
    elif succeeded:
        result.check("start the agent service")


def install_agent(ctx: Context) -> None:
    """PE's install.bash, fetched from the primary and verified against the PE CA."""
    cfg = ctx.cfg
    ca_pem = fetch_ca_pem(ctx)
    ctx.log("trust", f"PE CA {fingerprint_of_pem(ca_pem.encode())[:23]}... read from the primary over pinned SSH")
    agent = ctx.agent
    if (
        agent
        and agent.get("certname") == cfg.certname
        and agent.get("server") in (cfg.primary_certname, cfg.primary_host)
    ):
        for key in ("hostcert", "hostprivkey"):
            if file_exists(ctx.host, agent.get(key, "/nonexistent")):
                # Resume: the host already has our identity; signing checks what it asked for.
                ctx.log("install", f"agent already installed for {cfg.certname} ({key} present): skipped")
                merge_csr_extension_requests(ctx)
                return
    # Named per certname: hosts that share a /tmp (the lab's do) must not race each other.
    tmp_ca = f"/tmp/pe-compile-masters-{cfg.certname}-ca.pem"
    ctx.host.put(tmp_ca, ca_pem.encode())
    localcacert = agent.get("localcacert", "")
    if localcacert:  # the agent will trust this CA, never one fetched on first use
        place_ca(ctx, localcacert, ca_pem)
    url = f"https://{cfg.primary_certname}:8140/packages/current/install.bash"
    script = f"/tmp/pe-compile-masters-{cfg.certname}-install.bash"
    ctx.host.run(["curl", "-sSf", "--max-time", "120", "--cacert", tmp_ca, "-o", script, url], timeout=180).check(
        "download install.bash", f"from {url}, verified against the PE CA"
    )
    result = ctx.host.run(["bash", script, *install_arguments(cfg)], timeout=cfg.install_timeout)
    result.check("install.bash", "PE's agent installer failed")
    ctx.installed.update({"agent_config": True, "csr_attributes": bool(cfg.extension_requests)})
    derived = agent_after_install(agent, cfg.certname, cfg.primary_certname)
    if derived and file_exists(ctx.host, derived["hostprivkey"]):
        ctx.agent = derived  # verified: install.bash made the key where the derivation says
    else:
        if not read_agent(ctx):
            raise ProviderError(
                f"[{cfg.host}] step 'install': install.bash succeeded but there is no {cfg.generation.puppet_bin}"
            )
        if ctx.agent["localcacert"] and ctx.agent["localcacert"] != localcacert:
            # A bare host (PE's case): the agent's CA path is known only now. Place the CA read
            # over pinned SSH before any CSR is submitted, so the agent never fetches one on
            # first use (Puppet does when the file is missing).
            place_ca(ctx, ctx.agent["localcacert"], ca_pem)
    merge_csr_extension_requests(ctx)
    ctx.log("install", f"agent installed: certname {cfg.certname}, alt names {','.join(cfg.dns_alt_names) or '-'}")


def merge_csr_extension_requests(ctx: Context) -> None:
    """peadm's availability group into the agent's csr_attributes.yaml before its CSR, merged
    with what install.bash wrote (peadm's util::insert_csr_extension_requests, merge: true).
    PE 2019.7+ only, where install.bash runs with the service stopped: no CSR exists yet."""
    cfg = ctx.cfg
    if not cfg.availability_group:
        return
    import yaml

    path = ctx.agent.get("csr_attributes", "")
    if not path:
        raise ProviderError(f"[{cfg.host}] step 'install': the agent names no csr_attributes file")
    text = ctx.host.get(path)
    data = yaml.safe_load(text) if text else {}
    data = data if isinstance(data, dict) else {}
    wanted = dict(data.get("extension_requests") or {})
    if wanted.get(PEADM_AVAILABILITY_GROUP_OID) == cfg.availability_group:
        return
    wanted[PEADM_AVAILABILITY_GROUP_OID] = cfg.availability_group
    data["extension_requests"] = wanted
    ctx.host.put(path, yaml.safe_dump(data, default_flow_style=False).encode())
    ctx.log("install", f"csr_attributes.yaml: peadm_availability_group={cfg.availability_group} added")


def place_ca(ctx: Context, path: str, ca_pem: str) -> None:
    ctx.host.run(["mkdir", "-p", path.rsplit("/", 1)[0]], timeout=60).check("prepare ssldir")
    ctx.host.put(path, ca_pem.encode())


def agent_after_install(before: dict[str, str], certname: str, server: str) -> dict[str, str] | None:
    """The agent's settings once install.bash has set certname and server, derived from
    those read before it (the agent was already on the host: a base image, the lab's
    hosts) instead of another `puppet config print` (~1 CPU-s). Puppet's defaults name the
    identity files `<dir>/<certname>.pem`, and install.bash's arguments move no directory.
    None when `before` is empty or does not follow that layout: read them again then."""
    old = before.get("certname", "")
    if not old:
        return None
    after = {**before, "certname": certname, "server": server}
    for key in IDENTITY_FILES:
        path, suffix = before.get(key, ""), f"/{old}.pem"
        if not path.endswith(suffix):
            return None
        after[key] = f"{path[: -len(suffix)]}/{certname}.pem"
    return after


def host_csr_fingerprint(ctx: Context) -> str | None:
    csr = ctx.agent.get("hostcsr", "")
    if not csr or not file_exists(ctx.host, csr):
        return None
    # openssl dgst, not sha256sum (coreutils 6.0; RHEL 5 has 5.97): "(stdin)= <hex>" or
    # "SHA256(stdin)= <hex>" by version - the last word is the digest.
    der = ctx.host.run(f"openssl req -in {shlex.quote(csr)} -outform DER | openssl dgst -sha256", timeout=60)
    der.check("fingerprint our CSR")
    digest = der.stdout.split()[-1].upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def clean_host_identity(ctx: Context) -> None:
    """Remove the host's key/cert/CSR for our certname so a fresh CSR can be made."""
    paths = [ctx.agent.get(k, "") for k in IDENTITY_FILES]
    if ctx.agent.get("ssldir"):  # the agent's own ssldir only: its default differs per generation
        paths.append(f"{ctx.agent['ssldir']}/public_keys/{ctx.cfg.certname}.pem")
    paths = [p for p in paths if p]
    if paths:
        ctx.host.run(["rm", "-f", *paths], timeout=60).check("clean the host's certificate")


def remove_stale_request(ctx: Context) -> list[str]:
    """The CA has no request or certificate for us: a CSR or certificate on the host is
    stale (the CA forgot it). Remove those, never the key: the CSR tools reuse it."""
    paths = {k: ctx.agent.get(k, "") for k in ("hostcsr", "hostcert")}
    script = remove_stale_script({k: v for k, v in paths.items() if v})
    result = ctx.host.run(script, timeout=60).check("remove a stale CSR or certificate")
    return result.stdout.split()


def clean_on_ca_command(cfg: MasterConfig) -> list[str]:
    generation = cfg.generation
    return ca.clean_command(generation.ca_cli, generation.ca_bin, cfg.certname)


def sign_certificate(ctx: Context) -> None:
    cfg = ctx.cfg
    for _ in range(3):
        entry = ca_entry(ctx)
        host_has_key = file_exists(ctx.host, ctx.agent.get("hostprivkey", "/nonexistent"))
        wanted = cfg.generation.extension_requests
        as_requested = entry is not None and (
            ca.sans_match(entry, cfg.certname, cfg.dns_alt_names) and not missing_extensions(entry.extensions, wanted)
        )
        if entry and entry.state == "signed" and as_requested and host_has_key:
            ctx.log("sign", "already signed with the requested alt names and extensions: skipped")
            return
        if entry and (entry.state == "revoked" or (entry.state == "signed" and not (as_requested and host_has_key))):
            # As peadm does: a certificate without the SANs or extensions wanted is re-issued.
            why = (
                "revoked"
                if entry.state == "revoked"
                else (
                    "signed with other alt names or extensions" if host_has_key else "signed but the host lost its key"
                )
            )
            ctx.log("sign", f"certificate {why}: cleaning it on the CA and requesting a new one")
            ctx.primary.run(clean_on_ca_command(cfg), timeout=cfg.sign_timeout).check("clean on the CA")
            clean_host_identity(ctx)
            ctx.agent = {}
            install_agent(ctx)
            continue
        if entry is None:
            # The usual first pass: PE's install.bash with --puppet-service-ensure stopped does
            # no Puppet run, so it submitted no CSR (pe-generations.md §5). Submit it here.
            stale = remove_stale_request(ctx)
            ctx.log(
                "sign",
                "no CSR on the CA: submitting one"
                + (f" (removed the host's stale {', '.join(stale)})" if stale else "")
                + (" with the host's key" if host_has_key else ""),
            )
            ctx.host.run(cfg.generation.csr_command(cfg.certname), timeout=cfg.sign_timeout).check(
                "submit the CSR", f"the agent submits it to {cfg.primary_certname}:8140"
            )
            continue
        # A pending request: sign it only if it is ours and asks for exactly our names.
        ours = host_csr_fingerprint(ctx)
        if ours is None or ours != entry.fingerprint:
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the pending CSR for {cfg.certname} (fingerprint "
                f"{entry.fingerprint[:23]}...) is not the one on {cfg.host}; refusing to sign someone else's request. "
                f"Inspect it on the CA and clean it (`{' '.join(clean_on_ca_command(cfg))}`) if it is stale."
            )
        if not ca.sans_match(entry, cfg.certname, cfg.dns_alt_names):
            want = sorted(ca.expected_sans(cfg.certname, cfg.dns_alt_names))
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the CSR for {cfg.certname} asks for SANs {sorted(entry.sans)}, "
                f"not the requested {want}; refusing to sign. Fix dns_alt_names or the host's puppet.conf."
            )
        lacking = missing_extensions(entry.extensions, wanted)
        if lacking:
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the CSR for {cfg.certname} lacks the requested extension(s) "
                f"{', '.join(lacking)} (its extensions: {dict(entry.extensions) or 'none'}); refusing to sign a "
                f"certificate {cfg.generation.node_group} would not match. Clean it "
                f"(`{' '.join(clean_on_ca_command(cfg))}`) and re-run: the installer writes csr_attributes.yaml."
            )
        result = ctx.primary_ca.sign(cfg.certname, cfg.sign_timeout)
        if result.exit_status != 0:
            reason = ca.refusal_reason(result.stdout + result.stderr)
            if reason:
                raise CaRefusedError(f"[{cfg.primary_host}] step 'sign': {reason}\n{result.tail(5)}")
            result.check("sign", "the CA refused to sign")
        ctx.log("sign", f"signed {cfg.certname} with {len(entry.sans)} SANs ({ctx.primary_ca.sign_method})")
        return
    raise ProviderError(f"[{cfg.primary_host}] step 'sign': the certificate state did not settle after 3 attempts")


def verify_certificate(ctx: Context) -> None:
    cfg = ctx.cfg
    hostcert = ctx.agent.get("hostcert", "")
    if not file_exists(ctx.host, hostcert):
        script = ca.download_cert_script(
            f"https://{cfg.primary_certname}:8140{cfg.generation.certificate_path(cfg.certname)}",
            cfg.certname,
            ctx.agent.get("localcacert", ""),
            hostcert,
            ctx.agent.get("hostprivkey", ""),
        )
        ctx.host.run(script, timeout=cfg.sign_timeout).check("download the signed certificate")
    pem = ctx.host.get(hostcert)
    if not pem:
        raise ProviderError(f"[{cfg.host}] step 'verify certificate': no certificate at {hostcert}")
    issued = IssuedCert.from_pem(pem)
    entry = ca_entry(ctx)
    if entry is None or entry.state != "signed" or entry.fingerprint != issued.fingerprint:
        raise ProviderError(
            f"[{cfg.host}] step 'verify certificate': the host's certificate ({issued.fingerprint[:23]}"
            "...) is not the one the CA signed; clean it on both and re-run"
        )
    if issued.sans != ca.expected_sans(cfg.certname, cfg.dns_alt_names) and cfg.dns_alt_names:
        raise SanMismatchError(f"[{cfg.host}] the issued certificate carries {sorted(issued.sans)}")
    check_extensions(cfg, issued)
    ctx.issued = issued
    ctx.log("verify certificate", f"serial {issued.serial}, SANs {','.join(sorted(issued.sans)) or '-'}")


def check_extensions(cfg: MasterConfig, issued: IssuedCert) -> None:
    lacking = missing_extensions(issued.extensions, cfg.extension_requests)
    if lacking:
        group = cfg.availability_node_group or cfg.generation.node_group
        raise SanMismatchError(
            f"[{cfg.host}] the issued certificate lacks the requested extension(s) {', '.join(lacking)} "
            f"(it carries {dict(issued.extensions) or 'none'}): {group} would not match it"
        )


def require_database(ctx: Context, step: str) -> SshSession:
    """The database host's session; check() refuses a 2019.7+ master without one."""
    if ctx.database is None:
        raise ProviderError(f"[{ctx.cfg.host}] step '{step}': {DATABASE_REQUIRED}")
    return ctx.database


def database_data_dir(ctx: Context, session: SshSession, step: str) -> str:
    """The running PE-PostgreSQL cluster's data directory on the database host."""
    generation = ctx.cfg.generation
    probe = session.run(pgident.probe_script(generation.postgresql_data_glob), timeout=60)
    probe.check(step, "look for PE-PostgreSQL's data directory")
    try:
        return pgident.data_dir_from_probe(probe.stdout, session.target.label, generation.postgresql_data_glob)
    except ProviderError as exc:
        raise ProviderError(f"[{session.target.label}] step '{step}': {exc}") from None


def database_access(ctx: Context) -> None:
    """PE 2019.7+: PE-PostgreSQL maps this compiler's certificate to PuppetDB's roles in
    pg_ident.conf (and has reloaded it) before the compiler's first run starts its
    PuppetDB - peadm's plans/add_compiler.pp (pe-generations.md §6 [S29])."""
    cfg = ctx.cfg
    generation = cfg.generation
    if not generation.compiler_puppetdb:
        return
    session = require_database(ctx, "database access")
    data_dir = database_data_dir(ctx, session, "database access")
    script = pgident.ensure_script(data_dir, cfg.certname, generation.pg_ident_maps, generation.postgresql_service)
    result = session.run(script, timeout=pgident.SCRIPT_TIMEOUT)
    result.check("database access", f"map {cfg.certname} in {data_dir}/{pgident.IDENT_FILE}")
    change = pgident.parse_summary(result.stdout)
    did = f"{change.lines} lines added for {cfg.certname}" if change.lines else f"{cfg.certname} already mapped"
    reloaded = f", {generation.postgresql_service} reloaded" if change.reloaded else ""
    ctx.log("database access", f"{pgident.IDENT_FILE}: {did}{reloaded} ({session.target.label}:{data_dir})")


def remove_database_access(ctx: Context) -> None:
    """PE 2019.7+, on delete: this compiler's own pg_ident.conf lines go (no other
    certname's), and PostgreSQL reloads. Undocumented by PE (pe-generations.md §8): the
    reverse of what database_access added."""
    cfg = ctx.cfg
    generation = cfg.generation
    if not generation.compiler_puppetdb:
        return
    step = "remove database access"
    if ctx.database is None:  # state recorded before the database inputs existed
        lines = "; ".join(pgident.ident_lines(cfg.certname, generation.pg_ident_maps))
        ctx.log(
            step,
            f"no database_host in this master's state (recorded by an older version): its {pgident.IDENT_FILE} "
            f"lines stay on the PE-PostgreSQL host; remove them there and reload {generation.postgresql_service}: "
            f"{lines}",
        )
        return
    session = ctx.database
    data_dir = database_data_dir(ctx, session, step)
    script = pgident.remove_script(data_dir, cfg.certname, generation.pg_ident_maps, generation.postgresql_service)
    result = session.run(script, timeout=pgident.SCRIPT_TIMEOUT)
    result.check(step, f"remove {cfg.certname}'s lines from {data_dir}/{pgident.IDENT_FILE}")
    change = pgident.parse_summary(result.stdout)
    did = f"{change.lines} lines of {cfg.certname} removed" if change.lines else f"no line maps {cfg.certname}"
    reloaded = f", {generation.postgresql_service} reloaded" if change.reloaded else ""
    ctx.log(step, f"{pgident.IDENT_FILE}: {did}{reloaded} ({session.target.label}:{data_dir})")


MASTER_CLASS = "puppet_enterprise::profile::master"


def first_run(ctx: Context) -> None:
    agent_run(ctx, ctx.host, "first agent run", ctx.cfg.run_timeout)
    path = ctx.agent.get("classfile", "")
    ctx.first_run_classes = applied_classes((ctx.host.get(path) or b"").decode(errors="replace") if path else "")
    ctx.log("first agent run", "done" + (f" ({MASTER_CLASS} applied)" if MASTER_CLASS in ctx.first_run_classes else ""))


def applied_classes(classfile: str) -> frozenset[str]:
    """The classes in an agent's classfile (`classes.txt`: one per line, written by every run
    that applies a catalog)."""
    return frozenset(line.strip() for line in classfile.splitlines() if line.strip())


def master_run_needed(first_run_classes: frozenset[str], reclassified: bool) -> bool:
    """PE's order is run, pin, run again: the second run applies the master profile the pin
    brought. Where the first run's catalog already had it and classify changed nothing after
    (PE 2019.7+: PE Compiler classifies by the certificate's pp_auth_role, so PE's docs run
    Puppet once on a new compiler; or a resumed master already pinned), a second run would
    apply the same catalog again: ~3 CPU-s of Ruby per master for nothing."""
    return reclassified or MASTER_CLASS not in first_run_classes


def classify(ctx: Context) -> None:
    cfg = ctx.cfg
    generation = cfg.generation
    with ctx.classifier().opened() as classifier:
        group = classifier.group_by_name(generation.node_group)
        ctx.group_id = str(group["id"])
        if generation.master_class_params:  # PE 3.x: enable_ca_proxy, before the master run applies it
            params = dict(generation.master_class_params)
            if classifier.ensure_class_params(group, MASTER_CLASS, params):
                ctx.reclassified = True
                ctx.log("classify", f"{generation.node_group}: {MASTER_CLASS} {params} set")
                group = classifier.group_by_name(generation.node_group)
        trusted = trusted_facts(cfg, ctx.issued)
        if ctx.group_id in classifier.classified_groups(cfg.certname, trusted):
            check_availability_group(ctx, classifier, trusted)
            where = f" and {cfg.availability_node_group}" if cfg.availability_group else ""
            ctx.log("classify", f"already in {generation.node_group}{where}: skipped")
            return
        if generation.classification == "trusted":
            raise ClassifierError(
                f"[{cfg.classifier_url}] step 'classify': {cfg.certname} carries pp_auth_role="
                f"pe_compiler but is not in {generation.node_group}; check that group's rules"
            )
        classifier.pin(group, cfg.certname, endpoint=generation.classification == "pin")
        ctx.reclassified = True
        if ctx.group_id not in classifier.classified_groups(cfg.certname, trusted):
            raise ClassifierError(
                f"step 'classify': pinned {cfg.certname} to {generation.node_group} but the classifier "
                "does not classify it there"
            )
        ctx.log(
            "classify",
            f"pinned to {generation.node_group} "
            f"({'pin endpoint' if generation.classification == 'pin' else 'rule rewrite'}), verified",
        )


def master_run(ctx: Context) -> None:
    if not master_run_needed(ctx.first_run_classes, ctx.reclassified):
        ctx.log(
            "master run",
            f"skipped: the first run already applied {MASTER_CLASS} and nothing was reclassified since "
            "(the compile service is verified next)",
        )
        return
    agent_run(ctx, ctx.host, "master run", ctx.cfg.run_timeout)
    ctx.log("master run", "catalog with the master profile applied")


def compile_service_probe(ctx: Context, cafile: str) -> tuple[bool, str, str]:
    """(up, what was asked, last answer) for the master's own Puppet Server (server_probe)."""
    return server_probe(ctx.host, ctx.cfg.certname, ctx.cfg.generation, cafile)


def server_probe(session: SshSession, certname: str, generation: Generation, cafile: str) -> tuple[bool, str, str]:
    """(up, what was asked, last answer): a Puppet Server on 8140 says `running` on
    /status/v1/simple (PE 2016.4+); before that there is no status endpoint on 8140
    (pe-generations.md §2), so up means a TLS handshake verified against the PE CA for its
    certname, which only a started Puppet Server with its certificate completes."""
    if generation.status_endpoint:
        url = f"https://{certname}:8140/status/v1/simple"
        result = session.run(["curl", "-sS", "--max-time", "10", "--cacert", cafile, url], timeout=30)
        up = result.exit_status == 0 and result.stdout.strip() == "running"
        return up, f"{url} says running", (result.stdout + result.stderr).strip()
    result = session.run(served_certificate_command(certname, cafile), timeout=30)
    up = served_identity(result, certname) is not None
    return up, f"{certname}:8140 completes a verified TLS handshake", result.tail(3)


def compile_service(ctx: Context, cafile: str = "", check_served: bool = True) -> None:
    """The new master's own Puppet Server answers on 8140 (compile_service_probe) with the
    certificate the CA issued to it. Puppet Server reads its certificate only when it
    starts: after a re-issue (alt names changed, a revoked certificate repaired) a running
    one still serves the old, revoked one until pe-puppetserver restarts - which this step
    then does, once, and checks again. (From PE 2017.2 the master run's CRL update reloads
    it anyway; before, nothing else would.)"""
    cfg = ctx.cfg
    cafile = cafile or ctx.agent.get("localcacert", "")
    restarted = False
    while True:
        wait_for_compile_service(ctx, cafile)
        served = served_fingerprint(ctx, cafile) if check_served and ctx.issued else None
        if served is None or ctx.issued is None or served == ctx.issued.fingerprint:
            ctx.installed["compile_service"] = True
            return
        if restarted:
            raise ProviderError(
                f"[{cfg.host}] step 'compile service': 8140 still serves certificate {served[:23]}... after a "
                f"restart of {crl.SERVICE}, not the one the CA issued ({ctx.issued.fingerprint[:23]}...)"
            )
        ctx.log("compile service", f"serves the previous certificate ({served[:23]}...): restarting {crl.SERVICE}")
        ctx.host.run(services.restart_script(crl.SERVICE), timeout=cfg.service_timeout).check(
            "compile service", f"restart {crl.SERVICE} so it serves the re-issued certificate"
        )
        restarted = True


def wait_for_compile_service(ctx: Context, cafile: str) -> None:
    cfg = ctx.cfg
    deadline = time.monotonic() + cfg.service_timeout
    what, last = "", ""
    while time.monotonic() < deadline:
        up, what, last = compile_service_probe(ctx, cafile)
        if up:
            ctx.log("compile service", what)
            return
        time.sleep(2)
    raise DeadlineError(
        f"[{cfg.host}] step 'compile service': not up within {cfg.service_timeout:.0f}s: expected {what or '?'} "
        f"(last answer: {last[:200]!r})"
    )


def served_fingerprint(ctx: Context, cafile: str) -> str | None:
    """SHA-256 of the certificate the host's 8140 serves (a handshake verified against the
    PE CA and the certname, made on the host), or None when no handshake completes."""
    result = ctx.host.run(served_certificate_command(ctx.cfg.certname, cafile), timeout=60)
    pem = served_identity(result, ctx.cfg.certname)
    return IssuedCert.from_pem(pem).fingerprint if pem else None


PUPPETDB_LOG = "/var/log/puppetlabs/puppetdb/puppetdb.log"


def compiler_puppetdb_probe(ctx: Context, cafile: str) -> tuple[bool, str]:
    """(up, last answer): the compiler's own PuppetDB (PE 2019.7+) on 8081, asked on the
    master itself, says `running` - out of maintenance mode, its PE-PostgreSQL read and
    write connections up, which is what pg_ident.conf's lines allow."""
    url = f"https://{ctx.cfg.certname}:8081/status/v1/services/puppetdb-status"
    # With the compiler's own certificate, which its PuppetDB's allowlist lists (PE seeds it
    # with the node itself): a PuppetDB may refuse a client without one (its jetty
    # `client-auth`, and the certificate allowlist applies to every HTTPS client).
    identity = [
        *("--cert", ctx.agent.get("hostcert", "")),
        *("--key", ctx.agent.get("hostprivkey", "")),
    ]
    identity = identity if all(identity[1::2]) else []
    result = ctx.host.run(["curl", "-sS", "--max-time", "10", "--cacert", cafile, *identity, url], timeout=30)
    state, detail = pgident.puppetdb_state(result.stdout)
    up = result.exit_status == 0 and state == "running"
    if result.exit_status != 0 or not state:
        return up, (result.stdout + result.stderr).strip()[:200] or f"curl exit {result.exit_status}"
    return up, state + (f" ({detail})" if detail else "")


def compiler_puppetdb(ctx: Context, cafile: str = "") -> None:
    """PE 2019.7+: the compiler's own PuppetDB reports `running` within service_timeout."""
    cfg = ctx.cfg
    generation = cfg.generation
    if not generation.compiler_puppetdb:
        return
    cafile = cafile or ctx.agent.get("localcacert", "")
    deadline = time.monotonic() + cfg.service_timeout
    last = ""
    while time.monotonic() < deadline:
        up, last = compiler_puppetdb_probe(ctx, cafile)
        if up:
            ctx.log("compiler PuppetDB", f"https://{cfg.certname}:8081 says running")
            ctx.installed["compiler_puppetdb"] = True
            return
        time.sleep(2)
    first_map, first_role = generation.pg_ident_maps[0]
    raise DeadlineError(
        f"[{cfg.host}] step 'compiler PuppetDB': the compiler's PuppetDB did not report running within "
        f"{cfg.service_timeout:.0f}s (last answer: {last!r}). Check {pgident.IDENT_FILE} on the database host "
        f"({cfg.database_host or 'database_host'}) for `{first_map} {cfg.certname} {first_role}` and its -migrator "
        f"and -read lines, and the compiler's {PUPPETDB_LOG} (`certificate authentication failed` means a "
        "missing line or a PostgreSQL not reloaded)"
    )


CREATE_STEPS: tuple[tuple[str, Callable[[Context], None]], ...] = (
    ("install", install_agent),
    ("sign", sign_certificate),
    ("verify certificate", verify_certificate),
    ("database access", database_access),  # PE 2019.7+ only (peadm add_compiler.pp: before the run)
    ("first agent run", first_run),
    ("classify", classify),
    ("master run", master_run),
    ("compile service", compile_service),
    ("compiler PuppetDB", compiler_puppetdb),  # PE 2019.7+ only
)
ADVICE = {
    "preflight": "make the host reachable over SSH with the configured key and pinned host key; " + AGAIN,
    "agent service": "check the agent service on the host (`puppet`; `pe-puppet` on PE 3.x: `systemctl status <name>` "
    "or `service <name> status`); " + AGAIN,
    "install": "check that the host reaches the primary on 8140 (install.bash is served from "
    "/packages/current/install.bash) and read the installer's output above; " + AGAIN,
    "sign": "check that the CA on the primary runs (`/opt/puppetlabs/bin/puppetserver ca list --certname <certname>`, "
    "or `puppet cert list` up to PE 2018.1) and allows alt names (allow-subject-alt-names); " + AGAIN,
    "verify certificate": "compare the certificate on the CA with the requested alt names; " + AGAIN,
    "first agent run": "read the run's output above (a run that another Puppet run blocks is waited out up to "
    "run_timeout); " + AGAIN,
    "availability group": "check that the console's classifier answers on 4433 and that the RBAC token (or the "
    "allow-listed client certificate) is valid; " + AGAIN,
    "classify": "check that the console's classifier answers on 4433 and that the RBAC token (or the allow-listed "
    "client certificate) is valid; " + AGAIN,
    "master run": "read the run's output above; " + AGAIN,
    "compile service": "check pe-puppetserver on the host and its log; " + AGAIN,
    "database access": "check that PE-PostgreSQL runs on the database host (`systemctl status pe-postgresql`) and "
    "that the SSH user there may edit its data directory's pg_ident.conf (root); " + AGAIN,
    "compiler PuppetDB": "check pe-puppetdb on the compiler (`systemctl status pe-puppetdb`, "
    f"{PUPPETDB_LOG}), that it reaches PE-PostgreSQL on 5432, and the compiler's three lines in the database "
    "host's pg_ident.conf; " + AGAIN,
    "remove database access": "check that PE-PostgreSQL runs on the database host and that the SSH user there may "
    "edit its data directory's pg_ident.conf (root); what the delete did already is checked and skipped: run "
    "`pulumi up` (or `destroy`) again.",
}


def run_step(ctx: Context, name: str, step: Callable[[Context], None]) -> None:
    """One step; its failure becomes a StepFailedError naming the host, the step and what to do."""
    try:
        step(ctx)
    except StepFailedError:
        raise
    except ProviderError as exc:
        # The failure's own advice where its cause is the same in any step (an unreachable
        # host, a foreign agent, a refusing CA), else the step's.
        raise StepFailedError(ctx.cfg.host, name, exc, exc.advice or ADVICE[name]) from exc


def converge(ctx: Context) -> None:
    run_step(ctx, "preflight", preflight)
    run_step(ctx, "availability group", availability_preflight)
    run_step(ctx, "agent service", stop_agent_service)
    succeeded = False
    try:
        for name, step in CREATE_STEPS:
            run_step(ctx, name, step)
        succeeded = True
    finally:
        try:
            restore_agent_service(ctx, succeeded)
        except (ProviderError, SshUnreachableError) as exc:
            if succeeded:
                raise
            ctx.log("agent service", f"could not restore it after the failure: {exc}")


def served_certificate_command(certname: str, cafile: str) -> list[str]:
    """openssl's TLS handshake with the master's own 8140, as an agent or the load balancer
    makes it, verified against the PE CA; prints the served certificate and the verify
    result, which served_identity() reads with the certificate's name. Only options OpenSSL
    0.9.8e has (RHEL 5, a PE 3.7 master platform; lab/platforms.py): no -servername (0.9.8f;
    Puppet Server serves one certificate on 8140 anyway), -verify_return_error (1.0.0) or
    its hostname-check option (1.0.2)."""
    return ["openssl", "s_client", "-connect", f"{certname}:8140", "-CAfile", cafile]


def first_pem_certificate(text: str) -> bytes | None:
    """The first PEM certificate in s_client's output (the server's own, without -showcerts)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return None
    return (text[start : stop + len(end)] + "\n").encode()


def certificate_names_host(pem: bytes, certname: str) -> bool:
    """What s_client's hostname check (OpenSSL 1.0.2+) checked (RFC 6125): the certificate's DNS SANs name
    `certname`, or, when it has none, its subject CN is `certname`."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    if dns:
        return certname.lower() in (d.lower() for d in dns)
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(str(a.value).lower() == certname.lower() for a in common_names)


# s_client's verdict on the chain against -CAfile, in every OpenSSL since 0.9.
VERIFIED_LINE = "Verify return code: 0 (ok)"


def served_identity(result: CommandResult, certname: str) -> bytes | None:
    """The certificate a handshake (served_certificate_command) got, if the chain verified
    against the PE CA and the certificate names `certname`; None when the handshake failed,
    did not verify, or the certificate is someone else's."""
    pem = first_pem_certificate(result.stdout)
    if result.exit_status != 0 or pem is None or VERIFIED_LINE not in result.stdout:
        return None
    return pem if certificate_names_host(pem, certname) else None


def verify_served_identity(ctx: Context, cafile: str) -> None:
    """The master's 8140 serves the certificate the CA signed for certname, with the
    requested SANs: the host holds the key of the identity we asked for and signed."""
    cfg = ctx.cfg
    entry = ca_entry(ctx)
    if entry is None or entry.state != "signed":
        raise ProviderError(
            f"[{cfg.primary_host}] verify: {cfg.certname} has no signed certificate on the CA "
            f"({entry.state if entry else 'none'})"
        )
    result = ctx.host.run(served_certificate_command(cfg.certname, cafile), timeout=60)
    pem = served_identity(result, cfg.certname)
    if pem is None:
        raise ProviderError(
            f"[{cfg.host}] verify: no TLS handshake verified against the PE CA for {cfg.certname} on 8140 "
            f"(openssl exit {result.exit_status}, or a certificate not naming {cfg.certname}):\n{result.tail(5)}"
        )
    issued = IssuedCert.from_pem(pem)
    if issued.fingerprint != entry.fingerprint:
        raise ProviderError(
            f"[{cfg.host}] verify: {cfg.certname}:8140 serves certificate {issued.fingerprint[:23]}..., not the one "
            f"the CA signed ({entry.fingerprint[:23]}...); clean it on both and re-run"
        )
    if cfg.dns_alt_names and issued.sans != ca.expected_sans(cfg.certname, cfg.dns_alt_names):
        raise SanMismatchError(f"[{cfg.host}] the issued certificate carries {sorted(issued.sans)}")
    check_extensions(cfg, issued)
    ctx.issued = issued
    ctx.log("verify certificate", f"8140 serves serial {issued.serial}, SANs {','.join(sorted(issued.sans)) or '-'}")


def verify_ready(ctx: Context) -> None:
    """For a master provisioned by CompileMasterBatch: what converge() leaves, checked
    without changing anything and without a Ruby start-up (its ~1 CPU-s per master was
    most of this check): the CA signed our certname with the requested SANs; the host's
    8140 serves exactly that certificate (so the host holds its key) under its certname,
    verified against the PE CA; the classifier puts it in the masters' group; and the
    compile service (from PE 2019.7 also the compiler's own PuppetDB) says `running`. The
    agent's own settings were checked by the batch's preflight, which refuses a host whose
    agent is not ours."""
    cfg = ctx.cfg
    ca_pem = fetch_ca_pem(ctx)
    cafile = f"/tmp/pe-compile-masters-{cfg.certname}-verify-ca.pem"  # per certname: hosts may share /tmp
    ctx.host.put(cafile, ca_pem.encode())
    try:
        verify_served_identity(ctx, cafile)
        with ctx.classifier().opened() as classifier:
            group = classifier.group_by_name(cfg.generation.node_group)
            ctx.group_id = str(group["id"])
            trusted = trusted_facts(cfg, ctx.issued)
            if ctx.group_id not in classifier.classified_groups(cfg.certname, trusted):
                raise ClassifierError(f"step 'verify': {cfg.certname} is not classified in {cfg.generation.node_group}")
            check_availability_group(ctx, classifier, trusted)
        ctx.log("verify", f"classified in {cfg.generation.node_group}")
        compile_service(ctx, cafile, check_served=False)  # verify_served_identity did
        compiler_puppetdb(ctx, cafile)  # PE 2019.7+: its own PuppetDB, admitted by PE-PostgreSQL
    finally:
        ctx.host.run(["rm", "-f", cafile], timeout=30)


# --- delete ------------------------------------------------------------------------------


def deactivate_in_puppetdb(ctx: Context) -> None:
    cfg = ctx.cfg
    if not cfg.puppetdb_url:
        ctx.log("deactivate", "no puppetdb_url: skipped (PuppetDB drops it when the cert is revoked and purged)")
        return
    # PuppetDB 2.x (PE 3.x): /v3/commands, version 2; later /pdb/cmd/v1, version 3 (§6).
    path, payload = cfg.generation.deactivate_command(
        cfg.certname, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    )
    settings = ctx.primary_ca.ssl()
    argv = curl.curl_argv(
        "--cacert", settings["localcacert"], "--cert", settings["hostcert"], "--key", settings["hostprivkey"],
        "-H", "Content-Type: application/json", "-X", "POST", "--data-binary", "@-",
        f"{cfg.puppetdb_url.rstrip('/')}{path}",
    )  # fmt: skip
    result = curl.with_http_status(ctx.primary.run(argv, stdin=json.dumps(payload).encode(), timeout=120))
    result.check("deactivate in PuppetDB")
    ctx.log("deactivate", f"{cfg.certname} deactivated in PuppetDB")


# Where a compiler may be pinned on PE 2019.7+: PE Master, as a legacy compile master (an
# admin's pin, an adopted or converted host). PE 2019.8's removal page: "unpin it from the
# PE Master node group if pinned"; PE 2023.8: unpin legacy compilers from PE Master [S38,S39].
LEGACY_MASTER_GROUP = "PE Master"


def unclassify(ctx: Context) -> None:
    """The certname is pinned nowhere after removal, on every generation: the next host that
    reuses the name must not get the master profile. From PE 2016.1 `unpin-from-all` (every
    group, the masters' included; from 2019.7 also a legacy pin in PE Master where the
    compiler itself was classified by its certificate); before, the masters' group's rule
    is rewritten without the pin. Checked after."""
    cfg = ctx.cfg
    generation = cfg.generation
    with ctx.classifier().opened() as classifier:
        if generation.classification == "rule":
            group = classifier.group_by_name(generation.node_group)
            classifier.unpin(group, cfg.certname, endpoint=False)
            checked = [generation.node_group]
            unpinned = [generation.node_group] if is_pinned(group.get("rule"), cfg.certname) else []
        else:
            unpinned = classifier.unpin_from_all(cfg.certname)
            checked = [generation.node_group] if generation.classification == "pin" else [LEGACY_MASTER_GROUP]
        for name in checked:
            if is_pinned(classifier.group_by_name(name).get("rule"), cfg.certname):
                raise ClassifierError(f"step 'unclassify': {cfg.certname} is still pinned to {name}")
    if unpinned:
        ctx.log("unclassify", f"unpinned from {', '.join(unpinned)}")
    elif generation.classification == "trusted":
        ctx.log("unclassify", "pinned nowhere; its certificate's pp_auth_role goes with the revocation")
    else:
        ctx.log("unclassify", f"not pinned to {generation.node_group} (already unpinned)")


def revoke_and_clean(ctx: Context, serial: int | None) -> None:
    cfg = ctx.cfg
    if cfg.certname == cfg.primary_certname:
        raise ProviderError("refusing to touch the primary's own certificate")
    entry = ca_entry(ctx)
    if entry is not None:
        ctx.primary_ca.clean(cfg.certname, entry.state == "signed", cfg.sign_timeout)
    if ca_entry(ctx) is not None:
        raise ProviderError(f"[{cfg.primary_host}] step 'revoke': {cfg.certname} is still on the CA after cleaning")
    if serial is not None:
        crl_pem = ctx.primary.get(ctx.primary_ca.cacrl())
        revoked = crl_pem is not None and serial_revoked(crl_pem, serial)
        if not revoked:
            raise ProviderError(
                f"[{cfg.primary_host}] step 'revoke': serial {serial} of {cfg.certname} is not in the "
                "CA's CRL after cleaning"
            )
        ctx.log("revoke", f"serial {serial} revoked (in the CRL) and the certificate cleaned")
    else:
        ctx.log("revoke", "certificate cleaned on the CA" if entry else "no certificate on the CA: nothing to revoke")


def refresh_crl(ctx: Context, serials: Sequence[int], leaving: Collection[str] = ()) -> None:
    """The masters that remain take the new CRL, per generation (provider/pe/crl_refresh.py).
    A peer that is no longer signed on the CA, or that is `leaving` (removed in this call
    or leaving the stack in this `up`), is being removed too: skipped, also when it stops
    answering half-way (its own delete is uninstalling it)."""
    cfg = ctx.cfg
    generation = cfg.generation

    def still_signed(certname: str) -> bool:
        entry = ca_entry(ctx, certname)
        return entry is not None and entry.state == "signed"

    staying = [p for p in cfg.peer_masters if p.certname not in leaving]
    peers = {p.certname: p for p in staying if still_signed(p.certname)}
    gone = [p.certname for p in staying if p.certname not in peers]
    if len(staying) < len(cfg.peer_masters):
        ctx.log("CRL refresh", f"skipping {len(cfg.peer_masters) - len(staying)} master(s) leaving the stack")
    if gone:
        ctx.log("CRL refresh", f"skipping {', '.join(gone)}: not signed on the CA (being removed too)")
    plan = crl.plan(generation, list(peers))
    if not plan:
        ctx.log("CRL refresh", "no other compile master in the deployment: nothing to refresh")
        return

    def probe(session: SshSession, certname: str, cafile: str) -> bool:
        return server_probe(session, certname, generation, cafile)[0]

    ca_crl_pem: list[bytes] = []

    def ca_crl() -> bytes:
        """The CA's CRL as of the first copy (every revocation of this call is in it), read
        over the pinned SSH channel to the primary."""
        if not ca_crl_pem:
            pem = ctx.primary.get(ctx.primary_ca.cacrl())
            missing = [s for s in serials if pem is None or not serial_revoked(pem, s)]
            if pem is None or missing:
                raise ProviderError(f"[{cfg.primary_host}] CRL refresh: the CA's CRL does not list serial {missing}")
            ca_crl_pem.append(pem)
        return ca_crl_pem[0]

    servers: dict[str, crl.Server] = {}
    # A restart or reload that began after this moment serves the new CRL (up to 2017.1 the
    # primary's run copies it first: the moment moves past that run).
    since = time.monotonic()
    with ExitStack() as stack:
        for step in plan:
            try:
                if step.server not in servers:
                    if step.server == crl.PRIMARY:
                        session = ctx.primary
                        certname = cfg.primary_certname
                    else:
                        target = peers[step.server].target
                        session = stack.enter_context(SshSession(target, cfg.connect_timeout, cfg.secrets))
                        certname = step.server
                    servers[step.server] = crl.Server(session, certname, generation, ctx.log, probe)
                crl.carry_out(
                    step,
                    servers[step.server],
                    serials,
                    serial_revoked,
                    cfg.run_timeout,
                    cfg.service_timeout,
                    since,
                    ca_crl=ca_crl,
                )
                if step.action == "run" and step.server == crl.PRIMARY:
                    since = time.monotonic()
            except ProviderError as exc:
                if step.server != crl.PRIMARY and not still_signed(step.server):
                    ctx.log("CRL refresh", f"{step.server} was removed meanwhile: skipped")
                    continue
                raise ProviderError(
                    f"{exc}\n{cfg.certname} is already revoked and removed from PE; the masters left must still "
                    f"take the new CRL ({generation.label}: {generation.crl_refresh} on each). Fix that and run "
                    "`pulumi up` again: the delete is retried, and the steps already done find nothing to do."
                ) from exc


def serial_revoked(crl_pem: bytes, serial: int) -> bool:
    for block in crl_pem.split(b"-----END X509 CRL-----"):
        if b"BEGIN X509 CRL" not in block:
            continue
        from cryptography import x509

        crl = x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
        if crl.get_revoked_certificate_by_serial_number(serial) is not None:
            return True
    return False


def uninstall_agent(ctx: Context) -> None:
    cfg = ctx.cfg
    if cfg.keep_agent_on_delete:
        ctx.log("uninstall", "keep_agent_on_delete: agent and its configuration left in place (service stopped)")
    agent = ctx.agent or read_agent(ctx)  # read earlier in this call (the serial), or now
    generation = cfg.generation
    ctx.host.run(services.service_script(generation.agent_service, "stopped", enable=False), timeout=120)
    ctx.host.run(services.service_script("pe-puppetserver", "stopped", enable=False), timeout=180)
    if generation.compiler_puppetdb:  # PE 2019.7+: its own PuppetDB, whose database access is gone
        ctx.host.run(services.service_script("pe-puppetdb", "stopped", enable=False), timeout=180)
    if cfg.keep_agent_on_delete or not agent:
        return
    if agent.get("certname") != cfg.certname:
        ctx.log("uninstall", f"the host's agent is now {agent.get('certname')}: left alone")
        return
    clean_host_identity(ctx)
    # One awk over the puppet.conf Puppet named, not `puppet config delete` (Puppet 5.4+, §4):
    # that is one Ruby start-up (~1 CPU-s) per key and section, eight per master.
    path = agent.get("config", "")
    if not path.startswith("/"):
        raise ProviderError(f"[{cfg.host}] `{generation.puppet_bin} config print config` printed {path!r}")
    script = puppet_conf_strip_script(path, AGENT_CONFIG_KEYS, AGENT_CONFIG_SECTIONS)
    ctx.host.run(script, timeout=120).check("remove the agent's configuration")
    if agent.get("csr_attributes"):
        ctx.host.run(["rm", "-f", agent["csr_attributes"]], timeout=60)
    ctx.log("uninstall", "agent service and compile service stopped, agent configuration and certificate removed")
