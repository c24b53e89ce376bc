"""PeCompileMaster: one compile master of a PE deployment, as a dynamic resource.

Steps 2-4 of PE's "Additional Puppet Master Installation" for one host (install with
alt names, sign on the CA, first run, pin to the masters' group, the master's full run,
its 8140 health) - see provider/master/steps.py. The PuppetDB and console runs that
must follow belong to the deployment-wide InfraRefresh, once per batch.

Nothing is kept on the provider instance (it is pickled into the state): connections
are opened inside each call and closed at its end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from typing import Any

import pulumi
from pulumi import dynamic

from provider.core import inputs
from provider.core.access import DatabaseAccess, HostAccess, PrimaryAccess
from provider.core.errors import ClassifierError, ProviderError, SshUnreachableError, at_boundary
from provider.core.progress import progress, resource_inputs, without_provider
from provider.core.retirement import RETIREMENT
from provider.master import certificate, certs, context, handoff, runs, steps, verify
from provider.master import removal as master_removal
from provider.master.config import (
    DEFAULTS,
    LOCAL_ONLY_KEYS,
    REPLACE_KEYS,
    SECRET_KEYS,
    UPDATE_KEYS,
    MasterConfig,
    parse,
    problems,
    replaces_master,
    with_peer_mappings,
)
from provider.pe.classifier import is_pinned
from provider.ssh.session import SshSession

INPUT_KEYS = (*REPLACE_KEYS, *UPDATE_KEYS)
OUTPUT_KEYS = (
    "cert_fingerprint",
    "cert_serial",
    "sans",
    "group_id",
    "dialect",
    "status",
    "installed",
    "ca_fingerprint",
)


def _sessions(cfg: MasterConfig, stack: ExitStack) -> tuple[SshSession, SshSession]:
    host = stack.enter_context(SshSession(cfg.target, cfg.connect_timeout, cfg.secrets))
    primary = stack.enter_context(SshSession(cfg.primary_target, cfg.connect_timeout, cfg.secrets))
    return host, primary


def computed_outputs(olds: dict[str, Any]) -> dict[str, Any]:
    """What an update keeps from the old state: the outputs this provider computed, never
    old inputs - an input the program no longer sets must leave the state, or every later
    diff would see it again (Diff's olds are the old outputs)."""
    return {k: olds[k] for k in OUTPUT_KEYS if k in olds}


def provision(ctx: context.Context, drifted: bool = False) -> None:
    """The one provisioning path: provider/master/steps.py converge, every step checking first. A
    batch-provisioned master only verifies what CompileMasterBatch did (create takes what the
    batch verified in this process instead, provider/master/handoff.py) - unless the batch
    did not touch it: re-created after `refresh` dropped it (certificate revoked
    or gone), replaced (the batch leaves replacements to it), or drifted (refresh found it
    unpinned, its compile service stopped, its certificate re-issued). Then it converges
    itself, so whatever refresh reports, the next `up` repairs."""
    if not ctx.cfg.batch_provisioned or drifted:
        steps.converge(ctx)
        return
    try:
        verify.verify_ready(ctx)
    except SshUnreachableError:
        raise  # converging would meet the same closed door
    except ProviderError as exc:
        ctx.log("verify", f"not ready ({str(exc).splitlines()[0]}): converging it here")
        steps.converge(ctx)


def _outputs(
    props: dict[str, Any], cfg: MasterConfig, found: context.Context | handoff.Verified, status: str
) -> dict[str, Any]:
    """The state after a create or update: from what the steps found (a Context) or what
    CompileMasterBatch verified in this process (handoff.Verified)."""
    issued = found.issued
    return {
        **without_provider(props),
        "cert_fingerprint": issued.fingerprint if issued else props.get("cert_fingerprint", ""),
        "cert_serial": str(issued.serial) if issued else props.get("cert_serial", ""),
        "sans": sorted(issued.sans) if issued else props.get("sans", []),
        "group_id": found.group_id or props.get("group_id", ""),
        "dialect": cfg.generation.label,  # the output keeps its name: it is in existing stacks' state
        "status": status,
        "installed": {**(props.get("installed") or {}), **found.installed},
        "ca_fingerprint": certs.fingerprint_of_pem(found.ca_pem.encode())
        if found.ca_pem
        else props.get("ca_fingerprint", ""),
    }


def changed_inputs(olds: dict[str, Any], news: dict[str, Any]) -> list[str]:
    """The inputs diff and update both see as changed: peer entries compared as mappings
    (a state's full mappings and the program's "certname host" strings mean the same)."""
    return inputs.changed_keys(INPUT_KEYS, with_peer_mappings(olds), with_peer_mappings(news), DEFAULTS)


class PeCompileMasterProvider(dynamic.ResourceProvider):
    @at_boundary
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        failures = [dynamic.CheckFailure(prop, reason) for prop, reason in problems(news)]
        return dynamic.CheckResult(news, failures)

    @at_boundary
    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        """Inputs only (olds are the old outputs), and no remote call, ever."""
        changed = changed_inputs(olds, news)
        replaces = [k for k in changed if replaces_master(k, olds.get(k), news.get(k))]
        drifted = olds.get("status") not in (None, "running")  # refresh found drift: let `up` repair it
        return dynamic.DiffResult(
            changes=bool(changed) or drifted, replaces=replaces, delete_before_replace=True
        )  # a certname cannot exist twice

    @at_boundary
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        cfg = parse(props).valid()
        RETIREMENT.present(cfg.certname)
        verified = handoff.HANDOFF.take(cfg) if cfg.batch_provisioned and not cfg.adopt else None
        if verified is not None:
            progress(cfg.resource_name)(
                "verify",
                f"converged and verified by CompileMasterBatch {verified.age:.0f}s ago in this `pulumi up` "
                f"(certificate serial {verified.issued.serial} served on 8140, classified, running): not checked twice",
            )
            return dynamic.CreateResult(cfg.certname, _outputs(props, cfg, verified, "running"))
        with ExitStack() as stack:
            host, primary = _sessions(cfg, stack)
            database = None if cfg.adopt else context.database_session(cfg, stack, primary)
            ctx = context.Context(cfg, host, primary, progress(cfg.resource_name), database=database)
            if cfg.adopt:
                adopt(ctx)
            else:
                provision(ctx)
            return dynamic.CreateResult(cfg.certname, _outputs(props, cfg, ctx, "running"))

    @at_boundary
    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        cfg = MasterConfig.from_props(news)
        RETIREMENT.present(cfg.certname)
        changed = changed_inputs(olds, news)
        drifted = olds.get("status") not in (None, "running")
        if not drifted and all(k in LOCAL_ONLY_KEYS for k in changed):
            progress(cfg.resource_name)("update", f"{', '.join(changed) or 'nothing'} changed: no remote work needed")
            return dynamic.UpdateResult({**computed_outputs(olds), **without_provider(news)})
        with ExitStack() as stack:
            host, primary = _sessions(cfg, stack)
            database = context.database_session(cfg, stack, primary)
            ctx = context.Context(cfg, host, primary, progress(cfg.resource_name), database=database)
            if cfg.environmentpath and olds.get("environmentpath") != cfg.environmentpath:
                puppet = cfg.generation.puppet_bin  # never on a non-login shell's PATH as `puppet` alone
                setting = [puppet, "config", "set", "--section", "main", "environmentpath", cfg.environmentpath]
                host.run(setting, timeout=120).check("set environmentpath")
            provision(ctx, drifted)
            merged = {**computed_outputs(olds), **news}
            return dynamic.UpdateResult(_outputs(merged, cfg, ctx, "running"))

    @at_boundary
    def read(self, id_: str, props: dict[str, Any]) -> dynamic.ReadResult:
        """Report drift without changing anything; an id of "" (cert gone) drops it."""
        cfg = MasterConfig.from_props(props)
        log = progress(cfg.resource_name)
        with ExitStack() as stack:
            host, primary = _sessions(cfg, stack)
            ctx = context.Context(cfg, host, primary, log)
            entry = context.ca_entry(ctx)
            if entry is None or entry.state != "signed":
                log(
                    "refresh",
                    f"certificate {'missing' if entry is None else entry.state} on the CA: "
                    "the master is gone; the next `up` creates it again",
                )
                return dynamic.ReadResult("", {})
            drift = []
            if props.get("cert_fingerprint") and entry.fingerprint != props["cert_fingerprint"]:
                drift.append("certificate re-issued")
            context.read_agent(ctx)
            serial = context.host_serial(ctx, entry.fingerprint) or props.get("cert_serial", "")
            context.fetch_ca_pem(ctx)
            drift += classification_drift(ctx)
            up, _, _ = verify.compile_service_probe(ctx, ctx.agent.get("localcacert", ""))
            if not up:
                drift.append("compile service not running")
            elif cfg.generation.compiler_puppetdb:
                up, last = verify.compiler_puppetdb_probe(ctx, ctx.agent.get("localcacert", ""))
                if not up:
                    drift.append(f"compiler PuppetDB not running ({last[:80]})")
            status = "running" if not drift else "drifted: " + "; ".join(drift)
            if drift:
                log("refresh", status)
            current = {"status": status, "cert_fingerprint": entry.fingerprint, "cert_serial": serial}
            return dynamic.ReadResult(id_, {**props, **current})

    @at_boundary
    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """Drain comes first (its PoolMember is deleted before it); see master_removal."""
        cfg = MasterConfig.from_props(props)
        serial = int(props["cert_serial"]) if str(props.get("cert_serial") or "").isdigit() else None
        master_removal.delete(cfg, serial)


def classification_drift(ctx: context.Context) -> list[str]:
    cfg = ctx.cfg
    generation = cfg.generation
    try:
        with ctx.classifier().opened() as classifier:
            group = classifier.group_by_name(generation.node_group)
            if generation.classification != "trusted" and not is_pinned(group.get("rule"), cfg.certname):
                return [f"not pinned to {generation.node_group}"]
            master = (group.get("classes") or {}).get(runs.MASTER_CLASS) or {}
            unset = [f"{k}={v}" for k, v in generation.master_class_params if master.get(k) != v]
            if unset:
                return [f"{generation.node_group}'s {runs.MASTER_CLASS} lacks {', '.join(unset)}"]
    except ClassifierError as exc:
        return [f"classification unknown ({exc})"]
    return []


def adopt(ctx: context.Context) -> None:
    """Take over an existing healthy master: verify, never reinstall or re-sign."""
    cfg = ctx.cfg
    context.read_agent(ctx)
    if ctx.agent.get("certname") != cfg.certname:
        raise ProviderError(
            f"[{cfg.host}] adopt: the host's agent certname is {ctx.agent.get('certname')!r}, not {cfg.certname!r}"
        )
    entry = context.ca_entry(ctx)
    if entry is None or entry.state != "signed":
        raise ProviderError(f"[{cfg.primary_host}] adopt: {cfg.certname} has no signed certificate on the CA")
    context.fetch_ca_pem(ctx)
    certificate.verify_certificate(ctx)
    drift = classification_drift(ctx)
    if drift:
        raise ProviderError(f"adopt: {cfg.certname} is {drift[0]}: adopt takes over healthy masters only")
    with ctx.classifier().opened() as classifier:
        ctx.group_id = str(classifier.group_by_name(cfg.generation.node_group)["id"])
    verify.compile_service(ctx)
    verify.compiler_puppetdb(ctx)  # PE 2019.7+: a healthy compiler's own PuppetDB runs
    ctx.log("adopt", "healthy master taken over without reinstalling")


class SharedMasterArgs(PrimaryAccess, DatabaseAccess, total=False):
    """The inputs every master of a deployment shares (also CompileMasterBatch's)."""

    ssh_private_key: pulumi.Input[str]
    primary_certname: pulumi.Input[str]
    pe_version: pulumi.Input[str]
    classifier_url: pulumi.Input[str]
    rbac_token: pulumi.Input[str]
    classifier_client_cert: pulumi.Input[str]
    classifier_client_key: pulumi.Input[str]
    puppetdb_url: pulumi.Input[str]
    node_group: pulumi.Input[str]
    connect_timeout: pulumi.Input[float]
    install_timeout: pulumi.Input[float]
    sign_timeout: pulumi.Input[float]
    run_timeout: pulumi.Input[float]
    service_timeout: pulumi.Input[float]
    api_timeout: pulumi.Input[float]


class PeCompileMasterArgs(SharedMasterArgs, HostAccess, total=False):
    """The inputs (see docs/resources/pe-compile-master.md); validated in check()."""

    certname: pulumi.Input[str]
    dns_alt_names: pulumi.Input[Sequence[pulumi.Input[str]]]
    environmentpath: pulumi.Input[str]
    availability_group: pulumi.Input[str]  # peadm's "A" or "B"
    keep_agent_on_delete: pulumi.Input[bool]
    adopt: pulumi.Input[bool]
    batch_provisioned: pulumi.Input[bool]
    # the deployment's other masters: {certname, host, ssh_port, ssh_user[, ssh_host_key]}
    peer_masters: pulumi.Input[Sequence[pulumi.Input[Mapping[str, Any]]]]


class PeCompileMaster(dynamic.Resource):
    """A compile master of PE. Inputs: see docs/resources/pe-compile-master.md; secrets
    (ssh_private_key, primary_ssh_private_key, database_ssh_private_key, rbac_token,
    classifier_client_key) are wrapped as Pulumi secrets here, so they stay secret in state."""

    certname: pulumi.Output[str]
    cert_fingerprint: pulumi.Output[str]
    cert_serial: pulumi.Output[str]
    sans: pulumi.Output[list[str]]
    group_id: pulumi.Output[str]
    dialect: pulumi.Output[str]
    status: pulumi.Output[str]
    installed: pulumi.Output[dict[str, Any]]
    ca_fingerprint: pulumi.Output[str]

    def __init__(self, name: str, props: PeCompileMasterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        inputs = resource_inputs(name, dict(props), SECRET_KEYS, OUTPUT_KEYS)
        options = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(delete_before_replace=True))
        super().__init__(PeCompileMasterProvider(), name, inputs, options)
