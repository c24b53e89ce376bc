"""A PE 2019.7+ compiler's access to PE-PostgreSQL: its own PuppetDB authenticates to the
database with the compiler's Puppet certificate, and PostgreSQL maps the certificate's CN
to each PuppetDB role through pg_ident.conf. peadm's plans/add_compiler.pp adds the three
lines (`<map> <certname> <role>`) with file_line and reloads pe-postgresql before the
compiler's first run (pe-generations.md §6 [S29]); nothing documents their removal, so
deleting a compiler removes exactly its own lines the same way.

Pure: each function builds a POSIX sh script run on the database host over SSH, or parses
what one printed. The scripts take one lock (masters are provisioned in parallel, each
editing the same file), check first, change only what differs, reload PostgreSQL only when
they changed the file (or an earlier reload is still owed), and verify after.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from provider.core.errors import ProviderError
from provider.pe import services

IDENT_FILE = "pg_ident.conf"
# Host-local, and on tmpfs on current distributions: a reboot restarts PostgreSQL, which
# reads pg_ident.conf anyway, so a reload still owed can go with the marker.
LOCK = "/var/lock/pe-pg-ident.lock"
RELOAD_PENDING = "/var/lock/pe-pg-ident.reload-pending"
LOCK_WAIT = 60  # seconds; each holder only edits one file and reloads
SCRIPT_TIMEOUT = LOCK_WAIT + 120  # the SSH deadline of the ensure/remove scripts

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_GLOB = re.compile(r"/[A-Za-z0-9/._*-]+")

# pg_ident.conf: `MAPNAME SYSTEM-USERNAME PG-USERNAME`, `#` starts a comment, a value may
# be double-quoted. A line is one of ours when its three fields are (map, certname, role).
_FIELDS = 'line = $0; sub(/#.*/, "", line); gsub(/"/, "", line); n = split(line, w)'
_HAS_AWK = f"{{ {_FIELDS} }} n == 3 && w[1] == m && w[2] == c && w[3] == r {{ found = 1 }} END {{ exit !found }}"
_WANT = 'BEGIN { k = split(pairs, p, " "); for (i = 1; i < k; i += 2) want[p[i] " " p[i + 1]] = 1 }'
_OURS = '(n == 3 && w[2] == c && ((w[1] " " w[3]) in want))'
_COUNT_AWK = f"{_WANT} {{ {_FIELDS} }} {_OURS} {{ count++ }} END {{ print count + 0 }}"
_FILTER_AWK = f"{_WANT} {{ {_FIELDS} }} {_OURS} {{ next }} {{ print }}"


def _name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not a plain name")
    return value


def ident_lines(certname: str, maps: tuple[tuple[str, str], ...]) -> list[str]:
    """The pg_ident.conf lines for this certname, as peadm writes them."""
    return [f"{_name(m, 'map')} {_name(certname, 'certname')} {_name(r, 'role')}" for m, r in maps]


def probe_script(data_glob: str) -> str:
    """Print each data directory matching `data_glob` as `running <dir>` when its
    postmaster.pid names a live process, `stale <dir>` when the process is gone (a crash),
    `unreadable <dir>` when this user cannot look inside. PE's upgrades leave the old
    version's directory behind (peadm reads the version from a fact): the running cluster
    is the one to edit."""
    if not _GLOB.fullmatch(data_glob):
        raise ValueError(f"data directory pattern {data_glob!r} is not a plain absolute path pattern")
    return (
        f"for d in {data_glob}; do\n"
        '  [ -d "$d" ] || continue\n'
        '  if [ ! -x "$d" ]; then echo "unreadable $d"; continue; fi\n'
        '  [ -f "$d/postmaster.pid" ] || continue\n'
        '  pid=$(head -n 1 "$d/postmaster.pid" 2>/dev/null)\n'
        '  case "$pid" in ""|*[!0-9]*) echo "stale $d"; continue ;; esac\n'
        '  if [ -d "/proc/$pid" ]; then echo "running $d"; else echo "stale $d"; fi\n'
        "done\n"
        "true\n"
    )


def data_dir_from_probe(stdout: str, host: str, data_glob: str) -> str:
    """The running cluster's data directory from probe_script's output, or a
    ProviderError saying why there is not exactly one."""
    found: dict[str, list[str]] = {"running": [], "stale": [], "unreadable": []}
    for line in stdout.splitlines():
        kind, _, path = line.strip().partition(" ")
        if kind in found and path:
            found[kind].append(path)
    running = found["running"]
    if len(running) == 1:
        return running[0]
    if len(running) > 1:
        raise ProviderError(
            f"more than one PE-PostgreSQL cluster runs on {host} ({', '.join(running)}): "
            "cannot tell which one PuppetDB uses; stop the one left over from an upgrade"
        )
    if found["unreadable"]:
        raise ProviderError(
            f"cannot look inside {', '.join(found['unreadable'])} on {host} as the SSH user: the database "
            "steps edit PE-PostgreSQL's pg_ident.conf and need root (set the database host's SSH user)"
        )
    stale = f"; a postmaster.pid of a process that is gone in {', '.join(found['stale'])}" if found["stale"] else ""
    raise ProviderError(
        f"PE-PostgreSQL is not running on {host} (no postmaster.pid under {data_glob}{stale}): compilers' "
        "PuppetDB needs it there; start pe-postgresql, or point the database host at the one that runs it"
    )


@dataclass(frozen=True)
class IdentFile:
    """The running cluster's pg_ident.conf (in `data_dir`) and how a script edits it: the
    PuppetDB maps each compiler gets a line in, the PostgreSQL service to reload after a
    change, and the host-local lock and reload-owed marker the scripts share."""

    data_dir: str
    maps: tuple[tuple[str, str], ...]  # (map, role) pairs: the generation's pg_ident_maps
    service: str
    marker: str = services.SYSTEMD_MARKER
    lock: str = LOCK
    pending: str = RELOAD_PENDING

    @property
    def path(self) -> str:
        return f"{self.data_dir.rstrip('/')}/{IDENT_FILE}"

    def ensure_script(self, certname: str) -> str:
        """Append the certname's missing lines (owner and mode kept: `>>`), reload
        PostgreSQL if any was added, verify all are there. Prints `added <n>` or `present`,
        followed by ` reloaded` when it reloaded."""
        q = shlex.quote
        lines = ident_lines(certname, self.maps)
        out = [
            "set -u\n",
            self._preamble(),
            f'has() {{ awk -v m="$1" -v c="$2" -v r="$3" {q(_HAS_AWK)} "$f"; }}\n',
            "added=0\n",
        ]
        for line in lines:
            words = " ".join(q(w) for w in line.split())
            out.append(
                f"if ! has {words}; then\n"
                '  if [ "$added" -eq 0 ]; then\n'
                '    : > "$pending" || exit 1\n'  # before the file changes: a cut-off run still reloads next time
                '    if [ -s "$f" ] && [ -n "$(tail -c 1 "$f")" ]; then echo >> "$f" || exit 1; fi\n'
                "  fi\n"
                f'  echo {q(line)} >> "$f" || exit 1\n'
                "  added=$((added + 1))\n"
                "fi\n"
            )
        out.append(self._reload())
        for line in lines:
            words = " ".join(q(w) for w in line.split())
            out.append(f'has {words} || {{ echo "$f lacks the line: {line}" >&2; exit 7; }}\n')
        out.append('if [ "$added" -gt 0 ]; then echo "added $added$reloaded"; else echo "present$reloaded"; fi\n')
        return "".join(out)

    def remove_script(self, certname: str) -> str:
        """Remove exactly this certname's lines for these maps (never another certname's,
        nor a line that only contains the name), reload PostgreSQL if any was removed,
        verify they are gone. Prints `removed <n>` or `absent`, followed by ` reloaded`
        when it reloaded."""
        q = shlex.quote
        ident_lines(certname, self.maps)  # validates the names
        pairs = " ".join(f"{m} {r}" for m, r in self.maps)
        count = f'awk -v c={q(certname)} -v pairs={q(pairs)} {q(_COUNT_AWK)} "$f"'
        keep = f'awk -v c={q(certname)} -v pairs={q(pairs)} {q(_FILTER_AWK)} "$f"'
        return (
            "set -u\n"
            + self._preamble()
            + f"n=$({count}) || exit 1\n"
            + 'if [ "$n" -gt 0 ]; then\n'
            + '  : > "$pending" || exit 1\n'
            + '  tmp=$(mktemp "${TMPDIR:-/tmp}/pg_ident.XXXXXX") || exit 1\n'
            + f'  if {keep} > "$tmp" && cat "$tmp" > "$f"; then rm -f "$tmp"\n'
            + '  else rm -f "$tmp"; echo "could not rewrite $f" >&2; exit 1; fi\n'
            + "fi\n"
            + self._reload()
            + f"left=$({count}) || exit 1\n"
            + f'if [ "$left" -ne 0 ]; then echo "$f still maps {certname} ($left lines)" >&2; exit 7; fi\n'
            + 'if [ "$n" -gt 0 ]; then echo "removed $n$reloaded"; else echo "absent$reloaded"; fi\n'
        )

    def _preamble(self) -> str:
        q = shlex.quote
        return (
            f"f={q(self.path)}; lock={q(self.lock)}; pending={q(self.pending)}\n"
            'if [ ! -f "$f" ]; then echo "there is no $f on this host" >&2; exit 3; fi\n'
            'if [ ! -r "$f" ] || [ ! -w "$f" ]; then echo "cannot read and write $f as $(id -un)" >&2; exit 3; fi\n'
            'if ! command -v flock >/dev/null 2>&1; then echo "no flock (util-linux) on this host" >&2; exit 5; fi\n'
            'if ! exec 9>>"$lock"; then echo "cannot open the lock file $lock" >&2; exit 5; fi\n'
            f"if ! flock -w {LOCK_WAIT} 9; then\n"
            f'  echo "could not take the lock $lock within {LOCK_WAIT}s" >&2; exit 5\n'
            "fi\n"
        )

    def _reload(self) -> str:
        """Reload PostgreSQL if a reload is owed (ours or an earlier run's that failed)."""
        failed = f"reloading {self.service} failed: PostgreSQL has not read $f yet (the next run reloads it)"
        return (
            "reloaded=''\n"
            'if [ -e "$pending" ]; then\n'
            f"  if ! {{ {services.reload_script(self.service, self.marker)}; }}; then\n"
            f'    echo "{failed}" >&2\n'
            "    exit 6\n"
            "  fi\n"
            '  rm -f "$pending"; reloaded=" reloaded"\n'
            "fi\n"
        )


@dataclass(frozen=True)
class Change:
    """What an ensure/remove script did: lines added (or removed), and whether it reloaded."""

    lines: int
    reloaded: bool


def parse_summary(stdout: str) -> Change:
    """The last line of an IdentFile script's output."""
    last = next((line.split() for line in reversed(stdout.splitlines()) if line.strip()), [])
    if len(last) >= 2 and last[0] in ("added", "removed") and last[1].isdigit():
        return Change(int(last[1]), last[2:] == ["reloaded"])
    if last and last[0] in ("present", "absent"):
        return Change(0, last[1:] == ["reloaded"])
    raise ProviderError(f"the pg_ident.conf script printed {stdout.strip()[-200:]!r}, not its summary")


def puppetdb_state(body: str) -> tuple[str, str]:
    """(state, detail) from PuppetDB's /status/v1/services/puppetdb-status: `running` only
    when it is out of maintenance mode and its read and write databases are up; `starting`
    while it migrates or retries its database; `error` when a database is down. ("", why)
    when the answer is not that JSON."""
    try:
        data = json.loads(body)
    except ValueError:
        return "", "not JSON"
    if not isinstance(data, dict) or not isinstance(data.get("state"), str):
        return "", "no state in the answer"
    status = data.get("status")
    flags = (
        [f"{k}={str(v).lower()}" for k, v in status.items() if isinstance(v, bool)] if isinstance(status, dict) else []
    )
    return data["state"], ", ".join(flags)
