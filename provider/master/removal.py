"""Removing compile masters: PeCompileMaster's delete, for its own master and - when it is
the first delete call to run - every other master leaving the stack whose pool member is
already drained (provider/core/retirement.py says which, and why the engine's delete order
makes that safe).

Each master, in threads: unpin (one classifier write at a time: before PE 2018.1 a pin
is a rule rewrite with no serial_number to refuse a lost update), revoke + clean on the
CA and check the CRL, remove its PE-PostgreSQL access (2019.7+), deactivate in PuppetDB.
Then ONE CRL refresh on the masters that stay, for every revoked serial (a peer leaving
in this `up` is skipped), then each host's uninstall. Every step checks first, so a
removal that failed half-way is finished by the next `up`.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from provider.core.errors import DeadlineError, ProviderError, SshUnreachableError
from provider.core.progress import progress
from provider.core.retirement import RETIREMENT, Removal
from provider.master import steps
from provider.master.config import MasterConfig
from provider.pe import database_access as pgident
from provider.pe.primary import Primary
from provider.ssh.session import SshSession


@dataclass
class Leaving:
    """One master to remove: its inputs and the serial its state recorded (None: read
    from the host before revoking, or unknown)."""

    cfg: MasterConfig
    serial: int | None
    host: SshSession | None = None
    ctx: steps.Context | None = None


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
    classifier_lock = threading.Lock()
    with ExitStack() as stack:
        primary = stack.enter_context(SshSession(lead.primary_target, lead.connect_timeout, lead.secrets))
        try:  # before anything changes: the compilers' pg_ident.conf lines must go too (PE 2019.7+)
            database = steps.database_session(lead, stack, primary)
        except SshUnreachableError as exc:
            raise ProviderError(
                f"[{lead.database_host}] delete: the database host is unreachable ({exc}); {lead.certname}'s "
                f"{pgident.IDENT_FILE} lines must be removed there, so nothing was changed. Make it reachable "
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
            ctx = steps.Context(cfg, member.host or primary, primary, mlog, ca=shared_ca, database=database)
            member.ctx = ctx
            steps.fetch_ca_pem(ctx)
            if member.serial is None and member.host is not None:
                member.serial = serial_before_revoking(ctx)
            with classifier_lock:
                steps.unclassify(ctx)
            steps.revoke_and_clean(ctx, member.serial)
            steps.run_step(ctx, "remove database access", steps.remove_database_access)  # PE 2019.7+
            steps.deactivate_in_puppetdb(ctx)

        each(take_out, group)
        revoked = [m for m in group if m.cfg.certname not in errors]
        if not revoked:
            return errors
        # The masters left refuse the revoked certificates: one refresh for the group, through
        # the lead's peer list (its state names every master of the deployment).
        refresh = steps.Context(lead, primary, primary, log, ca=shared_ca, database=database)
        leaving = {m.cfg.certname for m in group} | RETIREMENT.leaving()
        serials = [m.serial for m in revoked if m.serial is not None]
        try:
            steps.refresh_crl(refresh, serials, leaving)
        except ProviderError as exc:
            for m in revoked:
                errors[m.cfg.certname] = exc
            return errors
        each(uninstall, [m for m in revoked if m.host is not None])
    return errors


def uninstall(member: Leaving) -> None:
    assert member.ctx is not None
    steps.uninstall_agent(member.ctx)


def serial_before_revoking(ctx: steps.Context) -> int | None:
    """The serial of the certificate the CA signed for this master, read from the host (the
    serial its PeCompileMaster recorded is in that resource's state, not here): the CRL
    checks after revoking need it. None when the CA has none or the host holds another."""
    entry = steps.ca_entry(ctx)
    if entry is None:
        return None
    steps.read_agent(ctx)
    found = steps.host_serial(ctx, entry.fingerprint)
    return int(found) if found else None
