"""What every phase of a compile master's procedure shares: the Context (the host's, the
primary's and the database host's sessions, and what the steps learn along the way) and
the reads several phases make (the agent's settings, the CA's entry, the CA certificate)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from provider.core.command import CommandResult
from provider.core.errors import ProviderError
from provider.master.agent import AGENT_SETTINGS, agent_probe_paths, agent_settings
from provider.master.certs import IssuedCert
from provider.master.config import MasterConfig
from provider.pe import agent_runs, ca
from provider.pe.agent_runs import RUN_LOCK_SETTING
from provider.pe.classifier import Classifier, ClassifierAuth
from provider.pe.generation import Generation
from provider.pe.primary import Primary
from provider.ssh.session import SshSession


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


def read_agent(ctx: Context) -> dict[str, str]:
    """The host's agent settings, {} when there is no agent (see agent_settings)."""
    generation = ctx.cfg.generation
    paths = agent_probe_paths(generation)
    probe = ctx.host.run(agent_runs.probe_script(paths), timeout=60)
    probe.check("look for the Puppet agent")
    found = agent_runs.parse_probe(probe.stdout, paths)
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
    return agent_runs.agent_run(session, step, timeout, ctx.log, lock, ctx.cfg.generation.puppet_bin)


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
