"""PoolAdmission: the 8140 pool's new members added and health-gated in ONE provider call.

Why it exists: the SDK's dynamic provider server runs at most 4 calls at once. With the
health gate inside each PoolMember's create, 16 members wait for their checks in 4 waves.
This resource adds every new or changed member, waits for all of their health checks
together (one poll of HAProxy per second) and saves them in one configuration edit
(`pool_member.admit`, the code PoolMember itself runs). Each member's own PoolMember
then finds its server UP and saved and returns at once, so per-member previews, drift
reports and deletes (drain, remove) stay per member.

Failure is honest: a member that is not healthy by the deadline is taken out again if
this call added it, and the call fails naming every such member; the healthy ones stay
UP and saved, and their PoolMembers are not created until the next `up` resumes. A
member whose name the pool holds at another endpoint (an address change: PoolMember
replaces it, removing the old one first) is left to its PoolMember.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi import dynamic

from provider.core import inputs
from provider.core.batch_inputs import BatchProvider, EntryList
from provider.core.errors import ProviderError, at_boundary
from provider.core.progress import emit, progress, resource_inputs, without_provider
from provider.pool_member import LOCAL_ONLY_KEYS, SECRET_KEYS, MemberConfig, PoolMemberArgs, admit, problems

# Per-member keys in each entry of `members`; every other PoolMember input is shared.
MEMBER_KEYS = ("server_name", "address", "port", "weight")
OUTPUT_KEYS = ("status", "admitted", "admitted_now")


MEMBERS = EntryList(
    list_key="members",
    name_key="server_name",
    entry_keys=MEMBER_KEYS,
    own_keys=OUTPUT_KEYS,
    local_only_keys=LOCAL_ONLY_KEYS,
    default_name="pool-admission",
)
member_props = MEMBERS.item_props
to_admit = MEMBERS.to_converge


def admission_problems(props: dict[str, Any]) -> list[tuple[str, str]]:
    return MEMBERS.problems(props, problems, placeholder={"server_name": "x", "address": "x"})


def admit_all(props: dict[str, Any], entries: list[dict[str, Any]]) -> list[str]:
    """`admit` for the entries over one SSH connection to the load balancer; raises one
    ProviderError naming every member that did not turn healthy."""
    name = str(props.get("resource_name") or "pool-admission")
    if not entries:
        emit(f"[{name}] admission: no new or changed members")
        return []
    configs = [MemberConfig.from_props(member_props(props, e)) for e in entries]
    first = configs[0]
    loggers = {c.spec.server: progress(c.resource_name) for c in configs}
    emit(f"[{name}] admission: adding {len(configs)} member(s) and waiting for their health checks together")
    with first.session() as session:
        result = admit(first.driver_on(session), [c.spec for c in configs], first.health_timeout, lambda s: loggers[s])
    for server, conflict in sorted(result.conflicts.items()):
        loggers[server]("add", f"left to its PoolMember (being replaced): {conflict}")
    if result.failed:
        raise ProviderError(
            f"{len(result.failed)} of {len(configs)} pool members did not turn healthy (the "
            f"{len(result.healthy)} healthy ones are UP and saved; what this call added for the others was removed):\n"
            + "".join(f"- {server}: {error}\n" for server, error in sorted(result.failed.items()))
        )
    return sorted(result.healthy)


class PoolAdmissionProvider(BatchProvider):
    ENTRIES = MEMBERS

    @at_boundary
    def check(self, _olds: dict[str, Any], news: dict[str, Any]) -> dynamic.CheckResult:
        return dynamic.CheckResult(news, [dynamic.CheckFailure(p, r) for p, r in admission_problems(news)])

    @at_boundary
    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        inputs.require_valid(props, admission_problems)
        done = admit_all(props, MEMBERS.entries(props))
        return dynamic.CreateResult("pool-admission", self.outputs(props, done))

    @at_boundary
    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(self.outputs(news, admit_all(news, to_admit(olds, news))))

    @staticmethod
    def outputs(props: dict[str, Any], done: list[str]) -> dict[str, Any]:
        return {
            **without_provider(props),
            "status": "admitted",
            "admitted": sorted(e["server_name"] for e in MEMBERS.entries(props)),
            "admitted_now": done,
        }


class PoolAdmissionArgs(PoolMemberArgs, total=False):
    """PoolMember's shared inputs (load balancer, backend, checks, deadlines) plus
    `members`: a list of {server_name, address, port, weight}."""

    members: pulumi.Input[list[pulumi.Input[dict[str, Any]]]]


class PoolAdmission(dynamic.Resource):
    """Adds and health-gates a set of pool members in one call; the LB key stays secret."""

    status: pulumi.Output[str]
    admitted: pulumi.Output[list[str]]

    def __init__(self, name: str, props: PoolAdmissionArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(
            PoolAdmissionProvider(), name, resource_inputs(name, dict(props), SECRET_KEYS, OUTPUT_KEYS), opts
        )
