"""The lab's PuppetDB: HTTPS on the PuppetDB host's 8081, trusting only whitelisted certs.

Like PuppetDB with `certificate-whitelist` set: TLS requires a client certificate issued
by the Puppet CA, and a certname missing from the whitelist file (re-read on every
request) gets 403. The whitelist itself is written by a real agent run on this host
(class puppet_enterprise::profile::puppetdb -> inhost/bin/pelab-whitelist), from what this
service knows: which nodes completed a run whose catalog held the master profile. That
knowledge arrives as the primary's reports (Puppet's `http` report processor posts each
report here - a stand-in for PuppetDB's own report terminus).

Endpoints (real PuppetDB paths where PuppetDB has one):
  POST /pdb/cmd/v1                          replace facts | deactivate node | store report
  GET  /pdb/query/v4/nodes[/<certname>]     nodes, with `deactivated`
  GET  /pdb/query/v4/resources/Class/<T>    nodes whose last good run had class T
  POST /pelab/v1/reports                    the http report processor's YAML reports
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pelab_common as common

MASTER_CLASS = "puppet_enterprise::profile::master"


class RubyTolerantLoader(yaml.SafeLoader):
    """Reads Puppet's report YAML, whose objects carry !ruby/object tags, as plain data."""


def _ruby_object(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)  # type: ignore[arg-type]


RubyTolerantLoader.add_multi_constructor("!ruby/", _ruby_object)


def classes_of_report(report: dict[str, Any]) -> set[str]:
    """Class names a report's resources were contained in (from the resources' tags)."""
    classes: set[str] = set()
    for status in (report.get("resource_statuses") or {}).values():
        for tag in status.get("tags") or []:
            if "::" in str(tag):
                classes.add(str(tag).lower())
        for part in status.get("containment_path") or []:
            if str(part).startswith("Class["):
                classes.add(str(part)[6:-1].lower())
    return classes


class State:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.nodes: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.exists() else {}

    def save(self) -> None:
        common.write_atomic(self.path, json.dumps(self.nodes, indent=1, sort_keys=True))

    def node(self, name: str) -> dict[str, Any]:
        return self.nodes.setdefault(
            name,
            {
                "certname": name,
                "deactivated": None,
                "facts_timestamp": None,
                "report_timestamp": None,
                "latest_report_status": None,
                "classes": [],
            },
        )


class Handler(common.JsonHandler):
    state: State

    def allowed(self) -> bool:
        peer = common.peer_certname(self)
        if peer is None or peer not in common.read_lines(Path(common.profile().puppetdb_allowlist)):
            self.error(
                403, "forbidden", f"Permission denied: {peer or 'no certificate'} is not in the certificate whitelist"
            )
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        if not self.allowed():
            return
        parts = [unquote(p) for p in urlparse(self.path).path.split("/") if p]
        # The generation's query API only (PuppetDB 2.x: /v3/..., 3.0+: /pdb/query/v4/...).
        prefix = ["v3"] if common.profile().puppetdb_legacy_api else ["pdb", "query", "v4"]
        if parts[: len(prefix)] != prefix:
            return self.error(404, "not-found", self.path)
        parts = ["pdb", "query", "v4", *parts[len(prefix) :]]
        with self.state.lock:
            if parts[:4] == ["pdb", "query", "v4", "nodes"]:
                nodes = [n for n in self.state.nodes.values() if not n["deactivated"]]
                if len(parts) == 5:
                    match = self.state.nodes.get(parts[4])
                    return (
                        self.reply(200, match)
                        if match
                        else self.error(404, "not-found", f"No information is known about node {parts[4]}")
                    )
                return self.reply(200, nodes)
            if parts[:5] == ["pdb", "query", "v4", "resources", "Class"] and len(parts) == 6:
                wanted = parts[5].lower()
                rows = [
                    {"certname": n["certname"], "type": "Class", "title": parts[5], "exported": False}
                    for n in self.state.nodes.values()
                    if not n["deactivated"]
                    and n["latest_report_status"] in ("changed", "unchanged")
                    and wanted in n["classes"]
                ]
                return self.reply(200, rows)
        return self.error(404, "not-found", self.path)

    def do_POST(self) -> None:  # noqa: N802
        if not self.allowed():
            return
        path = urlparse(self.path).path
        if path == "/pelab/v1/reports":
            return self.store_report(self.body_bytes())
        legacy = common.profile().puppetdb_legacy_api
        # PuppetDB 2.x: /v3/commands (and the experimental /v4/commands); 3.0+: /pdb/cmd/v1.
        if path not in (("/v3/commands", "/v4/commands") if legacy else ("/pdb/cmd/v1",)):
            return self.error(404, "not-found", path)
        try:
            cmd = self.body_json() or {}
        except ValueError:
            return self.error(400, "malformed-request", "body is not JSON")
        name = cmd.get("command")
        payload = cmd.get("payload")
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        # What each API's commands name the node: 2.x `replace facts` v3 {"name"}, `deactivate
        # node` v2 "<certname>"; 3.0+ `replace facts` v5 and `deactivate node` v3 {"certname"}.
        key = "name" if legacy else "certname"
        with self.state.lock:
            if name == "replace facts" and isinstance(payload, dict) and payload.get(key):
                node = self.state.node(payload[key])
                node["facts_timestamp"] = now
                node["deactivated"] = None
            elif name == "deactivate node":
                if legacy:
                    certname = payload if isinstance(payload, str) and cmd.get("version") in (1, 2) else None
                else:
                    certname = (payload or {}).get("certname") if isinstance(payload, dict) else None
                if not certname:
                    wanted = "a v2 certname string" if legacy else "a v3 {certname, producer_timestamp}"
                    return self.error(400, "malformed-request", f"deactivate node: the payload is not {wanted}")
                self.state.node(certname)["deactivated"] = now
            else:
                return self.error(400, "malformed-request", f"unsupported command {name!r}")
            self.state.save()
        return self.reply(200, {"uuid": f"pelab-{time.time_ns()}"})

    def store_report(self, raw: bytes) -> None:
        try:
            report = yaml.load(raw, Loader=RubyTolerantLoader)  # noqa: S506 - SafeLoader subclass
        except yaml.YAMLError as exc:
            return self.error(400, "malformed-request", f"report is not YAML: {exc}")
        host = report.get("host")
        if not host:
            return self.error(400, "malformed-request", "report has no host")
        with self.state.lock:
            node = self.state.node(host)
            node["report_timestamp"] = str(report.get("time"))
            node["latest_report_status"] = report.get("status")
            if report.get("status") != "failed":
                node["classes"] = sorted(classes_of_report(report))
            node["deactivated"] = None
            self.state.save()
        return self.reply(200, {"ok": True})


def main() -> None:
    settings = common.settings()
    me = common.certname()
    Handler.state = State(Path(settings["root"]) / "state" / "puppetdb.json")
    server = common.TLSServer((common.address_of(me), 8081), Handler, common.server_context(require_client_cert=True))
    print(f"puppetdb listening on {me}:8081", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
