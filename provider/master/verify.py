"""Phase 5, verification: the compile service on 8140 answers and serves the certificate
the CA issued (verified the way an agent and the load balancer verify it), the compiler's
PuppetDB runs, and the master is classified where it must be."""

from __future__ import annotations

import time

from provider.core.errors import ClassifierError, DeadlineError, ProviderError, SanMismatchError
from provider.master.agent import trusted_facts
from provider.master.certificate import check_extensions
from provider.master.certs import IssuedCert, served_certificate_command, served_identity
from provider.master.classify import check_availability_group
from provider.master.context import Context, ca_entry, fetch_ca_pem
from provider.pe import ca, crl_refresh, database_access, services
from provider.pe.generation import Generation
from provider.ssh.session import SshSession


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
                f"restart of {crl_refresh.SERVICE}, not the one the CA issued ({ctx.issued.fingerprint[:23]}...)"
            )
        restarting = f"serves the previous certificate ({served[:23]}...): restarting {crl_refresh.SERVICE}"
        ctx.log("compile service", restarting)
        ctx.host.run(services.restart_script(crl_refresh.SERVICE), timeout=cfg.service_timeout).check(
            "compile service", f"restart {crl_refresh.SERVICE} so it serves the re-issued certificate"
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
    state, detail = database_access.puppetdb_state(result.stdout)
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
    database = cfg.database_target.host if cfg.database_target else "database_host"
    raise DeadlineError(
        f"[{cfg.host}] step 'compiler PuppetDB': the compiler's PuppetDB did not report running within "
        f"{cfg.service_timeout:.0f}s (last answer: {last!r}). Check {database_access.IDENT_FILE} on the database host "
        f"({database}) for `{first_map} {cfg.certname} {first_role}` and its -migrator "
        f"and -read lines, and the compiler's {PUPPETDB_LOG} (`certificate authentication failed` means a "
        "missing line or a PostgreSQL not reloaded)"
    )


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
