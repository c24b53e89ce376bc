"""What CompileMasterBatch converged and verified in this provider process, handed to each
master's own PeCompileMaster create (batch_provisioned) so that create does not open two
more SSH connections and check the same things a second time.

Why it is safe: converge() ends each master with its own verifications - the host's
certificate is the one the CA signed, with the requested SANs and extensions (step 'verify
certificate'); the classifier puts it in the masters' group (step 'classify', asked after
the pin); 8140 serves exactly that certificate under its certname and says running (step
'compile service'); from PE 2019.7 its own PuppetDB says running - the same checks
verify.verify_ready makes, by the step that made each change. The batch fails as a whole if
any master fails, so a create that finds a record here follows a batch call that succeeded
in this same `pulumi up` (the engine starts one provider process per operation). What
comes after still gates the pool: InfraRefresh's runs, then PoolAdmission admits a member
only once the load balancer's own health check passes on it.

A record is used once, and only by a PeCompileMaster whose inputs name the same master:
certname, host and SSH user and port, alt names, availability group, environmentpath,
primary, PE version, node group, classifier and PuppetDB. Anything else - a master the batch
did not touch in this process (re-created after a refresh dropped it, replaced, adopted) -
is verified as before. Nothing here is persisted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from provider.master.certs import IssuedCert
from provider.master.config import MasterConfig
from provider.master.context import Context


def identity(cfg: MasterConfig) -> tuple[Any, ...]:
    """What makes two configs the same master on the same deployment (a change of any of
    these replaces or updates the master); secrets, deadlines and peers are left out."""
    database = cfg.database_target
    return (
        cfg.certname,
        (cfg.target.host, cfg.target.port, cfg.target.user),
        tuple(sorted(cfg.dns_alt_names)),
        cfg.availability_group,
        cfg.environmentpath,
        (cfg.primary_target.host, cfg.primary_target.port, cfg.primary_target.user),
        cfg.primary_certname,
        (database.host, database.port, database.user) if database else None,
        cfg.pe_version,
        cfg.node_group,
        cfg.classifier_url,
        cfg.puppetdb_url,
    )


@dataclass(frozen=True)
class Verified:
    """One master as the batch's converge left it: what its PeCompileMaster reports."""

    identity: tuple[Any, ...]
    issued: IssuedCert
    group_id: str
    ca_pem: str
    installed: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)

    @property
    def age(self) -> float:
        return time.monotonic() - self.at


class Handoff:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._verified: dict[str, Verified] = {}

    def record(self, ctx: Context) -> None:
        """After converge(ctx) returned: what it verified. A context without the certificate,
        the group or the CA (a converge that did not reach its checks) records nothing."""
        if ctx.issued is None or not ctx.group_id or not ctx.ca_pem:
            return
        verified = Verified(identity(ctx.cfg), ctx.issued, ctx.group_id, ctx.ca_pem, dict(ctx.installed))
        with self._lock:
            self._verified[ctx.cfg.certname] = verified

    def forget(self, certname: str) -> None:
        """A converge of this master started (or failed): an older record no longer holds."""
        with self._lock:
            self._verified.pop(certname, None)

    def take(self, cfg: MasterConfig) -> Verified | None:
        """The batch's record for this master, once; None when there is none or it names
        another master (then the caller verifies the host itself)."""
        with self._lock:
            verified = self._verified.pop(cfg.certname, None)
        if verified is None or verified.identity != identity(cfg):
            return None
        return verified


HANDOFF = Handoff()
