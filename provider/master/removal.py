"""Removing compile masters: PeCompileMaster's delete, for its own master and - when it is
the first delete call to run - every other master leaving the stack whose pool member is
already drained (provider/core/retirement.py says which, and why the engine's delete order
makes that safe).

Each master, in threads: unpin (rule rewrites, PE before 2016.1, are made one at a time by
provider.pe.classifier.rewrite_rule), revoke + clean on the
CA and check the CRL, remove its PE-PostgreSQL access (2019.7+), deactivate in PuppetDB.
Then ONE CRL refresh on the masters that stay, for every revoked serial (a peer leaving
in this `up` is skipped), then each host's uninstall. Every step checks first, so a
removal that failed half-way is finished by the next `up`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from provider.core.errors import ClassifierError, DeadlineError, ProviderError, SshUnreachableError
from provider.core.progress import progress
from provider.core.retirement import RETIREMENT, Removal
from provider.master import steps
from provider.master.agent import AGENT_CONFIG_KEYS, AGENT_CONFIG_SECTIONS, puppet_conf_strip_script
from provider.master.certificate import clean_host_identity
from provider.master.config import MasterConfig
from provider.master.context import Context, ca_entry, database_session, fetch_ca_pem, host_serial, read_agent
from provider.master.database import remove_database_access
from provider.master.verify import server_probe
from provider.pe import crl_refresh, curl, database_access, services
from provider.pe.classifier import is_pinned
from provider.pe.primary import Primary
from provider.ssh.session import SshSession


@dataclass
class Leaving:
    """One master to remove: its inputs and the serial its state recorded (None: read
    from the host before revoking, or unknown)."""

    cfg: MasterConfig
    serial: int | None
    host: SshSession | None = None
    ctx: Context | None = None


def delete(cfg: MasterConfig, serial: int | None) -> None:
    """PeCompileMaster's delete: remove this master - with the other leaving, drained
    masters no call has claimed yet - or wait for the call that claimed it."""
    log = progress(cfg.resource_name)
    claim = RETIREMENT.claim(cfg.certname)
    if claim.waiting is not None:
        wait_for(cfg, claim.waiting, log)
        return
    names = [name for name, _ in claim.group]
    group = [Leaving(cfg, serial)] + [
        Leaving(MasterConfig.from_props({**props, "resource_name": name_like(cfg, name, props)}), None)
        for name, props in claim.group[1:]
    ]
    if len(group) > 1:
        log("delete", f"removing {len(group)} masters leaving the stack, drained from the pool: {', '.join(names)}")
    stopped = ProviderError(f"delete: not removed: {cfg.certname}'s delete, which removes it too, stopped first")
    errors: dict[str, BaseException] = dict.fromkeys(names, stopped)
    try:
        errors = remove(group, log)
    finally:
        RETIREMENT.finish(errors, names)
    if cfg.certname in errors:
        raise errors[cfg.certname]
    failed = sorted(set(errors) - {cfg.certname})
    if failed:
        log("delete", f"removed; not removed with it (their own deletes report why): {', '.join(failed)}")


def name_like(lead: MasterConfig, certname: str, props: dict[str, Any]) -> str:
    """A grouped master's progress lines carry its own resource's name where the lead's
    name shows the pattern (the components name each master by its certname)."""
    if lead.certname in lead.resource_name:
        return lead.resource_name.replace(lead.certname, certname)
    return str(props.get("resource_name") or certname)


def wait_for(cfg: MasterConfig, removal: Removal, log: Any) -> None:
    """This master's removal runs in `removal.leader`'s delete call: wait for its end (the
    same deadline a removal of its own would have) and report it as this call's outcome."""
    if not removal.done.is_set():
        log("delete", f"being removed together with {removal.leader} (one CRL refresh for both): waiting")
    deadline = cfg.sign_timeout + cfg.run_timeout * (len(cfg.peer_masters) + 2) + cfg.service_timeout
    if not removal.done.wait(timeout=deadline):
        raise DeadlineError(
            f"delete: the removal of {cfg.certname} in {removal.leader}'s delete took over {deadline:.0f}s"
        )
    if removal.error is not None:
        raise removal.error
    log("delete", f"removed (in {removal.leader}'s delete)")


