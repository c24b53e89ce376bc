"""The PuppetDB host's port 8081: the real PuppetDB, with the API of the generation.

The real PuppetDB (Debian's 7.12, inhost/bin/pelab-pe-puppetdb) listens on 8082. This
front owns 8081, where PE's clients reach PuppetDB, and per connection, by the lab's
current profile:
  * PE 2015.2+ (PuppetDB 3+): a TCP passthrough. The client's TLS session is with the real
    PuppetDB, which checks its certificate against the allow-list and serves its `/pdb`
    API (and refuses the 2.x paths: `/v3/commands` is 404 there).
  * PE 3.x (PuppetDB 2.x): PuppetDB 2's API over the real one - `/v3/commands` (and the
    experimental `/v4/commands`) taking `replace facts` v3 and `deactivate node` v1/v2
    (a bare certname as payload), `/v3/nodes` and `/v3/resources`; no `/pdb` at all.
    TLS ends here, so this front enforces the `certificate-whitelist` as PuppetDB 2 did,
    and forwards with the PuppetDB host's own certificate (pe-generations.md §6 [S23]).
The lab's own clients (the primary's terminus, pelab-whitelist) use 8082 directly.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from pathlib import Path
from socketserver import BaseRequestHandler, ThreadingTCPServer
from typing import Any
from urllib.parse import quote, unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

import pelab_common as common
import pelab_http

REAL_PORT = 8082


def real(method: str, path: str, body: Any = None) -> tuple[int, bytes]:
    return common.https(method, common.certname(), REAL_PORT, path, body)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


class LegacyHandler(pelab_http.JsonHandler):
    """PuppetDB 2.x's HTTP API (PE 3.x), carried out by the real PuppetDB."""

    def allowed(self) -> bool:
        peer = self.peer_certname()
        if peer is None or peer not in common.read_lines(Path(common.profile().puppetdb_allowlist)):
            self.reply(403, f"Permission denied: {peer} is not on the certificate whitelist", content_type="text/plain")
            return False
        return True

    def do_GET(self) -> None:  # noqa: N802
        if not self.allowed():
            return
        parts = [unquote(p) for p in urlparse(self.path).path.split("/") if p]
        if parts[:2] == ["v3", "nodes"] and len(parts) in (2, 3):
            status, body = real("GET", "/pdb/query/v4/nodes" + (f"/{quote(parts[2])}" if len(parts) == 3 else ""))
            if status != 200:
                return self.reply(status, body, content_type="text/plain")
            data = json.loads(body)
            rows = [data] if isinstance(data, dict) else data
            for row in rows:  # PuppetDB 2's node objects are named by `name`
                row["name"] = row.pop("certname", None)
            return self.reply(200, data)
        if parts[:2] == ["v3", "resources"] and len(parts) in (3, 4):
            status, body = real("GET", "/pdb/query/v4/" + "/".join(quote(p) for p in parts[1:]))
            return self.reply(status, body, content_type="application/json")
        return self.reply(404, "Not Found", content_type="text/plain")

    def do_POST(self) -> None:  # noqa: N802
        if not self.allowed():
            return
        if urlparse(self.path).path not in ("/v3/commands", "/v4/commands"):
            return self.reply(404, "Not Found", content_type="text/plain")
        try:
            cmd = self.body_json() or {}
        except ValueError:
            return self.reply(400, "malformed command: body is not JSON", content_type="text/plain")
        name, version, payload = cmd.get("command"), cmd.get("version"), cmd.get("payload")
        if name == "deactivate node" and version in (1, 2) and isinstance(payload, str) and payload:
            translated = {"certname": payload, "producer_timestamp": now()}
            status, body = real("POST", "/pdb/cmd/v1", {"command": name, "version": 3, "payload": translated})
        elif name == "replace facts" and version == 3 and isinstance(payload, dict) and payload.get("name"):
            translated = {
                "certname": payload["name"],
                "environment": payload.get("environment") or "production",
                "producer_timestamp": now(),
                "producer": self.peer_certname(),
                "values": payload.get("values") or {},
            }
            status, body = real("POST", "/pdb/cmd/v1", {"command": name, "version": 5, "payload": translated})
        else:
            return self.reply(400, f"unsupported command {name!r} version {version!r}", content_type="text/plain")
        return self.reply(status, body, content_type="application/json")


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


class Front(BaseRequestHandler):
    server: FrontServer

    def handle(self) -> None:
        client: socket.socket = self.request
        if common.profile().puppetdb_legacy_api:
            tls = common.server_context(require_client_cert=True).wrap_socket(
                client, server_side=True, do_handshake_on_connect=False
            )
            tls.settimeout(30)
            LegacyHandler(tls, self.client_address, self.server)
            return
        try:
            upstream = socket.create_connection((common.address_of(common.certname()), REAL_PORT), timeout=10)
        except OSError:
            return  # the real PuppetDB is down: the client sees the connection close
        upstream.settimeout(None)
        client.settimeout(None)
        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join(timeout=60)
        upstream.close()


class FrontServer(ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    me = common.certname()
    server = FrontServer((common.address_of(me), 8081), Front)
    print(f"PuppetDB front listening on {me}:8081 (real PuppetDB on {REAL_PORT})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
