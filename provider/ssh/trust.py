"""SSH trust, pinned: a host's keys from an input (`ssh-ed25519 AAAA...` or known_hosts
text), read and checked without paramiko - what check() and diff() need in a preview."""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in. repr() never shows the key."""

    host: str
    port: int
    user: str
    private_key: str = field(repr=False)
    host_key: str = ""  # "ssh-ed25519 AAAA..." (pinned), or
    known_hosts: str = field(default="", repr=False)  # known_hosts text to take it from

    @property
    def label(self) -> str:
        return self.host if self.port == 22 else f"{self.host}:{self.port}"


def host_key_blob(line: str) -> tuple[str, bytes]:
    """'ssh-ed25519 AAAA... [comment]' -> (key type, key blob), checked the way a preview
    can afford (no paramiko): valid base64 whose SSH wire form names the same key type."""
    parts = line.split()
    if len(parts) < 2:
        raise ValueError("a pinned host key looks like 'ssh-ed25519 AAAA...'")
    blob = base64.b64decode(parts[1], validate=True)
    size = int.from_bytes(blob[:4], "big")
    named = blob[4 : 4 + size].decode("ascii", "replace")
    if len(blob) < 4 + size or named != parts[0]:
        raise ValueError(f"the key data is not a {parts[0]} key (it names {named!r})")
    return parts[0], blob


def known_hosts_lines(text: str, host: str, port: int) -> list[str]:
    """The known_hosts lines naming this host (`host` or `[host]:port`, as OpenSSH writes
    them; hashed names and patterns are not read), each as "names keytype base64", in the
    text's order."""
    index = _known_hosts_index(text)
    found = {*index.get(host, ()), *index.get(f"[{host}]:{port}", ())}
    return [line for _, line in sorted(found)]


@functools.lru_cache(maxsize=16)
def _known_hosts_index(text: str) -> dict[str, tuple[tuple[int, str], ...]]:
    """Each name of a known_hosts text -> its (line number, "names keytype base64") entries.
    Remembered: a deployment's program asks it of one text for every master and peer (N²
    lookups at N masters), so the text is read once."""
    index: dict[str, list[tuple[int, str]]] = {}
    for number, raw in enumerate(text.splitlines()):
        fields = raw.split()
        if len(fields) >= 3 and not fields[0].startswith("#"):
            for name in dict.fromkeys(fields[0].split(",")):
                index.setdefault(name, []).append((number, " ".join(fields[:3])))
    return {name: tuple(entries) for name, entries in index.items()}


@functools.lru_cache(maxsize=4096)
def pinned_keys(text: str, host: str, port: int) -> tuple[str, ...]:
    """The "keytype base64" keys known_hosts text pins for one host, sorted: what the text
    means for a connection to it, whatever else it lists. Remembered: diffs ask it of the
    same peer entries once per master."""
    return tuple(sorted({" ".join(line.split()[1:3]) for line in known_hosts_lines(text, host, port)}))


def host_key_lines(target: SshTarget) -> list[str]:
    """The "keytype base64" keys this target may present: the pinned one, or its known_hosts
    entries; each checked (ValueError) - what check() needs, without paramiko."""
    lines = [target.host_key] if target.host_key else list(pinned_keys(target.known_hosts, target.host, target.port))
    for line in lines:
        host_key_blob(line)
    return lines