def remove(group: list[Leaving], log: Any) -> dict[str, BaseException]:
    """Remove every master of the group; returns {certname: error} for those not removed.
    Raises only when nothing could start (the primary or database host unreachable)."""
    lead = group[0].cfg
    errors: dict[str, BaseException] = {}
    lock = threading.Lock()
    with ExitStack() as stack:
        primary = stack.enter_context(SshSession(lead.primary_target, lead.connect_timeout, lead.secrets))
        try:  # before anything changes: the compilers' pg_ident.conf lines must go too (PE 2019.7+)
            database = database_session(lead, stack, primary)
        except SshUnreachableError as exc:
            where = lead.database_target.label if lead.database_target else "database host"
            raise ProviderError(
                f"[{where}] delete: the database host is unreachable ({exc}); {lead.certname}'s "
                f"{database_access.IDENT_FILE} lines must be removed there, so nothing was changed. Make it reachable "
                "and run `pulumi up` (or `destroy`) again."
            ) from exc
        shared_ca = Primary(primary, lead.generation, lead.primary_certname)

        def each(work: Any, members: list[Leaving]) -> None:
            def one(member: Leaving) -> None:
                try:
                    work(member)
                except Exception as exc:  # collected: one master's failure must not hide the others'
                    with lock:
                        errors[member.cfg.certname] = exc

            with ThreadPoolExecutor(max(1, min(16, len(members)))) as pool:
                list(pool.map(one, members))

        def take_out(member: Leaving) -> None:
            cfg = member.cfg
            mlog = progress(cfg.resource_name) if member is not group[0] else log
            try:
                session = SshSession(cfg.target, cfg.connect_timeout, cfg.secrets)
                session.connect()  # in parallel; then the call's ExitStack closes it with the others
                with lock:
                    stack.callback(session.close)
                member.host = session
            except SshUnreachableError as exc:
                mlog("delete", f"host unreachable ({exc}); removing it from PE anyway, host cleanup skipped")
            ctx = Context(cfg, member.host or primary, primary, mlog, ca=shared_ca, database=database)
            member.ctx = ctx
            fetch_ca_pem(ctx)
            if member.serial is None and member.host is not None:
                member.serial = serial_before_revoking(ctx)
            unclassify(ctx)
            revoke_and_clean(ctx, member.serial)
            steps.run_step(ctx, "remove database access", remove_database_access)  # PE 2019.7+
            deactivate_in_puppetdb(ctx)

        each(take_out, group)
        revoked = [m for m in group if m.cfg.certname not in errors]
        if not revoked:
            return errors
        # The masters left refuse the revoked certificates: one refresh for the group, through
        # the lead's peer list (its state names every master of the deployment).
        refresh = Context(lead, primary, primary, log, ca=shared_ca, database=database)
        leaving = {m.cfg.certname for m in group} | RETIREMENT.leaving()
        serials = [m.serial for m in revoked if m.serial is not None]
        try:
            refresh_crl(refresh, serials, leaving)
        except ProviderError as exc:
            for m in revoked:
                errors[m.cfg.certname] = exc
            return errors
        each(uninstall, [m for m in revoked if m.host is not None])
    return errors


def uninstall(member: Leaving) -> None:
    assert member.ctx is not None
    uninstall_agent(member.ctx)


def serial_before_revoking(ctx: Context) -> int | None:
    """The serial of the certificate the CA signed for this master, read from the host (the
    serial its PeCompileMaster recorded is in that resource's state, not here): the CRL
    checks after revoking need it. None when the CA has none or the host holds another."""
    entry = ca_entry(ctx)
    if entry is None:
        return None
    read_agent(ctx)
    found = host_serial(ctx, entry.fingerprint)
    return int(found) if found else None


# --- the removal's steps, per master ---------------------------------------------------


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
    plan = crl_refresh.plan(generation, list(peers))
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

    servers: dict[str, crl_refresh.Server] = {}
    # A restart or reload that began after this moment serves the new CRL (up to 2017.1 the
    # primary's run copies it first: the moment moves past that run).
    since = time.monotonic()
    with ExitStack() as stack:
        for step in plan:
            try:
                if step.server not in servers:
                    if step.server == crl_refresh.PRIMARY:
                        session = ctx.primary
                        certname = cfg.primary_certname
                    else:
                        target = peers[step.server].target
                        session = stack.enter_context(SshSession(target, cfg.connect_timeout, cfg.secrets))
                        certname = step.server
                    servers[step.server] = crl_refresh.Server(session, certname, generation, ctx.log, probe)
                crl_refresh.carry_out(
                    step,
                    servers[step.server],
                    serials,
                    serial_revoked,
                    cfg.run_timeout,
                    cfg.service_timeout,
                    since,
                    ca_crl=ca_crl,
                )
                if step.action == "run" and step.server == crl_refresh.PRIMARY:
                    since = time.monotonic()
            except ProviderError as exc:
                if step.server != crl_refresh.PRIMARY and not still_signed(step.server):
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
