"""The lab's PE console: node classifier API v1 and RBAC tokens, on the console host's 4433.

This is the one PE service the lab must simulate (PE is proprietary). It follows PE's
documented behaviour (see shared/facts/pe-apis.md), including what differs by version:
  * PE 3.7-2015.2: no RBAC tokens (404) - only whitelisted client certificates;
  * before PE 2016.1: no /pin, /unpin or /commands/unpin-from-all (404) - pinning means
    rewriting the group's rule;
  * from PE 2018.1: groups carry `serial_number`; a stale one on update is a 409;
  * from PE 2019.7: the "PE Compiler" group exists (matched on pp_auth_role=pe_compiler).
State lives in one JSON file so it survives restarts; the version comes from lab.json.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pelab_common as common
import pelab_http

ROOT_GROUP_ID = "00000000-0000-4000-8000-000000000000"
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
GROUP_FIELDS = (
    "name",
    "id",
    "description",
    "environment",
    "environment_trumps",
    "parent",
    "rule",
    "classes",
    "variables",
    "deleted",
)


def version() -> tuple[int, int]:
    major, _, minor = str(common.settings()["pe_version"]).partition(".")
    return int(major), int(minor.split(".")[0] or 0)


def at_least(v: tuple[int, int]) -> bool:
    return version() >= v


def seed_groups(settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The node groups of a fresh PE install, with this lab's infrastructure certnames."""

    def group(
        name: str,
        parent: str,
        rule: Any,
        classes: dict[str, Any],
        env: str = "production",
        trumps: bool = False,
        gid: str | None = None,
    ) -> dict[str, Any]:
        return {
            "name": name,
            "id": gid or str(uuid.uuid4()),
            "description": "",
            "environment": env,
            "environment_trumps": trumps,
            "parent": parent,
            "rule": rule,
            "classes": classes,
            "variables": {},
            "deleted": {},
            "serial_number": 1,
        }

    root = group("All Nodes", ROOT_GROUP_ID, ["and", ["~", "name", ".*"]], {}, gid=ROOT_GROUP_ID)
    production = group("Production environment", ROOT_GROUP_ID, ["and", ["~", "name", ".*"]], {}, trumps=True)
    infra = group(
        "PE Infrastructure",
        ROOT_GROUP_ID,
        None,
        {
            "puppet_enterprise": {
                "puppet_master_host": settings["primary"],
                "console_host": settings["console"],
                "puppetdb_host": settings["puppetdb"],
            }
        },
    )
    # PE 3.7's procedure has the admin set enable_ca_proxy = true on this class in PE Master
    # (install_multimaster, [S1]): a fresh install does not have it, so neither does the lab.
    master_classes: dict[str, Any] = {"puppet_enterprise::profile::master": {}}
    master_rule: list[Any] = ["or", ["=", "name", settings["primary"]]]
    if at_least((2019, 7)):
        # PE Compiler is PE Master's child, and rules are inherited: PE Master also
        # matches compilers by their trusted pp_auth_role (as peadm configures it).
        master_rule.append(["=", ["trusted", "extensions", "pp_auth_role"], "pe_compiler"])
    master = group("PE Master", infra["id"], master_rule, master_classes)
    puppetdb = group(
        "PE PuppetDB",
        infra["id"],
        ["or", ["=", "name", settings["puppetdb"]]],
        {"puppet_enterprise::profile::puppetdb": {}},
    )
    console = group(
        "PE Console",
        infra["id"],
        ["or", ["=", "name", settings["console"]]],
        {"puppet_enterprise::profile::console": {}},
    )
    groups = [root, production, infra, master, puppetdb, console]
    if at_least((2019, 7)):
        groups.append(
            group(
                "PE Compiler",
                master["id"],
                ["and", ["=", ["trusted", "extensions", "pp_auth_role"], "pe_compiler"]],
                # A compiler runs its own PuppetDB (against PE-PostgreSQL), so PE Compiler
                # declares the PuppetDB profile too (pe-generations.md §6 [S6]).
                {"puppet_enterprise::profile::puppetdb": {}},
            )
        )
    return {g["id"]: g for g in groups}


