"""The global hiera.yaml's pure side: Puppet's `hiera_config` lives in the confdir, which
no code sync carries, so FileSync compares it by sha256 and copies the primary's when they
differ, as peadm's add_compiler plan does (`peadm::util::copy_file` of the primary's
hiera.yaml). The commands here probe, hash, read and write it; remote.Hiera runs them."""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from provider.core import validation
from provider.pe.generation import PUPPET_BINARIES

HieraAction = Literal["leave", "same", "copy"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class HieraFile:
    """One host's global hiera.yaml as a probe saw it."""

    path: str  # "" only on a host with no `puppet` and no fallback path
    digest: str  # sha256 of the file, "" when there is none
    puppet: str = ""  # the `puppet` whose hiera_config named the path; "" = the fallback path


def _hash_lines(path: str) -> str:
    """Shell that prints `sha256 <hex>` for the regular file at `path` (a shell word), or
    `sha256 absent`; exit 4 when it exists but cannot be read."""
    return (
        f'if test -n {path} && test -f {path}; then d=$(sha256sum < {path}) || exit 4; echo "sha256 ${{d%% *}}"; '
        "else echo 'sha256 absent'; fi"
    )


def probe_command(fallback: str = "", puppets: Sequence[str] = PUPPET_BINARIES) -> str:
    """One command per host: its `puppet` (AIO's path first, then PE 3.x's, as FileSync has
    no PE version), that Puppet's hiera_config as Puppet Server reads it, and the file's
    sha256. `--section master` is Puppet Server's view on every generation: Puppet 3 to 6.18
    read [master] then [main]; from 6.19 (lib/puppet/settings.rb `configsearchpath`, also in
    8.x) the master and server run modes both read [server], [master], then [main]. (`--section
    server` before 6.19 read [main] alone, and choosing the section by `puppet --version`
    cost a Ruby start-up on a PE host.) With no `puppet` there (a master before its agent is
    installed) the path is `fallback`, the primary's. Prints `puppet`, `section`, `path` and
    `sha256` lines."""
    words = " ".join(shlex.quote(p) for p in puppets)
    return (
        f'p=; for c in {words}; do if test -x "$c"; then p=$c; break; fi; done\n'
        'if test -n "$p"; then\n'
        '  s=master; f=$("$p" config print hiera_config --section master) || exit 3\n'
        "  f=$(printf '%s\\n' \"$f\" | tail -n 1)\n"
        "else\n"
        f"  s=-; f={shlex.quote(fallback)}\n"
        "fi\n"
        'echo "puppet ${p:--}"; echo "section $s"; echo "path $f"\n' + _hash_lines('"$f"')
    )


def parse_probe(text: str) -> HieraFile:
    """The probe's lines -> HieraFile; ValueError when they are not what the probe prints."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("puppet", "section", "path", "sha256"):
            fields[key] = value
    missing = [k for k in ("puppet", "path", "sha256") if k not in fields]
    if missing:
        raise ValueError(f"the hiera.yaml probe printed no {', '.join(missing)} line")
    puppet = "" if fields["puppet"] == "-" else fields["puppet"]
    path = fields["path"]
    if path or puppet:
        error = validation.path_error(path, "hiera_config")
        if error:
            raise ValueError(f"`{puppet or 'puppet'} config print hiera_config`: {error}")
    return HieraFile(path, parse_digest(text), puppet)


def digest_command(path: str) -> str:
    """The sha256 of a known path (the primary's once its path is known; the master's after a copy)."""
    return _hash_lines(shlex.quote(path))


def parse_digest(text: str) -> str:
    """The `sha256` line -> the hex digest, "" for `absent`; ValueError for anything else."""
    for line in text.splitlines():
        if line.startswith("sha256 "):
            value = line[7:].strip()
            if value == "absent":
                return ""
            if _SHA256.fullmatch(value):
                return value
            raise ValueError(f"not a sha256 digest: {value!r}")
    raise ValueError("no sha256 line")


def read_command(path: str) -> list[str]:
    """The primary's file as base64: bytes survive the text channel exactly."""
    return ["base64", path]


def decode_read(text: str) -> bytes:
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the primary's hiera.yaml did not come back as base64") from None


def write_command(path: str) -> str:
    """Standard input -> `path`, atomically: a temp file next to it, root-owned 0644, then
    renamed over it (`mv -T`: never into a directory of that name). No temp file stays."""
    directory = shlex.quote(posixpath.dirname(path) or "/")
    temp = shlex.quote(f"{posixpath.dirname(path)}/.{posixpath.basename(path)}.pe-file-sync.")
    return (
        f"set -e; umask 022; mkdir -p {directory}; t=$(mktemp {temp}XXXXXX); trap 'rm -f \"$t\"' EXIT; "
        f'cat > "$t"; chown 0:0 "$t"; chmod 0644 "$t"; mv -fT "$t" {shlex.quote(path)}'
    )


def action(primary: HieraFile, master: HieraFile) -> HieraAction:
    """What the master's hiera.yaml needs: nothing when the primary has none (peadm's copy
    would have no source; the master's is left alone) or it already has the primary's
    content, else a copy."""
    if not primary.digest:
        return "leave"
    return "same" if master.digest == primary.digest else "copy"


def drift(primary: HieraFile, master: HieraFile) -> str | None:
    """refresh's words for a master whose hiera.yaml is not the primary's (None: no drift)."""
    if action(primary, master) != "copy":
        return None
    if not master.digest:
        return f"hiera.yaml missing on the master ({master.path})"
    return f"hiera.yaml differs from the primary's ({master.path})"
