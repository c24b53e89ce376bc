"""Input helpers every resource shares: unknown values in preview, defaults, and the
SSH access inputs (host, port, user, key, pinned host key or known_hosts) under a prefix.

A resource names its SSH inputs `<prefix>_port`, `<prefix>_user`, `<prefix>_private_key`,
`<prefix>_host_key`, `<prefix>_known_hosts` next to a host input (`host`, `primary_host`,
`lb_host`), so the same checks and the same SshTarget come out for all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pulumi.output import Unknown
from pulumi.runtime.rpc import UNKNOWN

from provider.core import validation
from provider.core.errors import ProviderError
from provider.ssh.trust import SshTarget, host_key_lines, pinned_keys


def is_unknown(value: Any) -> bool:
    """A value the engine does not know yet (preview of a value computed during `up`)."""
    return isinstance(value, Unknown) or value == UNKNOWN


def known(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if not is_unknown(v)}


def with_defaults(defaults: dict[str, Any], props: dict[str, Any]) -> dict[str, Any]:
    return {**defaults, **{k: v for k, v in props.items() if v is not None}}


def required_problems(props: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(k, f"{k} is required") for k in keys if not is_unknown(props.get(k)) and not props.get(k)]


def ssh_input_keys(host_key: str, prefix: str) -> tuple[str, ...]:
    """A host's input keys: `<host_key>` and `<prefix>_port/_user/_private_key/_host_key/
    _known_hosts` (what ssh_target reads)."""
    return (host_key, *(f"{prefix}_{k}" for k in ("port", "user", "private_key", "host_key", "known_hosts")))


def ssh_defaults(prefix: str) -> dict[str, Any]:
    return {f"{prefix}_port": 22, f"{prefix}_user": "root", f"{prefix}_host_key": "", f"{prefix}_known_hosts": ""}


def ssh_target(merged: dict[str, Any], prefix: str, host_key: str) -> SshTarget:
    return SshTarget(
        str(merged[host_key]),
        int(merged[f"{prefix}_port"]),
        str(merged[f"{prefix}_user"]),
        str(merged[f"{prefix}_private_key"]),
        str(merged[f"{prefix}_host_key"]),
        str(merged[f"{prefix}_known_hosts"]),
    )


def ssh_problems(props: dict[str, Any], prefix: str, host_key: str) -> list[tuple[str, str]]:
    """Host, port and user syntax, and a pinned host key (or a known_hosts entry) for the host."""
    out: list[tuple[str, str]] = []
    present = known(props)
    merged = with_defaults(ssh_defaults(prefix), present)

    def add(key: str, error: str | None) -> None:
        if error:
            out.append((key, error))

    if present.get(host_key):
        add(host_key, validation.host_error(present[host_key], host_key))
    add(f"{prefix}_port", validation.port_error(merged[f"{prefix}_port"], f"{prefix}_port"))
    add(f"{prefix}_user", validation.user_error(merged[f"{prefix}_user"], f"{prefix}_user"))
    pinned, known_hosts = props.get(f"{prefix}_host_key"), props.get(f"{prefix}_known_hosts")
    if is_unknown(pinned) or is_unknown(known_hosts):
        return out
    key_name = f"{prefix}_host_key"
    if not pinned and not known_hosts:
        out.append(
            (
                key_name,
                f"{key_name} (pinned 'ssh-ed25519 AAAA...') or {prefix}_known_hosts is required: "
                "host keys are pinned, never accepted blindly",
            )
        )
        return out
    host = props.get(host_key)
    port = merged[f"{prefix}_port"]
    if host and not is_unknown(host) and validation.port_error(port) is None:
        try:
            target = SshTarget(str(host), int(port), "x", "", str(pinned or ""), str(known_hosts or ""))
            if not host_key_lines(target):
                out.append((f"{prefix}_known_hosts", f"{prefix}_known_hosts has no entry for {host}"))
        except (ValueError, TypeError) as exc:
            out.append((key_name, f"{key_name} is not a public key line: {exc}"))
    return out


def inherit_access(entry: dict[str, Any], parent: dict[str, Any]) -> dict[str, Any]:
    """An entry of a list input (PeCompileMaster's peer_masters) with what it leaves out -
    ssh_port, ssh_user, and with neither pinned key nor known_hosts, ssh_known_hosts - taken
    from its parent's inputs. A null value is left out."""
    out = {k: v for k, v in entry.items() if v is not None}
    for key in ("ssh_port", "ssh_user"):
        if key not in out and parent.get(key) is not None:
            out[key] = parent[key]
    if not out.get("ssh_host_key") and not out.get("ssh_known_hosts") and parent.get("ssh_known_hosts"):
        out["ssh_known_hosts"] = parent["ssh_known_hosts"]
    return out


def trust_view(props: dict[str, Any], parent: dict[str, Any] | None = None) -> dict[str, Any]:
    """`props` with each `<prefix>_known_hosts` text reduced to the keys it pins for its host
    (`<x>_ssh_known_hosts` for `<x>_host`, `ssh_known_hosts` for `host`), in entry lists too,
    for diffs: what a connection trusts is the input, not the file's other lines. So a host
    key added for a new master, or a state written when every input carried the whole file,
    is no change. An entry with a host takes what it leaves out - ssh_port, ssh_user, and
    with neither pinned key nor known_hosts, ssh_known_hosts - from its parent's inputs
    (PeCompileMaster's peer_masters, as PeerMaster does), so an entry written out in full
    (every state before 2026-12-02) and one that leaves them out are the same."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        if isinstance(value, list):
            value = [trust_view(v, props) if isinstance(v, dict) else v for v in value]
        out[key] = value
    if parent is not None and out.get("host"):
        out = inherit_access(out, parent)
    for key, value in list(out.items()):
        prefix = key[: -len("_known_hosts")]
        if not key.endswith("ssh_known_hosts") or not isinstance(value, str) or not value:
            continue
        host, port = out.get(prefix[: -len("ssh")] + "host"), out.get(f"{prefix}_port", 22)
        if isinstance(host, str) and host and validation.port_error(port) is None:
            out[key] = "\n".join(pinned_keys(value, host, int(port)))
    return out


def changed_keys(
    keys: tuple[str, ...] | list[str], olds: dict[str, Any], news: dict[str, Any], defaults: dict[str, Any]
) -> list[str]:
    """The inputs that differ, as a provider's diff and update both compare them: a missing
    or null input is its default, and SSH trust is the keys pinned for the host (trust_view).
    Inputs equal as they are need no view: a no-change preview of 50 masters would build
    one for each of their 2,450 peer entries."""
    if all(olds.get(k) == news.get(k) for k in keys):
        return []
    olds, news = trust_view(olds), trust_view(news)

    def value(props: dict[str, Any], key: str) -> Any:
        v = props.get(key)
        return defaults.get(key) if v is None else v

    return [k for k in keys if value(olds, k) != value(news, k)]


def timeout_problems(props: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, str]]:
    present = known(props)
    return [
        (k, error)
        for k in keys
        if k in present and present[k] is not None
        for error in [validation.positive_seconds_error(present[k], k)]
        if error
    ]


Config = TypeVar("Config")
Problems = list[tuple[str, str]]


def require_valid(props: dict[str, Any], problems: Callable[[dict[str, Any]], Problems]) -> None:
    """Stop a create before anything changes when the inputs have problems: every one named,
    the same list check() shows in a preview."""
    failures = problems(props)
    if failures:
        raise ProviderError("; ".join(f"{prop}: {reason}" for prop, reason in failures))


def parse(
    props: dict[str, Any],
    problems: Callable[[dict[str, Any]], Problems],
    build: Callable[[dict[str, Any]], Config],
) -> Config:
    """Valid inputs as their typed config (built only once they are known to be valid), or
    the ProviderError of require_valid."""
    require_valid(props, problems)
    return build(props)


@dataclass(frozen=True)
class Parsed(Generic[Config]):
    """What one pass over a resource's inputs found: every problem, and the typed config
    they make when there is none (built on demand: a preview's check() never needs it)."""

    problems: Problems
    build: Callable[[], Config] | None  # None: a value is not known yet (a preview's)

    def valid(self) -> Config:
        """The config, or the ProviderError that stops a create before anything changes:
        every problem named, the list check() shows in a preview."""
        if self.problems:
            raise ProviderError("; ".join(f"{prop}: {reason}" for prop, reason in self.problems))
        if self.build is None:
            raise ProviderError("inputs are not known yet (computed during `up`): nothing to build from")
        return self.build()


class Reader:
    """One pass over a resource's inputs (parse, don't validate): each read gives the value
    the config holds - the input, else its default - and judges it on the way, so an
    input's check and its typed value are written in one place and cannot drift apart.

    A value not known yet (a preview's, computed during `up`) is never judged (create sees
    it known and judges it then) and leaves no config. `judging=False` reads a recorded
    state (read, update, delete) as it is: a state an older version wrote is never refused."""

    def __init__(self, props: dict[str, Any], defaults: dict[str, Any], judging: bool = True) -> None:
        self.props = props
        self.present = known(props)  # the inputs given and known (a null one included)
        self.values = with_defaults(defaults, self.present)
        self.judging = judging
        self.problems: Problems = []
        self.incomplete = any(is_unknown(v) for v in props.values())

    def problem(self, key: str, reason: str | None) -> None:
        if reason and self.judging:
            self.problems.append((key, reason))

    def judge(self, found: Problems) -> None:
        """Problems a shared checker found (SSH access, peers, deadlines)."""
        if self.judging:
            self.problems += found

    def given(self, key: str) -> bool:
        """The input is there, known, and not empty: what a format check looks at."""
        return bool(self.present.get(key))

    def require(self, *keys: str) -> None:
        for key in keys:
            if not is_unknown(self.props.get(key)) and not self.props.get(key):
                self.problem(key, f"{key} is required")

    def text(self, key: str, error: Callable[[Any, str], str | None] | None = None) -> str:
        """The input as text; `error(value, key)` judges a given one (never a default)."""
        if error is not None and self.given(key):
            self.problem(key, error(self.present[key], key))
        value = self.values.get(key)
        return "" if value is None else str(value)

    def seconds(self, key: str) -> float:
        """A deadline: a positive number of seconds."""
        if self.present.get(key) is not None:
            self.problem(key, validation.positive_seconds_error(self.present[key], key))
        try:
            return float(self.values[key])
        except (TypeError, ValueError):
            return 0.0  # judged above: no config is built from it

    def flag(self, key: str) -> bool:
        return bool(self.values.get(key))

    def ssh_target(self, prefix: str, host_key: str, judged: bool = True) -> SshTarget | None:
        """A host's SSH access from its six inputs (ssh_input_keys), judged by ssh_problems
        unless `judged` is False; None where the host is not set or cannot be read."""
        found = ssh_problems(self.props, prefix, host_key) if judged and self.judging else []
        self.problems += found
        if found or not self.values.get(host_key):
            return None
        try:
            return ssh_target(self.values, prefix, host_key)
        except (KeyError, TypeError, ValueError, OverflowError):
            return None  # not judged here (and then no config is built), or an old state's gap

    def result(self, build: Callable[[], Config]) -> Parsed[Config]:
        if self.problems:
            return Parsed(self.problems, None)
        return Parsed([], None if self.incomplete else build)
