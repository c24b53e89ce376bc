"""CompileMasterBatch: the long work of a set of compile masters in ONE provider call.

Why it exists: the SDK's dynamic provider server runs at most 4 calls at once for every
dynamic resource of a deployment. With install + sign + two agent runs inside each
master's own create, 16 masters would run in 4 waves. This resource runs PeCompileMaster's
steps (provider/master/steps.py, unchanged: every step checks first) for all masters that
are new or changed, in threads, inside one create/update call - one SSH connection per
master host and one shared connection to the primary (and, PE 2019.7+, to PE-PostgreSQL's
host). Each master's own PeCompileMaster (with `batch_provisioned`) keeps per-master
previews readable; its create reports what this call verified at the end of the master's
converge (provider/master/handoff.py), or verifies the host itself when this call did not
converge it.

Failure is honest: if any master fails, the call fails and lists every failing master
with its step and error; the others' work is kept (idempotent) and the next `up` resumes.
Removing masters is not this resource's job: each PeCompileMaster's delete does it.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import pulumi
from pulumi import dynamic

from provider.compile_master import SharedMasterArgs
from provider.core import inputs
from provider.core.batch_inputs import BatchProvider, EntryList
from provider.core.errors import ProviderError, at_boundary, brief_message
from provider.core.progress import emit, progress, resource_inputs, without_provider
from provider.core.retirement import RETIREMENT
from provider.master import context, handoff, steps
from provider.master.config import LOCAL_ONLY_KEYS, REPLACE_KEYS, SECRET_KEYS, MasterConfig, problems, replaces_master
from provider.pe.primary import Primary
from provider.ssh.session import SshSession

# Per-master keys in each entry of `masters`; every other PeCompileMaster input is shared.
MASTER_KEYS = (
    "certname",
    "host",
    "ssh_port",
    "ssh_user",
    "ssh_host_key",
    "ssh_known_hosts",
    "dns_alt_names",
    "environmentpath",
    "availability_group",
)
OUTPUT_KEYS = ("status", "provisioned", "converged_now")
DEFAULT_PARALLELISM = 16


MASTERS = EntryList(
    list_key="masters",
    name_key="certname",
    entry_keys=MASTER_KEYS,
    own_keys=("parallelism", *OUTPUT_KEYS),
    local_only_keys=LOCAL_ONLY_KEYS,
    default_name="batch",
    replace_keys=REPLACE_KEYS,
    replaces=replaces_master,
)
master_props = MASTERS.item_props
to_converge = MASTERS.to_converge


PLACEHOLDER_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOEowio8pRLYoxQ+/rTQ7Pf6XFR87vdEcZZT0yAY9UM+"


def renamed_on_same_host(olds: dict[str, Any], news: dict[str, Any]) -> list[tuple[str, str]]:
    """A master whose certname changes on the same host (SSH address and port) is refused:
    resources are named by certname, so the engine would install the new identity (in this
    batch, first) while the old one still holds the host and its pool member (deleted only
    at the end of the `up`) - and the old agent makes the host look foreign."""
    before: dict[tuple[Any, Any], set[str]] = {}
    for e in MASTERS.entries(olds):
        before.setdefault((e.get("host"), e.get("ssh_port", 22)), set()).add(str(e.get("certname")))
    entries = [e for e in MASTERS.entries(news) if isinstance(e, dict)]
    names = {e.get("certname") for e in entries}
    known = {name for names_on_host in before.values() for name in names_on_host}
    out = []
    for i, entry in enumerate(MASTERS.entries(news)):
        if not isinstance(entry, dict) or entry.get("certname") in known:
            continue
        gone = sorted(before.get((entry.get("host"), entry.get("ssh_port", 22)), set()) - names)
        if gone:
            old = gone[0]
            out.append(
                (
                    f"masters[{i}].certname",
                    f"{entry.get('host')} is compile master {old} in this stack; a new certname on the same host "
                    f"({entry.get('certname')}) is not done in one `pulumi up`. Remove {old} from the stack config "
                    "and run `pulumi up` (it is drained, revoked and uninstalled), then add the host again as "
                    f"{entry.get('certname')} and run `pulumi up`.",
                )
            )
    return out


def batch_problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    # With no masters (a stack scaled to zero) the shared inputs are checked against a
    # stand-in entry: a host and certname, and a pinned key that is never used.
    placeholder = {"host": "x", "certname": "x", "ssh_host_key": PLACEHOLDER_HOST_KEY}
    out = MASTERS.problems(props, problems, placeholder=placeholder)
    if not isinstance(props.get("masters"), list):  # nothing more to say
        return out
    parallelism = props.get("parallelism", DEFAULT_PARALLELISM)
    if isinstance(parallelism, bool) or not isinstance(parallelism, (int, float)) or not 1 <= parallelism <= 64:
        out.append(("parallelism", f"parallelism must be 1-64, not {parallelism!r}"))
    return out


class CompileMasterBatchProvider(BatchProvider):
    ENTRIES = MASTERS

    @at_boundary
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        found = batch_problems(news) or renamed_on_same_host(olds, news)
        return dynamic.CheckResult(news, [dynamic.CheckFailure(p, r) for p, r in found])

    @at_boundary
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        inputs.require_valid(props, batch_problems)
        RETIREMENT.stack_changed({}, [e["certname"] for e in MASTERS.entries(props)])
        done = converge_all(props, MASTERS.entries(props))
        return dynamic.CreateResult("compile-master-batch", self.outputs(props, done))

    @at_boundary
    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        # Updates run before deletes: the masters leaving the config are known to their deletes.
        staying = {e["certname"] for e in MASTERS.entries(news)}
        leaving = {e["certname"]: master_props(olds, e) for e in MASTERS.entries(olds) if e["certname"] not in staying}
        RETIREMENT.stack_changed(leaving, staying)
        todo, replaced = MASTERS.converge_plan(olds, news)
        if replaced:
            _say(
                str(news.get("resource_name") or "batch"),
                f"{', '.join(replaced)}: replaced by the engine (pool member drained first), provisioned by its "
                "own PeCompileMaster",
            )
        done = converge_all(news, todo)
        return dynamic.UpdateResult(self.outputs(news, done))

    @staticmethod
    def outputs(props: dict[str, Any], done: list[str]) -> dict[str, Any]:
        certnames = sorted(e["certname"] for e in MASTERS.entries(props))
        return {
            **without_provider(props),
            "status": "provisioned",
            "provisioned": certnames,
            "converged_now": sorted(done),
        }


def converge_all(props: dict[str, Any], entries: list[dict[str, Any]]) -> list[str]:
    """steps.converge for each entry, at most `parallelism` at once, sharing one primary
    connection. Raises one ProviderError naming every master that failed."""
    name = str(props.get("resource_name") or "batch")
    if not entries:
        _say(name, "nothing to provision (no new or changed masters)")
        return []
    configs = [MasterConfig.from_props(master_props(props, e)) for e in entries]
    first = configs[0]
    parallelism = int(props.get("parallelism") or DEFAULT_PARALLELISM)
    started = time.monotonic()
    _say(name, f"provisioning {len(configs)} master(s), {min(parallelism, len(configs))} at a time")
    errors: dict[str, str] = {}
    lock = threading.Lock()
    with ExitStack() as stack:
        primary = stack.enter_context(SshSession(first.primary_target, first.connect_timeout, first.secrets))
        # One view of the CA for every thread: its settings and certificate are read once.
        shared_ca = Primary(primary, first.generation, first.primary_certname)
        # PE 2019.7+: one connection to PE-PostgreSQL's host for every thread, like the primary's
        # (the same one when the primary holds the database); opened before any master's work.
        database = context.database_session(first, stack, primary)

        def one(cfg: MasterConfig) -> None:
            log = progress(cfg.resource_name)
            handoff.HANDOFF.forget(cfg.certname)
            try:
                with SshSession(cfg.target, cfg.connect_timeout, cfg.secrets) as host:
                    ctx = context.Context(cfg, host, primary, log, ca=shared_ca, database=database)
                    steps.converge(ctx)
                handoff.HANDOFF.record(ctx)  # its PeCompileMaster's create reports it (handoff.py)
            except Exception as exc:  # collected: one master's failure must not hide the others'
                with lock:
                    errors[cfg.certname] = brief_message(exc)

        with ThreadPoolExecutor(min(parallelism, len(configs))) as pool:
            list(pool.map(one, configs))
    if errors:
        raise ProviderError(
            f"{len(errors)} of {len(configs)} masters could not be provisioned (the others are done and are kept):\n"
            + "".join(f"- {c}: {e}\n" for c, e in sorted(errors.items()))
            + "Fix the cause and run `pulumi up` again; finished steps are not repeated."
        )
    _say(name, f"{len(configs)} master(s) provisioned in {time.monotonic() - started:.1f}s")
    return [c.certname for c in configs]


def _say(name: str, message: str) -> None:
    emit(f"[{name}] batch: {message}")


class CompileMasterBatchArgs(SharedMasterArgs, total=False):
    """PeCompileMaster's shared inputs (primary, PE version, classifier, deadlines) plus
    `masters`: a list of {certname, host, ssh_port, ssh_user, ssh_host_key,
    ssh_known_hosts, dns_alt_names, environmentpath, availability_group}."""

    masters: pulumi.Input[list[pulumi.Input[dict[str, Any]]]]
    parallelism: pulumi.Input[int]


class CompileMasterBatch(dynamic.Resource):
    """Provisions a set of compile masters in one call; keys and tokens stay secret."""

    status: pulumi.Output[str]
    provisioned: pulumi.Output[list[str]]

    def __init__(self, name: str, props: CompileMasterBatchArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        args = resource_inputs(name, dict(props), SECRET_KEYS, OUTPUT_KEYS)
        super().__init__(CompileMasterBatchProvider(), name, args, opts)
