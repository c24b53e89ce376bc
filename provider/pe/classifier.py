"""PE's node classifier API v1 (console, 4433): the only HTTP client in the providers.

TLS is verified against the PE CA (fetched over pinned SSH from the primary, never
skipped). Auth is an RBAC token (`X-Authentication`, PE 2015.3+) or a whitelisted client
certificate (the only way in PE 3.7). Pinning is the pin endpoint from PE 2016.1, else a
rewrite of the group's top-level `or` rule (pure functions below).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provider.core.errors import ClassifierError

if TYPE_CHECKING:  # requests is imported where a request is made: a preview makes none
    import requests


def pin_rule(rule: Any, certname: str) -> list[Any]:
    """The group's rule with ["=", "name", certname] under a top-level "or" (idempotent)."""
    condition = ["=", "name", certname]
    if not rule:
        return ["or", condition]
    if rule[0] != "or":
        rule = ["or", rule]
    return list(rule) if condition in rule[1:] else [*rule, condition]


def unpin_rule(rule: Any, certname: str) -> Any:
    """The rule without the certname's pin; None when nothing is left (idempotent)."""
    if not rule or rule[0] != "or":
        return rule
    kept = [c for c in rule[1:] if c != ["=", "name", certname]]
    return ["or", *kept] if kept else None


def is_pinned(rule: Any, certname: str) -> bool:
    return bool(rule) and rule[0] == "or" and ["=", "name", certname] in rule[1:]


@dataclass
class ClassifierAuth:
    """How to authenticate: a token, or a client cert + key (PEM). repr() hides both."""

    token: str = field(default="", repr=False)
    client_cert: str = field(default="", repr=False)
    client_key: str = field(default="", repr=False)

    def mask(self, text: str) -> str:
        """A server may echo what we sent (the token header): never pass it on in an error."""
        for secret in (self.token, self.client_key):
            if secret:
                text = text.replace(secret, "********")
        return text


# The RBAC permissions each call needs (PE's "User permissions" table, e.g. PE 2018.1
# rbac_permissions_intro.md: type node_groups, actions view, edit_child_rules,
# edit_classification); a group's rule - its pins - is edited with "Edit child group
# rules" granted on its parent.
VIEW = "the node-group permission View (node_groups:view) on All Nodes"


def edit_rules_of(group: str) -> str:
    return (
        f"the node-group permission Edit child group rules (node_groups:edit_child_rules) on the parent of "
        f"{group} (PE Infrastructure), which lets it pin and unpin nodes in {group}"
    )


EDIT_ALL_RULES = (
    "the node-group permission Edit child group rules (node_groups:edit_child_rules) on All Nodes (unpin-from-all "
    "edits every group a node is pinned in)"
)


def edit_classes_of(group: str) -> str:
    return (
        "the node-group permission Edit classes, parameters, and variables (node_groups:edit_classification) "
        f"on {group}"
    )


def error_kind(resp: requests.Response) -> str:
    """The `kind` of a PE service's JSON error body ({"kind", "msg"}), or ""."""
    try:
        body = resp.json()
    except ValueError:
        return ""
    return str(body.get("kind", "")) if isinstance(body, dict) else ""


def refusal(resp: requests.Response, what: str, needs: str, token: bool, refused_hint: str) -> ClassifierError | None:
    """What a 401 or 403 means for the user, and what to do: a certificate not allowed, a
    permission the token's user lacks (and the role that has it), an expired token."""
    if resp.status_code == 403:
        if not token:
            return ClassifierError(f"{what}: the console refused the client certificate (HTTP 403): {refused_hint}")
        return ClassifierError(
            f"{what}: the RBAC token's user lacks a permission (HTTP 403 {error_kind(resp) or 'forbidden'}). It "
            f"needs {needs}. Grant it in the console (Access control > User roles: PE's built-in Operators "
            "role has every node-group permission), or issue the token as a user with such a role "
            "(`puppet access login --lifetime 1y`); then run `pulumi up` again"
        )
    if resp.status_code == 401:
        if error_kind(resp) == "puppetlabs.rbac/token-expired":
            return ClassifierError(
                f"{what}: the RBAC token has expired (HTTP 401 token-expired). Tokens live 5 minutes (PE "
                "2015.3-2019.5) or 1 hour (2019.7+) unless issued longer: run `puppet access login --lifetime 1y` "
                "and store the new token with `pulumi config set --secret pe:rbacToken`"
            )
        return ClassifierError(f"{what}: the classifier refused our credentials (HTTP 401): {refused_hint}")
    return None