def point_infrastructure(groups: dict[str, dict[str, Any]], settings: dict[str, Any]) -> None:
    """The infrastructure groups name the hosts lab.json gives PuppetDB and the console
    (what PE's installer sets; here also after the lab moved them, deploy.set_layout)."""
    wanted: dict[str, tuple[str, Any]] = {
        "PE Infrastructure": (
            "classes",
            {
                "puppet_enterprise": {
                    "puppet_master_host": settings["primary"],
                    "console_host": settings["console"],
                    "puppetdb_host": settings["puppetdb"],
                }
            },
        ),
        "PE PuppetDB": ("rule", ["or", ["=", "name", settings["puppetdb"]]]),
        "PE Console": ("rule", ["or", ["=", "name", settings["console"]]]),
        "PE Database": ("rule", ["or", ["=", "name", settings["database"]]]),
    }
    names = {g["name"]: g for g in groups.values()}
    if at_least((2018, 1)) and "PE Database" not in names and "PE Infrastructure" in names:
        # New in PE 2018.1 (pe_enhancements.md): "The node specified as database_host is
        # pinned to this group. By default, the database host is the PuppetDB server node."
        database = {
            "name": "PE Database",
            "id": str(uuid.uuid4()),
            "description": "",
            "environment": "production",
            "environment_trumps": False,
            "parent": names["PE Infrastructure"]["id"],
            "rule": None,
            "classes": {"puppet_enterprise::profile::database": {}},
            "variables": {},
            "deleted": {},
            "serial_number": 1,
        }
        groups[database["id"]] = database
    for group in groups.values():
        if group["name"] in wanted:
            key, value = wanted[group["name"]]
            if group[key] != value:
                group[key] = value
                group["serial_number"] = group.get("serial_number", 0) + 1


