"""The light compile service: what a compile master's Puppet Server promises, cheaply.

Used on compile hosts not listed in lab.json's real_compile_hosts (scale tests run many).
Same contract as the real one: HTTPS on <host>:8140 with the host's Puppet certificate,
`/status/v1/simple` says `running`, and a catalog request is served only after the same
checks a PE master makes (PuppetDB and the console must trust this master). The catalog
it returns holds the node's classes, not compiled resources.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pelab_common as common
import pelab_http


class Handler(pelab_http.JsonHandler):
    def do_GET(self) -> None:  # noqa: N802
        self.route()

    def do_POST(self) -> None:  # noqa: N802
        self.body_bytes()
        self.route()

    def route(self) -> None:
        path = urlparse(self.path).path
        if path == "/status/v1/simple":
            if not common.profile().status_simple:  # Puppet Server < 2.6 (PE 3.x): no such route
                return self.reply(404, "Not Found", content_type="text/plain")
            return self.reply(200, "running", content_type="text/plain")
        parts = [unquote(p) for p in path.split("/") if p]
        if parts[:1] == ["puppet-ca"] or parts[1:2] in (["certificate"], ["certificate_revocation_list"]):
            return self.ca_request(path)
        if parts[:3] == ["puppet", "v3", "catalog"] and len(parts) == 4:
            node = parts[3]
            if self.peer_certname() != node:
                return self.error(403, "forbidden", f"Forbidden request: catalog of {node} for {self.peer_certname()}")
            try:
                result = common.classify_for_catalog(node)
            except common.CatalogRefusedError as exc:
                return self.error(500, "catalog-compile-failed", str(exc))
            return self.reply(
                200,
                {
                    "name": node,
                    "version": int(time.time()),
                    "environment": result["environment"],
                    "catalog_uuid": str(uuid.uuid4()),
                    "code_id": None,
                    "tags": [],
                    "edges": [],
                    "classes": sorted(result["classes"]),
                    "resources": [
                        {"type": "Class", "title": c.title(), "parameters": p}
                        for c, p in sorted(result["classes"].items())
                    ],
                    "compiled_by": common.certname(),
                },
            )
        return self.error(404, "not-found", path)

    def ca_request(self, path: str) -> None:
        """A compile master has no CA. PE 3.x's master profile with enable_ca_proxy forwards
        CA requests to the primary (its marker is written by the run that applied it);
        without it they fail here, as on a PE 3.7 compile master not configured so."""
        if not CA_PROXY_MARKER.exists() or self.command != "GET":
            return self.error(404, "not-found", f"{path}: no CA on this compile master")
        if path.startswith("/puppet-ca/") and not common.profile().ca_v1_api:  # Puppet Server 1.x
            return self.error(404, "not-found", f"{path}: no such route on PE 3.x's Puppet Server")
        status, body = common.https("GET", common.settings()["primary"], 8140, path, headers={"Accept": "text/plain"})
        return self.reply(status, body, content_type="text/plain")


CA_PROXY_MARKER = Path("/etc/puppetlabs/pelab-ca-proxy")


def main() -> None:
    """Serve until stopped; SIGHUP re-reads the CRL (pelab-compile-service takes a copy of
    the CA's first), as a HUP reloads a PE Puppet Server - never in between."""
    me = common.certname()
    server = pelab_http.TLSServer((common.address_of(me), 8140), Handler, common.server_context(crl=common.SERVED_CRL))

    def reload(_signum: int, _frame: object) -> None:
        server.ctx = common.server_context(crl=common.SERVED_CRL)
        print("reloaded: CRL re-read", flush=True)

    signal.signal(signal.SIGHUP, reload)
    print(f"compile stand-in listening on {me}:8140", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
