"""Phase 3, classification: pin the master to PE Master (a rule rewrite before PE 2016.1,
the pin endpoint after), or from 2019.7 let PE Compiler match its pp_auth_role; on installs
built with peadm, check the availability group's child group takes it."""

from __future__ import annotations

from typing import Any

from provider.core.errors import AvailabilityGroupError, ClassifierError
from provider.master.agent import trusted_facts
from provider.master.context import Context, fetch_ca_pem
from provider.master.runs import MASTER_CLASS
from provider.pe.classifier import Classifier

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