# Rule rewrites (pins before PE 2016.1, and with them every PE < 2018.1 group write without
# serial_number) are made one at a time by this provider process: a batch pins its masters
# from threads, and concurrent read-modify-writes of one rule lose all but the last.
_RULE_REWRITES = threading.Lock()
RULE_REWRITE_ATTEMPTS = 3


class Classifier:
    def __init__(self, base_url: str, ca_pem: str, auth: ClassifierAuth, timeout: float = 30.0, refused_hint: str = ""):
        self.base = base_url.rstrip("/")
        self.ca_pem = ca_pem
        self.auth = auth
        self.timeout = timeout
        # What to check on HTTP 401, in the PE generation's terms (token lifetime, allowlist path).
        self.refused_hint = refused_hint or (
            "check the RBAC token, or that the client certificate is in the console's rbac certificate allowlist"
        )
        import requests

        self.session = requests.Session()
        self.session.trust_env = False  # no proxy or CA bundle from the environment
        self._dir_path = ""

    @contextmanager
    def opened(self) -> Iterator[Classifier]:
        """Write the CA (and client cert) to a private temp dir for requests' verify."""
        with tempfile.TemporaryDirectory(prefix="pe-classifier-") as tmp:
            os.chmod(tmp, 0o700)
            self._dir_path = tmp
            with open(os.path.join(tmp, "ca.pem"), "w") as f:
                f.write(self.ca_pem)
            if self.auth.client_cert:
                with open(os.path.join(tmp, "cert.pem"), "w") as f:
                    f.write(self.auth.client_cert)
                fd = os.open(os.path.join(tmp, "key.pem"), os.O_WRONLY | os.O_CREAT, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(self.auth.client_key)
            try:
                yield self
            finally:
                self.session.close()

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        import requests

        headers = dict(kw.pop("headers", {}))
        if self.auth.token:
            headers["X-Authentication"] = self.auth.token
        cert = None
        if self.auth.client_cert:
            cert = (os.path.join(self._dir_path, "cert.pem"), os.path.join(self._dir_path, "key.pem"))
        url = f"{self.base}/classifier-api/v1/{path}"
        last: Exception | None = None
        for attempt in range(3):  # bounded retry for 5xx/connection errors only
            try:
                resp = self.session.request(
                    method,
                    url,
                    headers=headers,
                    cert=cert,
                    verify=os.path.join(self._dir_path, "ca.pem"),
                    timeout=self.timeout,
                    **kw,
                )
            except requests.RequestException as exc:
                last = exc
                time.sleep(1 + attempt)
                continue
            if resp.status_code in (502, 503, 504):  # 500 is a real answer (classification-conflict)
                last = ClassifierError(f"{method} {url}: HTTP {resp.status_code}")
                time.sleep(1 + attempt)
                continue
            return resp
        raise ClassifierError(f"the classifier at {self.base} did not answer {method} {path}: {last}")

    def _json(self, resp: requests.Response, what: str, needs: str = VIEW) -> Any:
        refused = refusal(resp, what, needs, bool(self.auth.token), self.refused_hint)
        if refused is not None:
            raise refused
        if resp.status_code >= 300:
            raise ClassifierError(f"{what}: HTTP {resp.status_code} {self.auth.mask(resp.text)[:300]}")
        return resp.json() if resp.content else None

    def group_names(self) -> list[str]:
        return [str(g.get("name")) for g in self._json(self.request("GET", "groups"), "listing node groups")]

    def group_by_name(self, name: str) -> dict[str, Any]:
        groups = self._json(self.request("GET", "groups"), "listing node groups")
        matches = [g for g in groups if g.get("name") == name]
        if len(matches) != 1:
            raise ClassifierError(f"expected exactly one node group named {name!r}, found {len(matches)}")
        return dict(matches[0])

    def pin(self, group: dict[str, Any], certname: str, endpoint: bool) -> None:
        self._set_pinned(group, certname, endpoint, True)

    def unpin(self, group: dict[str, Any], certname: str, endpoint: bool) -> None:
        self._set_pinned(group, certname, endpoint, False)

    def group(self, gid: str) -> dict[str, Any]:
        """One node group as the console has it now (`GET /v1/groups/<id>`)."""
        return dict(self._json(self.request("GET", f"groups/{gid}"), f"reading node group {gid}"))

    def _set_pinned(self, group: dict[str, Any], certname: str, endpoint: bool, pinned: bool) -> None:
        """By the pin/unpin endpoint (PE 2016.1+), or by rewriting the group's rule."""
        verb, where = ("pinning", "to") if pinned else ("unpinning", "from")
        needs = edit_rules_of(group["name"])
        if endpoint:
            path = f"groups/{group['id']}/{'pin' if pinned else 'unpin'}"
            self._json(
                self.request("POST", path, json={"nodes": [certname]}),
                f"{verb} {certname} {where} {group['name']}",
                needs,
            )
            return
        rewrite_rule(self, group, certname, pinned)

    def unpin_from_all(self, certname: str) -> list[str]:
        """Remove the certname's pins from every node group (`POST /v1/commands/unpin-from-all`,
        PE 2016.1+, pe-generations.md §7 [S33]); the names of the groups it was pinned in."""
        result = self._json(
            self.request("POST", "commands/unpin-from-all", json={"nodes": [certname]}),
            f"unpinning {certname} from every node group",
            EDIT_ALL_RULES,
        )
        nodes = (result or {}).get("nodes") or []
        return sorted(str(g.get("name")) for n in nodes if n.get("name") == certname for g in n.get("groups") or [])

    def ensure_class_params(self, group: dict[str, Any], klass: str, params: dict[str, Any]) -> bool:
        """Set these parameters of a class in a group (a delta update: other classes and
        parameters are kept); False when they already have these values."""
        current = (group.get("classes") or {}).get(klass)
        if current is not None and all(current.get(k) == v for k, v in params.items()):
            return False
        body: dict[str, Any] = {"classes": {klass: params}}
        if "serial_number" in group:
            body["serial_number"] = group["serial_number"]
        self._json(
            self.request("POST", f"groups/{group['id']}", json=body),
            f"setting {klass} in {group['name']}",
            edit_classes_of(group["name"]),
        )
        return True

    def classified_groups(self, certname: str, trusted: dict[str, Any] | None = None) -> list[str]:
        body = {"trusted": trusted} if trusted else {}
        result = self._json(self.request("POST", f"classified/nodes/{certname}", json=body), f"classifying {certname}")
        return list(result.get("groups", []))


def rewrite_rule(classifier: Classifier, group: dict[str, Any], certname: str, pinned: bool) -> None:
    """Pin or unpin by rewriting the group's rule: read, change, write, read again, one
    rewrite at a time in this process. Before PE 2018.1 a group has no serial_number to
    refuse a lost update, so masters pinned together in one `up` would overwrite each
    other's pins (seen on PE 3.7); from 2018.1 a stale serial_number is a 409. Either way
    the rewrite is made again from a fresh read."""
    verb = "pinning" if pinned else "unpinning"
    rewrite = pin_rule if pinned else unpin_rule
    with _RULE_REWRITES:
        for _ in range(RULE_REWRITE_ATTEMPTS):
            current = classifier.group(str(group["id"]))
            if is_pinned(current.get("rule"), certname) == pinned:
                return
            body: dict[str, Any] = {"rule": rewrite(current.get("rule"), certname)}
            if "serial_number" in current:
                body["serial_number"] = current["serial_number"]
            resp = classifier.request("POST", f"groups/{group['id']}", json=body)
            if resp.status_code != 409:  # 409: another writer came first (2018.1+): read again
                classifier._json(resp, f"{verb} {certname} (rule rewrite)", edit_rules_of(group["name"]))
        if is_pinned(classifier.group(str(group["id"])).get("rule"), certname) == pinned:
            return
    raise ClassifierError(
        f"{verb} {certname} (rule rewrite): {group['name']}'s rule was replaced by another writer "
        f"{RULE_REWRITE_ATTEMPTS} times in a row; check what else edits that group, then run `pulumi up` again"
    )
