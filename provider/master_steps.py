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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from provider import agent_runs as runs
from provider import ca, services
from provider.agent_runs import DEFAULT_RUN_LOCK, file_exists
from provider.compile_master_config import MasterConfig
from provider.errors import (
    CaRefusedError,
    ClassifierError,
    DeadlineError,
    ForeignAgentError,
    ProviderError,
    SanMismatchError,
    SshUnreachableError,
    StepFailedError,
)
from provider.pe_api import Classifier, ClassifierAuth
from provider.primary import Primary, parse_config_print
from provider.ssh import CommandResult, SshSession

AGENT_SETTINGS = (
    "server",
    "certname",
    "hostcert",
    "hostprivkey",
    "hostcsr",
    "localcacert",
    "agent_catalog_run_lock",
    "csr_attributes",
    "ssldir",
)
IDENTITY_FILES = ("hostcert", "hostprivkey", "hostcsr")  # each `<dir>/<certname>.pem` by default


def fingerprint_of_pem(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True)
class IssuedCert:
    fingerprint: str
    serial: int
    sans: frozenset[str]

    @classmethod
    def from_pem(cls, pem: bytes) -> IssuedCert:
        cert = x509.load_pem_x509_certificate(pem)
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            sans = frozenset(str(n) for n in names.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            sans = frozenset()
        return cls(fingerprint_of_pem(pem), cert.serial_number, sans)


def install_arguments(cfg: MasterConfig) -> list[str]:
    """PE's install.bash arguments for this master (section:key=value, then service flags)."""
    args = [f"agent:certname={cfg.certname}"]
    if cfg.dns_alt_names:
        args.append(f"main:dns_alt_names={','.join(cfg.dns_alt_names)}")
    if cfg.environmentpath:
        args.append(f"main:environmentpath={cfg.environmentpath}")
    args += [f"extension_requests:{k}={v}" for k, v in cfg.dialect.extension_requests]
    return [*args, "--puppet-service-ensure", "stopped", "--puppet-service-enable", "false"]


@dataclass
class Context:
    cfg: MasterConfig
    host: SshSession
    primary: SshSession
    log: Callable[[str, str], None]
    # The CA's side of the steps; a CompileMasterBatch passes one that all its threads share.
    ca: Primary | None = None
    # discovered along the way
    agent: dict[str, str] = field(default_factory=dict)
    ca_pem: str = ""
    agent_service_was: str = ""
    agent_configured: bool = False  # preflight found an agent configured (ours: resuming)
    issued: IssuedCert | None = None
    group_id: str = ""
    installed: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ca is None:
            self.ca = Primary(self.primary, self.cfg.dialect.ca_cli, self.cfg.primary_certname)

    @property
    def primary_ca(self) -> Primary:
        assert self.ca is not None  # set in __post_init__
        return self.ca

    def classifier(self) -> Classifier:
        auth = ClassifierAuth(self.cfg.rbac_token, self.cfg.classifier_client_cert, self.cfg.classifier_client_key)
        return Classifier(self.cfg.classifier_url, self.ca_pem, auth, timeout=self.cfg.api_timeout)


# --- shared helpers ----------------------------------------------------------------------


def read_agent(ctx: Context) -> dict[str, str]:
    result = ctx.host.run(["puppet", "config", "print", *AGENT_SETTINGS, "--section", "agent"], timeout=120)
    if result.exit_status == 127:
        return {}
    result.check("read agent settings", "is the Puppet agent installed on the host?")
    ctx.agent = parse_config_print(result.stdout)
    return ctx.agent


def ca_entries(ctx: Context) -> dict[str, ca.CaEntry]:
    """The CA's certificates and requests (retried: see provider.primary)."""
    return ctx.primary_ca.entries(ctx.cfg.sign_timeout, ctx.log)


def fetch_ca_pem(ctx: Context) -> str:
    """The PE CA certificate, read over the pinned SSH channel to the primary."""
    if not ctx.ca_pem:
        ctx.ca_pem = ctx.primary_ca.ca_pem()
    return ctx.ca_pem


def agent_run(ctx: Context, session: SshSession, step: str, timeout: float) -> CommandResult:
    lock = ctx.agent.get("agent_catalog_run_lock") or DEFAULT_RUN_LOCK
    return runs.agent_run(session, step, timeout, ctx.log, lock)


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


def stop_agent_service(ctx: Context) -> None:
    if not ctx.agent_configured:
        # No agent of ours (nor anyone's) is configured, so no service of ours to stop, and
        # install.bash runs with --puppet-service-ensure stopped. Saves a Ruby start-up.
        ctx.agent_service_was = "stopped"
        return
    state = ctx.host.run(services.service_state_script("puppet"), timeout=120)
    state.check("read the agent service's state")
    ctx.agent_service_was = "running" if state.stdout.strip() == "running" else "stopped"
    if ctx.agent_service_was == "running":
        ctx.host.run(services.service_script("puppet", "stopped"), timeout=120).check("stop the agent service")
        ctx.log("agent service", "stopped for the procedure")


def restore_agent_service(ctx: Context, succeeded: bool) -> None:
    want = "running" if succeeded else (ctx.agent_service_was or "stopped")
    result = ctx.host.run(services.service_script("puppet", want, enable=want == "running"), timeout=120)
    if result.exit_status == 0:
        ctx.log("agent service", f"{want}")
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
                return
    # Named per certname: hosts that share a /tmp (the lab's do) must not race each other.
    tmp_ca = f"/tmp/pe-compile-masters-{cfg.certname}-ca.pem"
    ctx.host.put(tmp_ca, ca_pem.encode())
    localcacert = agent.get("localcacert", "")
    if localcacert:  # the agent will trust this CA, never one fetched on first use
        ctx.host.run(["mkdir", "-p", localcacert.rsplit("/", 1)[0]], timeout=60).check("prepare ssldir")
        ctx.host.put(localcacert, ca_pem.encode())
    url = f"https://{cfg.primary_certname}:8140/packages/current/install.bash"
    script = f"/tmp/pe-compile-masters-{cfg.certname}-install.bash"
    ctx.host.run(["curl", "-sSf", "--max-time", "120", "--cacert", tmp_ca, "-o", script, url], timeout=180).check(
        "download install.bash", f"from {url}, verified against the PE CA"
    )
    result = ctx.host.run(["bash", script, *install_arguments(cfg)], timeout=cfg.install_timeout)
    result.check("install.bash", "PE's agent installer failed")
    ctx.installed.update({"agent_config": True, "csr_attributes": bool(cfg.dialect.extension_requests)})
    derived = agent_after_install(agent, cfg.certname, cfg.primary_certname)
    if derived and file_exists(ctx.host, derived["hostprivkey"]):
        ctx.agent = derived  # verified: install.bash made the key where the derivation says
    else:
        read_agent(ctx)
    ctx.log("install", f"agent installed: certname {cfg.certname}, alt names {','.join(cfg.dns_alt_names) or '-'}")


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
    der = ctx.host.run(f"openssl req -in {shlex.quote(csr)} -outform DER | sha256sum", timeout=60)
    der.check("fingerprint our CSR")
    digest = der.stdout.split()[0].upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def clean_host_identity(ctx: Context) -> None:
    """Remove the host's key/cert/CSR for our certname so a fresh CSR can be made."""
    paths = [ctx.agent.get(k, "") for k in IDENTITY_FILES]
    public = ctx.agent.get("ssldir", "/var/lib/puppet/ssl") + f"/public_keys/{ctx.cfg.certname}.pem"
    ctx.host.run(["rm", "-f", *[p for p in paths if p], public], timeout=60).check("clean the host's certificate")


def sign_certificate(ctx: Context) -> None:
    cfg = ctx.cfg
    cli = cfg.dialect.ca_cli
    for _ in range(3):
        entry = ca_entries(ctx).get(cfg.certname)
        host_has_key = file_exists(ctx.host, ctx.agent.get("hostprivkey", "/nonexistent"))
        if entry and entry.state == "signed" and ca.sans_match(entry, cfg.certname, cfg.dns_alt_names) and host_has_key:
            ctx.log("sign", "already signed with the requested alt names: skipped")
            return
        if entry and (
            entry.state == "revoked"
            or (
                entry.state == "signed" and not (ca.sans_match(entry, cfg.certname, cfg.dns_alt_names) and host_has_key)
            )
        ):
            why = (
                "revoked"
                if entry.state == "revoked"
                else ("signed with other alt names" if host_has_key else "signed but the host lost its private key")
            )
            ctx.log("sign", f"certificate {why}: cleaning it on the CA and requesting a new one")
            ctx.primary.run(ca.clean_command(cli, cfg.certname), timeout=cfg.sign_timeout).check("clean on the CA")
            clean_host_identity(ctx)
            ctx.agent = {}
            install_agent(ctx)
            continue
        if entry is None:
            if not host_has_key or host_csr_fingerprint(ctx) is None:
                clean_host_identity(ctx)
            ctx.log("sign", "no CSR on the CA: submitting one")
            ctx.host.run(
                ["puppet", "ssl", "submit_request", "--certname", cfg.certname], timeout=cfg.sign_timeout
            ).check("submit the CSR")
            continue
        # A pending request: sign it only if it is ours and asks for exactly our names.
        ours = host_csr_fingerprint(ctx)
        if ours is None or ours != entry.fingerprint:
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the pending CSR for {cfg.certname} (fingerprint "
                f"{entry.fingerprint[:23]}...) is not the one on {cfg.host}; refusing to sign someone else's request. "
                f"Inspect it on the CA and clean it (`{' '.join(ca.clean_command(cli, cfg.certname))}`) if it is stale."
            )
        if not ca.sans_match(entry, cfg.certname, cfg.dns_alt_names):
            want = sorted(ca.expected_sans(cfg.certname, cfg.dns_alt_names))
            raise SanMismatchError(
                f"[{cfg.primary_host}] step 'sign': the CSR for {cfg.certname} asks for SANs {sorted(entry.sans)}, "
                f"not the requested {want}; refusing to sign. Fix dns_alt_names or the host's puppet.conf."
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
            f"https://{cfg.primary_certname}:8140",
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
    entry = ca_entries(ctx).get(cfg.certname)
    if entry is None or entry.state != "signed" or entry.fingerprint != issued.fingerprint:
        raise ProviderError(
            f"[{cfg.host}] step 'verify certificate': the host's certificate ({issued.fingerprint[:23]}"
            "...) is not the one the CA signed; clean it on both and re-run"
        )
    if issued.sans != ca.expected_sans(cfg.certname, cfg.dns_alt_names) and cfg.dns_alt_names:
        raise SanMismatchError(f"[{cfg.host}] the issued certificate carries {sorted(issued.sans)}")
    ctx.issued = issued
    ctx.log("verify certificate", f"serial {issued.serial}, SANs {','.join(sorted(issued.sans)) or '-'}")


def first_run(ctx: Context) -> None:
    agent_run(ctx, ctx.host, "first agent run", ctx.cfg.run_timeout)
    ctx.log("first agent run", "done")


def classify(ctx: Context) -> None:
    cfg = ctx.cfg
    dialect = cfg.dialect
    with ctx.classifier().opened() as classifier:
        group = classifier.group_by_name(dialect.node_group)
        ctx.group_id = str(group["id"])
        trusted = {"certname": cfg.certname, "extensions": dict(dialect.extension_requests)}
        if ctx.group_id in classifier.classified_groups(cfg.certname, trusted):
            ctx.log("classify", f"already in {dialect.node_group}: skipped")
            return
        if dialect.classification == "trusted":
            raise ClassifierError(
                f"[{cfg.classifier_url}] step 'classify': {cfg.certname} carries pp_auth_role="
                f"pe_compiler but is not in {dialect.node_group}; check that group's rules"
            )
        classifier.pin(group, cfg.certname, endpoint=dialect.classification == "pin")
        if ctx.group_id not in classifier.classified_groups(cfg.certname, trusted):
            raise ClassifierError(
                f"step 'classify': pinned {cfg.certname} to {dialect.node_group} but the classifier "
                "does not classify it there"
            )
        ctx.log(
            "classify",
            f"pinned to {dialect.node_group} "
            f"({'pin endpoint' if dialect.classification == 'pin' else 'rule rewrite'}), verified",
        )


def master_run(ctx: Context) -> None:
    agent_run(ctx, ctx.host, "master run", ctx.cfg.run_timeout)
    ctx.log("master run", "catalog with the master profile applied")


def compile_service(ctx: Context, cafile: str = "") -> None:
    """The new master's own Puppet Server answers /status/v1/simple = running on 8140."""
    cfg = ctx.cfg
    cafile = cafile or ctx.agent.get("localcacert", "")
    url = f"https://{cfg.certname}:8140/status/v1/simple"
    deadline = time.monotonic() + cfg.service_timeout
    last = ""
    while time.monotonic() < deadline:
        result = ctx.host.run(["curl", "-sS", "--max-time", "10", "--cacert", cafile, url], timeout=30)
        last = (result.stdout + result.stderr).strip()
        if result.exit_status == 0 and result.stdout.strip() == "running":
            ctx.log("compile service", f"{url} says running")
            ctx.installed["compile_service"] = True
            return
        time.sleep(2)
    raise DeadlineError(
        f"[{cfg.host}] step 'compile service': {url} did not say running within "
        f"{cfg.service_timeout:.0f}s (last answer: {last[:200]!r})"
    )


CREATE_STEPS: tuple[tuple[str, Callable[[Context], None]], ...] = (
    ("install", install_agent),
    ("sign", sign_certificate),
    ("verify certificate", verify_certificate),
    ("first agent run", first_run),
    ("classify", classify),
    ("master run", master_run),
    ("compile service", compile_service),
)
AGAIN = "then run `pulumi up` again: finished steps are checked and skipped, nothing is done twice."
ADVICE = {
    "preflight": "make the host reachable over SSH with the configured key and pinned host key; " + AGAIN,
    "agent service": "check the puppet service on the host (`systemctl status puppet` or `service puppet status`); "
    + AGAIN,
    "install": "check that the host reaches the primary on 8140 (install.bash is served from "
    "/packages/current/install.bash) and read the installer's output above; " + AGAIN,
    "sign": "check that the CA on the primary runs (`puppetserver ca list --certname <certname>`) and allows "
    "alt names (allow-subject-alt-names); " + AGAIN,
    "verify certificate": "compare the certificate on the CA with the requested alt names; " + AGAIN,
    "first agent run": "read the run's output above (a run that another Puppet run blocks is waited out up to "
    "run_timeout); " + AGAIN,
    "classify": "check that the console's classifier answers on 4433 and that the RBAC token (or the whitelisted "
    "client certificate) is valid; " + AGAIN,
    "master run": "read the run's output above; " + AGAIN,
    "compile service": "check pe-puppetserver on the host and its log; " + AGAIN,
}
SSH_ADVICE = (
    "the SSH connection to the host was lost or refused: check that the host is up and its sshd answers with the "
    "pinned host key (a command cut off there is stopped on the host at its deadline); " + AGAIN
)


def run_step(ctx: Context, name: str, step: Callable[[Context], None]) -> None:
    """One step; its failure becomes a StepFailedError naming the host, the step and what to do."""
    try:
        step(ctx)
    except StepFailedError:
        raise
    except ProviderError as exc:
        advice = SSH_ADVICE if isinstance(exc, SshUnreachableError) else ADVICE[name]
        raise StepFailedError(ctx.cfg.host, name, exc, advice) from exc


def converge(ctx: Context) -> None:
    run_step(ctx, "preflight", preflight)
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
    makes it: verified against the PE CA and the certname; prints the served certificate."""
    return [
        "openssl",
        "s_client",
        "-connect",
        f"{certname}:8140",
        "-servername",
        certname,
        "-CAfile",
        cafile,
        "-verify_hostname",
        certname,
        "-verify_return_error",
    ]


def first_pem_certificate(text: str) -> bytes | None:
    """The first PEM certificate in s_client's output (the server's own, without -showcerts)."""
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.find(begin)
    stop = text.find(end, start)
    if start < 0 or stop < 0:
        return None
    return (text[start : stop + len(end)] + "\n").encode()


def verify_served_identity(ctx: Context, cafile: str) -> None:
    """The master's 8140 serves the certificate the CA signed for certname, with the
    requested SANs: the host holds the key of the identity we asked for and signed."""
    cfg = ctx.cfg
    entry = ca_entries(ctx).get(cfg.certname)
    if entry is None or entry.state != "signed":
        raise ProviderError(
            f"[{cfg.primary_host}] verify: {cfg.certname} has no signed certificate on the CA "
            f"({entry.state if entry else 'none'}) - CompileMasterBatch provisions it; run `pulumi up` again"
        )
    result = ctx.host.run(served_certificate_command(cfg.certname, cafile), timeout=60)
    pem = first_pem_certificate(result.stdout)
    if result.exit_status != 0 or pem is None:
        raise ProviderError(
            f"[{cfg.host}] verify: no TLS handshake verified against the PE CA for {cfg.certname} on 8140 "
            f"(openssl exit {result.exit_status}):\n{result.tail(5)}"
        )
    issued = IssuedCert.from_pem(pem)
    if issued.fingerprint != entry.fingerprint:
        raise ProviderError(
            f"[{cfg.host}] verify: {cfg.certname}:8140 serves certificate {issued.fingerprint[:23]}..., not the one "
            f"the CA signed ({entry.fingerprint[:23]}...); clean it on both and re-run"
        )
    if cfg.dns_alt_names and issued.sans != ca.expected_sans(cfg.certname, cfg.dns_alt_names):
        raise SanMismatchError(f"[{cfg.host}] the issued certificate carries {sorted(issued.sans)}")
    ctx.issued = issued
    ctx.log("verify certificate", f"8140 serves serial {issued.serial}, SANs {','.join(sorted(issued.sans)) or '-'}")


def verify_ready(ctx: Context) -> None:
    """For a master provisioned by CompileMasterBatch: what converge() leaves, checked
    without changing anything and without a Ruby start-up (its ~1 CPU-s per master was
    most of this check): the CA signed our certname with the requested SANs; the host's
    8140 serves exactly that certificate (so the host holds its key) under its certname,
    verified against the PE CA; the classifier puts it in the masters' group; and the
    compile service says `running`. The agent's own settings were checked by the batch's
    preflight, which refuses a host whose agent is not ours."""
    cfg = ctx.cfg
    ca_pem = fetch_ca_pem(ctx)
    cafile = f"/tmp/pe-compile-masters-{cfg.certname}-verify-ca.pem"  # per certname: hosts may share /tmp
    ctx.host.put(cafile, ca_pem.encode())
    try:
        verify_served_identity(ctx, cafile)
        with ctx.classifier().opened() as classifier:
            group = classifier.group_by_name(cfg.dialect.node_group)
            ctx.group_id = str(group["id"])
            trusted = {"certname": cfg.certname, "extensions": dict(cfg.dialect.extension_requests)}
            if ctx.group_id not in classifier.classified_groups(cfg.certname, trusted):
                raise ClassifierError(f"step 'verify': {cfg.certname} is not classified in {cfg.dialect.node_group}")
        ctx.log("verify", f"classified in {cfg.dialect.node_group}")
        compile_service(ctx, cafile)
    finally:
        ctx.host.run(["rm", "-f", cafile], timeout=30)


# --- delete ------------------------------------------------------------------------------


def deactivate_in_puppetdb(ctx: Context) -> None:
    cfg = ctx.cfg
    if not cfg.puppetdb_url:
        ctx.log("deactivate", "no puppetdb_url: skipped (PuppetDB drops it when the cert is revoked and purged)")
        return
    payload = {
        "command": "deactivate node",
        "version": 3,
        "payload": {
            "certname": cfg.certname,
            "producer_timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        },
    }
    settings = ctx.primary_ca.ssl()
    result = ctx.primary.run(
        [
            "curl",
            "-sS",
            "--fail-with-body",
            "--max-time",
            "60",
            "--cacert",
            settings["localcacert"],
            "--cert",
            settings["hostcert"],
            "--key",
            settings["hostprivkey"],
            "-H",
            "Content-Type: application/json",
            "-X",
            "POST",
            "--data-binary",
            "@-",
            f"{cfg.puppetdb_url.rstrip('/')}/pdb/cmd/v1",
        ],
        stdin=json.dumps(payload).encode(),
        timeout=120,
    )
    result.check("deactivate in PuppetDB")
    ctx.log("deactivate", f"{cfg.certname} deactivated in PuppetDB")


def unclassify(ctx: Context) -> None:
    cfg = ctx.cfg
    dialect = cfg.dialect
    if dialect.classification == "trusted":
        ctx.log("unclassify", "classified by certificate extension: revoking the certificate removes it")
        return
    with ctx.classifier().opened() as classifier:
        group = classifier.group_by_name(dialect.node_group)
        classifier.unpin(group, cfg.certname, endpoint=dialect.classification == "pin")
        again = classifier.group_by_name(dialect.node_group)
        from provider.pe_api import is_pinned

        if is_pinned(again.get("rule"), cfg.certname):
            raise ClassifierError(f"step 'unclassify': {cfg.certname} is still pinned to {dialect.node_group}")
    ctx.log("unclassify", f"unpinned from {dialect.node_group}")


def revoke_and_clean(ctx: Context, serial: int | None) -> None:
    cfg = ctx.cfg
    if cfg.certname == cfg.primary_certname:
        raise ProviderError("refusing to touch the primary's own certificate")
    entry = ca_entries(ctx).get(cfg.certname)
    if entry is not None:
        ctx.primary.run(ca.clean_command(cfg.dialect.ca_cli, cfg.certname), timeout=cfg.sign_timeout).check(
            "revoke and clean on the CA"
        )
    if ca_entries(ctx).get(cfg.certname) is not None:
        raise ProviderError(f"[{cfg.primary_host}] step 'revoke': {cfg.certname} is still on the CA after cleaning")
    if serial is not None:
        crl_path = ctx.primary.run(["puppet", "config", "print", "cacrl", "--section", "server"], timeout=120)
        crl_path.check("locate the CRL")
        crl_pem = ctx.primary.get(crl_path.stdout.strip())
        revoked = crl_pem is not None and serial_revoked(crl_pem, serial)
        if not revoked:
            raise ProviderError(
                f"[{cfg.primary_host}] step 'revoke': serial {serial} of {cfg.certname} is not in the "
                "CA's CRL after cleaning"
            )
        ctx.log("revoke", f"serial {serial} revoked (in the CRL) and the certificate cleaned")
    else:
        ctx.log("revoke", "certificate cleaned on the CA" if entry else "no certificate on the CA: nothing to revoke")


def serial_revoked(crl_pem: bytes, serial: int) -> bool:
    for block in crl_pem.split(b"-----END X509 CRL-----"):
        if b"BEGIN X509 CRL" not in block:
            continue
        crl = x509.load_pem_x509_crl(block + b"-----END X509 CRL-----\n")
        if crl.get_revoked_certificate_by_serial_number(serial) is not None:
            return True
    return False


def uninstall_agent(ctx: Context) -> None:
    cfg = ctx.cfg
    if cfg.keep_agent_on_delete:
        ctx.log("uninstall", "keep_agent_on_delete: agent and its configuration left in place (service stopped)")
    agent = read_agent(ctx)
    ctx.host.run(services.service_script("puppet", "stopped", enable=False), timeout=120)
    ctx.host.run(services.service_script("pe-puppetserver", "stopped", enable=False), timeout=180)
    if cfg.keep_agent_on_delete or not agent:
        return
    if agent.get("certname") != cfg.certname:
        ctx.log("uninstall", f"the host's agent is now {agent.get('certname')}: left alone")
        return
    clean_host_identity(ctx)
    for key in ("server", "certname", "dns_alt_names", "environmentpath"):
        for section in ("main", "agent"):
            ctx.host.run(["puppet", "config", "delete", "--section", section, key], timeout=60)
    if agent.get("csr_attributes"):
        ctx.host.run(["rm", "-f", agent["csr_attributes"]], timeout=60)
    ctx.log("uninstall", "agent service and compile service stopped, agent configuration and certificate removed")
