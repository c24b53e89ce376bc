"""HAProxy: runtime API command builders, `show stat` / `show servers state` parsers, and
the haproxy.cfg edits that make runtime changes survive a reload. Pure functions only;
the PoolMember resource (issue: pool membership) runs them over SSH on the LB host.

Facts (shared/facts/pe-apis.md): `add server` needs a dynamic balance algorithm, starts
the server in maintenance with weight 1 and ignores `default-server`, so every keyword
is spelled out; `enable health` is needed after adding with `check`; `del server` only
works in maintenance with no connections; runtime-added servers vanish on reload unless
written to the configuration too.
"""

from __future__ import annotations

import csv
import io
import shlex
from dataclasses import dataclass

from provider.core.validation import host_error, port_error, server_name_error


@dataclass(frozen=True)
class ServerStat:
    backend: str
    server: str
    status: str  # UP, DOWN, MAINT, DRAIN, "no check", UP 1/2 ...
    current_sessions: int
    weight: int
    address: str  # ip:port
    check_status: str = ""  # last health check: L7OK, L4CON, L7STS, INI ...
    admin_drain: bool = False

    @property
    def is_healthy(self) -> bool:
        """UP by HAProxy's own verdict, after at least one passing check (a server
        leaving maintenance may show UP before its first check has run)."""
        return self.status == "UP" and self.check_status in ("L7OK", "L6OK", "L4OK")


def parse_show_stat(text: str) -> dict[tuple[str, str], ServerStat]:
    """`show stat` CSV -> {(backend, server): ServerStat}, servers only (no FRONTEND/BACKEND rows)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    out = {}
    for row in reader:
        name = row.get("svname", "")
        if not name or name in ("FRONTEND", "BACKEND"):
            continue
        out[(row["pxname"], name)] = ServerStat(
            row["pxname"],
            name,
            row.get("status", ""),
            int(row.get("scur") or 0),
            int(row.get("weight") or 0),
            row.get("addr", ""),
            row.get("check_status", "").strip("* "),
        )
    return out


RUNTIME_OK = ("", "New server registered.", "Server deleted.")


def runtime_error(output: str) -> str | None:
    """The runtime API answers with text only: anything but the known successes is an error."""
    text = output.strip()
    return None if text in RUNTIME_OK else text


# `add server` with `check`, `ssl` and `ca-file` outside experimental mode: HAProxy 2.6+
# (2.4 needed experimental-mode and had no health checks for added servers; pe-apis.md).
MIN_RUNTIME_VERSION = (2, 6)


def parse_version(show_info: str) -> tuple[int, int] | None:
    """(major, minor) from the runtime API's `show info` (`Version: 2.6.12-1+deb12u1`)."""
    for line in show_info.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "Version":
            parts = value.strip().split(".")
            if len(parts) >= 2 and parts[0].isdigit() and parts[1][:2].rstrip("-").isdigit():
                return int(parts[0]), int(parts[1][:2].rstrip("-"))
    return None


def socket_command(runtime_command: str, socket_path: str) -> str:
    """A shell line that sends one runtime API command to the stats socket. UNIX-CONNECT,
    not a bare path: socat opens a bare path that does not exist as a new regular file."""
    return f"echo {shlex.quote(runtime_command)} | socat stdio {shlex.quote('UNIX-CONNECT:' + socket_path)}"


def server_keywords(address: str, port: int, weight: int, ca_file: str, check_inter_ms: int = 2000) -> str:
    """Keywords for a compile master: TLS health check of /status/v1/simple verified
    against the PE CA (the backend's `option httpchk` supplies the request)."""
    return (
        f"{address}:{port} weight {weight} check check-ssl verify required ca-file {ca_file} "
        f"inter {check_inter_ms} fall 2 rise 2"
    )


def add_server_commands(backend: str, server: str, keywords: str) -> list[str]:
    return [
        f"add server {backend}/{server} {keywords}",
        f"enable health {backend}/{server}",
        f"enable server {backend}/{server}",
    ]


def drain_command(backend: str, server: str) -> str:
    return f"set server {backend}/{server} state drain"


def remove_commands(backend: str, server: str) -> list[str]:
    return [f"set server {backend}/{server} state maint", f"del server {backend}/{server}"]


def shutdown_sessions_command(backend: str, server: str) -> str:
    return f"shutdown sessions server {backend}/{server}"


def ready_command(backend: str, server: str) -> str:
    return f"set server {backend}/{server} state ready"


def weight_command(backend: str, server: str, weight: int) -> str:
    return f"set server {backend}/{server} weight {weight}"


def config_with_server(cfg: str, backend: str, server: str, keywords: str) -> str:
    """haproxy.cfg text with `server <server> <keywords>` in `backend <backend>`
    (replacing an existing line for that server). Raises KeyError if no such backend."""
    lines = cfg.splitlines()
    start = _backend_start(lines, backend)
    end = _section_end(lines, start)
    wanted = f"    server {server} {keywords}"
    body = [i for i in range(start + 1, end) if _is_server_line(lines[i], server)]
    if body:
        lines[body[0]] = wanted
        for i in reversed(body[1:]):
            del lines[i]
    else:
        insert_at = end
        while insert_at > start + 1 and not lines[insert_at - 1].strip():
            insert_at -= 1
        lines.insert(insert_at, wanted)
    return "\n".join(lines) + "\n"


def config_server_line(cfg: str, backend: str, server: str) -> str | None:
    """The keywords of `server <server>` in `backend <backend>`, or None."""
    lines = cfg.splitlines()
    try:
        start = _backend_start(lines, backend)
    except KeyError:
        return None
    for line in lines[start + 1 : _section_end(lines, start)]:
        if _is_server_line(line, server):
            return " ".join(line.split()[2:])
    return None


def has_backend(cfg: str, backend: str) -> bool:
    try:
        _backend_start(cfg.splitlines(), backend)
        return True
    except KeyError:
        return False


def config_without_server(cfg: str, backend: str, server: str) -> str:
    lines = cfg.splitlines()
    try:
        start = _backend_start(lines, backend)
    except KeyError:
        return cfg
    end = _section_end(lines, start)
    kept = [line for i, line in enumerate(lines) if not (start < i < end and _is_server_line(line, server))]
    return "\n".join(kept) + "\n"


def _backend_start(lines: list[str], backend: str) -> int:
    for i, line in enumerate(lines):
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "backend" and parts[1] == backend:
            return i
    raise KeyError(f"no `backend {backend}` section in the HAProxy configuration")


def _section_end(lines: list[str], start: int) -> int:
    for i in range(start + 1, len(lines)):
        if lines[i] and not lines[i][0].isspace() and not lines[i].startswith("#"):
            return i
    return len(lines)


def _is_server_line(line: str, server: str) -> bool:
    parts = line.split()
    return len(parts) >= 2 and parts[0] == "server" and parts[1] == server


def member_problems(backend: object, server: object, address: object, port: object) -> list[tuple[str, str]]:
    out = []
    for key, error in (
        ("backend", server_name_error(backend, "backend")),
        ("server_name", server_name_error(server, "server name")),
        ("address", host_error(address, "address")),
        ("port", port_error(port, "port")),
    ):
        if error:
            out.append((key, error))
    return out