class State:
    """Groups and RBAC tokens, persisted as JSON after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.RLock()
        if path.exists():
            data = json.loads(path.read_text())
        else:
            data = {"groups": seed_groups(common.settings()), "tokens": {}}
        self.groups: dict[str, dict[str, Any]] = data["groups"]
        # token -> {"login", "expires" (epoch seconds)}; a plain login string is an older
        # lab's token without expiry.
        self.tokens: dict[str, Any] = data["tokens"]
        point_infrastructure(self.groups, common.settings())
        self.save()

    def save(self) -> None:
        common.write_atomic(self.path, json.dumps({"groups": self.groups, "tokens": self.tokens}, indent=1), 0o600)


# --- rule evaluation (pure) ------------------------------------------------------------


def lookup(path: Any, node: dict[str, Any]) -> Any:
    if path == "name":
        return node["name"]
    if isinstance(path, list) and path and path[0] in ("fact", "trusted"):
        value: Any = node.get(path[0] + "s" if path[0] == "fact" else "trusted", {})
        for key in path[1:]:
            if not isinstance(value, dict) or key not in value:
                return None
            value = value[key]
        return value
    return None


def matches(rule: Any, node: dict[str, Any]) -> bool:
    if not rule:
        return False
    op = rule[0]
    if op == "and":
        return all(matches(r, node) for r in rule[1:])
    if op == "or":
        return any(matches(r, node) for r in rule[1:])
    if op == "not":
        return not matches(rule[1], node)
    value = lookup(rule[1], node)
    if value is None:
        return False
    target = rule[2]
    if op == "=":
        return str(value) == str(target)
    if op == "~":
        return re.search(str(target), str(value)) is not None
    try:
        a, b = float(value), float(target)
    except (TypeError, ValueError):
        return False
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}.get(op, False)


def validate_rule(rule: Any) -> str | None:
    """None if the rule follows the grammar, else a message (PE answers 400 schema-violation)."""
    if rule is None:
        return None
    if not isinstance(rule, list) or not rule:
        return "rule must be a non-empty array"
    op = rule[0]
    if op in ("and", "or"):
        if len(rule) < 2:
            return f"'{op}' needs at least one condition"
        for sub in rule[1:]:
            err = validate_rule(sub)
            if err:
                return err
        return None
    if op == "not":
        return validate_rule(rule[1]) if len(rule) == 2 else "'not' takes one condition"
    if op in ("=", "~", ">", ">=", "<", "<=") and len(rule) == 3:
        path = rule[1]
        if path == "name" or (isinstance(path, list) and path and path[0] in ("fact", "trusted")):
            return None
        return f"bad field {path!r}"
    return f"unknown rule operator {op!r}"


def ancestors(groups: dict[str, dict[str, Any]], gid: str) -> list[dict[str, Any]]:
    chain = []
    seen = set()
    current = groups.get(gid)
    while current and current["id"] not in seen:
        chain.append(current)
        seen.add(current["id"])
        if current["id"] == current["parent"]:
            break
        current = groups.get(current["parent"])
    return chain


def classify(groups: dict[str, dict[str, Any]], node: dict[str, Any]) -> dict[str, Any]:
    """PE semantics: a node is in a group when it matches the group's rule and every
    ancestor's rule (a group without a rule matches nobody itself and constrains nobody as
    an ancestor); classes, parameters and variables are inherited from ancestors."""
    matched = []
    for gid, g in groups.items():
        chain = ancestors(groups, gid)
        if matches(g["rule"], node) and all(a["rule"] is None or matches(a["rule"], node) for a in chain[1:]):
            matched.append(g)
    classes: dict[str, dict[str, Any]] = {}
    variables: dict[str, Any] = {}
    conflicts = []
    environment = "production"
    for g in matched:
        for a in reversed(ancestors(groups, g["id"])):
            for cls, params in a["classes"].items():
                merged = classes.setdefault(cls, {})
                for key, value in params.items():
                    if key in merged and merged[key] != value:
                        conflicts.append(f"{cls}::{key}")
                    merged[key] = value
            variables.update(a["variables"])
        if g["environment_trumps"]:
            environment = g["environment"]
    return {
        "name": node["name"],
        "groups": sorted(g["id"] for g in matched),
        "environment": environment,
        "classes": classes,
        "parameters": variables,
        "conflicts": conflicts,
    }


# --- RBAC tokens -----------------------------------------------------------------------

LIFETIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


class TokenExpiredError(Exception):
    """A known token used after its lifetime."""


def parse_lifetime(value: Any, default: float) -> float:
    """`lifetime` of a token request: "90s", "5m", "1h", "30d", "1y" or seconds; absent ->
    the generation's default."""
    if value is None or value == "":
        return default
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    number, unit = text[:-1], text[-1:]
    if not number.isdigit() or unit not in LIFETIME_UNITS:
        raise ValueError(f"lifetime {text!r} is not like 5m, 1h, 30d or 1y")
    return float(number) * LIFETIME_UNITS[unit]


# --- RBAC roles ----------------------------------------------------------------------
# PE's built-in roles as far as node groups go (PE 2018.1 rbac_permissions_intro.md, "User
# permissions"; node_groups actions view, edit_child_rules, edit_classification, ...):
# Administrators and Operators have every node-group permission on All Nodes, Viewers
# only `view`. The lab's users: the admin (Administrators) and `viewer` (Viewers), whose
# password is the admin's (state/console-admin.json; lab only).
ROLE_OF_LOGIN = {"viewer": "Viewers"}
VIEW_ONLY_ROLES = ("Viewers",)


def needed_permission(method: str, rest: list[str]) -> str | None:
    """The node-group permission a classifier request needs beyond `view`, or None."""
    if method == "GET" or rest[:2] == ["classified", "nodes"]:
        return None
    if len(rest) == 3 and rest[0] == "groups" and rest[2] in ("pin", "unpin"):
        return "edit_child_rules"
    if rest == ["commands", "unpin-from-all"]:
        return "edit_child_rules"
    return "edit_classification" if rest[:1] == ["groups"] and len(rest) == 2 else "modify_children"


# --- HTTP ------------------------------------------------------------------------------


class Handler(pelab_http.JsonHandler):
    state: State

    def role(self) -> str:
        """The RBAC role of the request's token (certificates in the allowlist: all)."""
        entry = self.state.tokens.get(self.headers.get("X-Authentication") or "")
        return str(entry.get("role", "Administrators")) if isinstance(entry, dict) else "Administrators"

    def authenticated(self) -> bool:
        token = self.headers.get("X-Authentication")
        if token and at_least((2015, 3)) and token in self.state.tokens:
            entry = self.state.tokens[token]
            if isinstance(entry, dict) and time.time() >= float(entry["expires"]):
                raise TokenExpiredError()
            return True
        peer = self.peer_certname()
        return peer is not None and peer in common.read_lines(Path(common.profile().console_allowlist))

    def route(self, method: str) -> None:
        url = urlparse(self.path)
        parts = [p for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if parts[:3] == ["rbac-api", "v1", "auth"] and parts[3:] == ["token"] and method == "POST":
            return self.issue_token()
        if parts[:2] != ["classifier-api", "v1"]:
            return self.error(404, "not-found", f"No route for {url.path}")
        try:
            authenticated = self.authenticated()
        except TokenExpiredError:
            # PE's RBAC: tokens expire after their lifetime (`puppet access login
            # --lifetime`; default 5 minutes up to 2019.5, 1 hour later, pe-generations.md §7).
            return self.error(401, "puppetlabs.rbac/token-expired", "The provided token has expired.")
        if not authenticated:
            return self.error(
                401,
                "puppetlabs.rbac/user-unauthenticated",
                "Route requires authentication: RBAC token or whitelisted certificate",
            )
        rest = parts[2:]
        needed = needed_permission(method, rest)
        if needed and self.role() in VIEW_ONLY_ROLES:
            # RBAC's refusal (i: the body's wording is the lab's; PE answers 403 with a
            # permission-denied kind for an authenticated user without the permission).
            return self.error(
                403,
                "puppetlabs.rbac/permission-denied",
                f"The user does not have the node_groups:{needed} permission needed for {method} {url.path}",
            )
        if rest[:1] == ["groups"] and self.injected_fault():
            return None
        with self.state.lock:
            if rest == ["groups"] and method == "GET":
                return self.reply(200, [self.public(g) for g in self.state.groups.values()])
            if rest == ["groups"] and method == "POST":
                return self.create_group()
            if len(rest) >= 2 and rest[0] == "groups":
                gid = rest[1]
                if not UUID_RE.match(gid):
                    return self.error(400, "malformed-uuid", f"The group id {gid!r} is not a well-formed UUID.")
                if len(rest) == 3 and rest[2] in ("pin", "unpin") and method == "POST":
                    if not at_least((2016, 1)):
                        return self.error(404, "not-found", "No route (the pin endpoints arrived in PE 2016.1)")
                    return self.pin(gid, rest[2], query)
                group = self.state.groups.get(gid)
                if group is None:
                    return self.error(404, "not-found", f"The group with id {gid} does not exist.")
                if len(rest) == 2 and method == "GET":
                    return self.reply(200, self.public(group))
                if len(rest) == 2 and method == "POST":
                    return self.update_group(group)
                if len(rest) == 2 and method == "DELETE":
                    del self.state.groups[gid]
                    self.state.save()
                    return self.reply(204)
            if rest == ["commands", "unpin-from-all"] and method == "POST":
                if not at_least((2016, 1)):
                    return self.error(404, "not-found", "No route (unpin-from-all arrived in PE 2016.1)")
                return self.unpin_from_all()
            if len(rest) == 3 and rest[:2] == ["classified", "nodes"] and method == "POST":
                return self.classified(rest[2])
        return self.error(404, "not-found", f"No route for {method} {url.path}")

    def injected_fault(self) -> bool:
        """Fault injection for the fault tests (lab knobs, read per request), on node-group
        calls - what pinning uses; the ENC's classification is spared: changes (POST) wait
        `console_groups_delay` seconds and are then still carried out, as on a slow console;
        `console_groups_status` (e.g. 503) answers every group call without doing anything."""
        knobs = common.settings().get("knobs", {})
        delay = float(knobs.get("console_groups_delay", 0))
        if delay > 0 and self.command == "POST":
            time.sleep(delay)
        status = int(knobs.get("console_groups_status", 0))
        if status:
            self.error(status, "pelab/injected-fault", "Service Unavailable (lab fault injection)")
            return True
        return False

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.route("POST")

    def do_DELETE(self) -> None:  # noqa: N802
        self.route("DELETE")

    def public(self, group: dict[str, Any]) -> dict[str, Any]:
        out = {k: group[k] for k in GROUP_FIELDS}
        if at_least((2018, 1)):
            out["serial_number"] = group["serial_number"]
            out["config_data"] = group.get("config_data", {})
        return out

    def issue_token(self) -> None:
        if not at_least((2015, 3)):
            return self.error(404, "not-found", "No route (RBAC tokens arrived in PE 2015.3)")
        try:
            body = self.body_json() or {}
        except ValueError:
            return self.error(400, "malformed-request", "body is not JSON")
        admin = json.loads((common.ROOT / "state" / "console-admin.json").read_text())
        login = body.get("login")
        if login not in (admin["login"], *ROLE_OF_LOGIN) or body.get("password") != admin["password"]:
            return self.error(401, "puppetlabs.rbac/authentication-failed", "The username or password is incorrect.")
        try:
            lifetime = parse_lifetime(body.get("lifetime"), common.profile().token_lifetime_default)
        except ValueError as exc:
            return self.error(400, "puppetlabs.rbac/invalid-token-lifetime", str(exc))
        token = "0" + secrets.token_urlsafe(32)
        with self.state.lock:
            self.state.tokens[token] = {
                "login": login,
                "expires": time.time() + lifetime,
                "role": ROLE_OF_LOGIN.get(str(login), "Administrators"),
            }
            self.state.save()
        return self.reply(200, {"token": token})

    def create_group(self) -> None:
        try:
            body = self.body_json() or {}
        except ValueError:
            return self.error(400, "malformed-request", "body is not JSON")
        missing = [k for k in ("name", "parent", "classes") if k not in body]
        if missing:
            return self.error(400, "schema-violation", f"missing required keys: {missing}")
        if any(g["name"] == body["name"] for g in self.state.groups.values()):
            return self.error(422, "uniqueness-violation", f"A group named {body['name']!r} already exists.")
        err = validate_rule(body.get("rule"))
        if err:
            return self.error(400, "schema-violation", err)
        gid = body.get("id") or str(uuid.uuid4())
        group = {
            "name": body["name"],
            "id": gid,
            "description": body.get("description", ""),
            "environment": body.get("environment", "production"),
            "environment_trumps": bool(body.get("environment_trumps", False)),
            "parent": body["parent"],
            "rule": body.get("rule"),
            "classes": body["classes"],
            "variables": body.get("variables", {}),
            "deleted": {},
            "serial_number": 1,
        }
        self.state.groups[gid] = group
        self.state.save()
        return self.reply(303, None, {"Location": f"/classifier-api/v1/groups/{gid}"})

    def update_group(self, group: dict[str, Any]) -> None:
        try:
            delta = self.body_json() or {}
        except ValueError:
            return self.error(400, "malformed-request", "body is not JSON")
        if at_least((2018, 1)) and "serial_number" in delta and delta["serial_number"] != group["serial_number"]:
            return self.error(409, "conflict", "The group's serial_number is stale: re-read and retry.")
        if "rule" in delta:
            if group["id"] == ROOT_GROUP_ID:
                return self.error(422, "root-rule-edit", "Changing the root group's rule is not allowed.")
            err = validate_rule(delta["rule"])
            if err:
                return self.error(400, "schema-violation", err)
        for key in ("classes", "variables"):
            if key in delta:
                merged = dict(group[key])
                for name, value in (delta[key] or {}).items():
                    if value is None:
                        merged.pop(name, None)
                    elif key == "classes" and isinstance(value, dict) and name in merged:
                        params = dict(merged[name])
                        for p, v in value.items():
                            if v is None:
                                params.pop(p, None)
                            else:
                                params[p] = v
                        merged[name] = params
                    else:
                        merged[name] = value
                group[key] = merged
        for key in ("rule", "name", "environment", "environment_trumps", "description", "parent"):
            if key in delta:
                group[key] = delta[key]
        group["serial_number"] += 1
        self.state.save()
        return self.reply(200, self.public(group))

    def nodes_param(self, query: dict[str, list[str]]) -> list[str] | None:
        if "nodes" in query:
            return [n for n in ",".join(query["nodes"]).split(",") if n]
        try:
            body = self.body_json()
        except ValueError:
            return None
        if isinstance(body, dict) and isinstance(body.get("nodes"), list):
            return [str(n) for n in body["nodes"]]
        return None

    def pin(self, gid: str, action: str, query: dict[str, list[str]]) -> None:
        nodes = self.nodes_param(query)
        if nodes is None:
            return self.error(400, "missing-parameters", 'Provide nodes as ?nodes=a,b or a {"nodes": [...]} body.')
        group = self.state.groups.get(gid)
        if group is None:
            return self.error(404, "not-found", f"The group with id {gid} does not exist.")
        rule = group["rule"]
        if action == "pin":
            for node in nodes:
                condition = ["=", "name", node]
                if rule is None:
                    rule = ["or", condition]
                elif rule[0] != "or":
                    rule = ["or", rule, condition]
                if condition not in rule[1:]:
                    rule = [*rule, condition]
        elif rule is not None:
            rule = self.without_pins(rule, set(nodes))
        group["rule"] = rule
        group["serial_number"] += 1
        self.state.save()
        return self.reply(204)

    @staticmethod
    def without_pins(rule: list[Any], nodes: set[str]) -> list[Any] | None:
        if rule[0] != "or":
            return rule
        kept = [c for c in rule[1:] if not (isinstance(c, list) and c[:2] == ["=", "name"] and c[2] in nodes)]
        return ["or", *kept] if kept else None

    def unpin_from_all(self) -> None:
        try:
            body = self.body_json() or {}
        except ValueError:
            return self.error(400, "malformed-request", "body is not JSON")
        nodes = body.get("nodes")
        if not isinstance(nodes, list):
            return self.error(400, "missing-parameters", 'Provide {"nodes": [...]}')
        result = []
        for node in nodes:
            left = []
            for group in self.state.groups.values():
                if group["rule"] and ["=", "name", node] in group["rule"][1:] and group["rule"][0] == "or":
                    group["rule"] = self.without_pins(group["rule"], {node})
                    group["serial_number"] += 1
                    left.append({"id": group["id"], "name": group["name"], "environment": group["environment"]})
            result.append({"name": node, "groups": left})
        self.state.save()
        return self.reply(200, {"nodes": result})

    def classified(self, name: str) -> None:
        try:
            body = self.body_json() or {}
        except ValueError:
            return self.error(400, "malformed-request", "body is not JSON")
        node = {"name": name, "facts": body.get("fact", {}), "trusted": body.get("trusted", {})}
        result = classify(self.state.groups, node)
        if result.pop("conflicts"):
            return self.error(500, "classification-conflict", f"Conflicting classification for {name}")
        return self.reply(200, result)


def main() -> None:
    settings = common.settings()
    me = common.certname()
    Handler.state = State(Path(settings["root"]) / "state" / "console.json")
    server = pelab_http.TLSServer((common.address_of(me), 4433), Handler, common.server_context())
    print(f"console (PE {settings['pe_version']}) listening on {me}:4433", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
