"""The base of the lab's small HTTPS services inside its hosts (the console and PuppetDB
stand-ins, a compile host's compile service and PuppetDB stand-ins): a JSON request handler
and a threaded TLS server. Apart from pelab_common so the lab's `puppet`, `curl` and
`openssl` wrappers, which import that module on every call, do not load http.server."""

from __future__ import annotations

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class JsonHandler(BaseHTTPRequestHandler):
    """Small JSON request handler base: body parsing, JSON replies, quiet logs."""

    protocol_version = "HTTP/1.1"
    server_version = "pelab"

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"{self.address_string()} {format % args}\n")

    def peer_certname(self) -> str | None:
        """CN of the verified client certificate, if the client sent one."""
        cert = self.connection.getpeercert() if isinstance(self.connection, ssl.SSLSocket) else None
        if not cert:
            return None
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return None

    _raw_body: bytes | None = None

    def handle_one_request(self) -> None:
        self._raw_body = None  # one handler serves every request of a keep-alive connection
        super().handle_one_request()

    def body_bytes(self) -> bytes:
        """The request body, read once (and always read before replying: an unread body
        would be parsed as the next request on a keep-alive connection)."""
        if self._raw_body is None:
            length = int(self.headers.get("Content-Length") or 0)
            self._raw_body = self.rfile.read(length) if length else b""
        return self._raw_body

    def body_json(self) -> Any:
        raw = self.body_bytes()
        return json.loads(raw) if raw else None

    def reply(
        self,
        status: int,
        payload: Any = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.body_bytes()
        if payload is None:
            data = b""
        elif isinstance(payload, (bytes, str)):
            data = payload.encode() if isinstance(payload, str) else payload
        else:
            data = json.dumps(payload).encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if data:
            self.wfile.write(data)

    def error(self, status: int, kind: str, msg: str) -> None:
        self.reply(status, {"kind": kind, "msg": msg})


class TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], ctx: ssl.SSLContext):
        super().__init__(address, handler)
        self.ctx = ctx

    def get_request(self) -> tuple[Any, Any]:
        # The handshake happens in the handler's thread (JsonHandler.setup), so one slow or
        # rejected client never stalls the accept loop.
        sock, addr = self.socket.accept()
        sock.settimeout(30)
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr
