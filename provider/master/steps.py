"""PeCompileMaster's steps: each checks the current state, acts only if needed, verifies.

A step is a function `(ctx) -> None` run in order by `converge()` (create and update) or
`remove()` (delete). Every remote wait has a deadline from the inputs; every step is
safe to repeat, so re-running after a failure - or after the process was killed - resumes
instead of duplicating. Progress lines are `[<resource>] <step>: <what happened>`.

The phases live in their own modules, in PE's order: install (the agent), certificate,
classify, runs, verify; database (PE 2019.7+'s pg_ident lines) and removal (delete) beside
them; context holds what they share, agent and certs the pure parts.
"""

from __future__ import annotations

from collections.abc import Callable

from provider.core.errors import AGAIN, ProviderError, SshUnreachableError, StepFailedError
from provider.master.certificate import sign_certificate, verify_certificate
from provider.master.classify import availability_preflight, classify
from provider.master.context import Context
from provider.master.database import grant_database_access
from provider.master.install import install_agent, preflight, restore_agent_service, stop_agent_service
from provider.master.runs import first_run, master_run
from provider.master.verify import PUPPETDB_LOG, compile_service, compiler_puppetdb

CREATE_STEPS: tuple[tuple[str, Callable[[Context], None]], ...] = (
    ("install", install_agent),
    ("sign", sign_certificate),
    ("verify certificate", verify_certificate),
    ("database access", grant_database_access),  # PE 2019.7+ only (peadm add_compiler.pp: before the run)
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
