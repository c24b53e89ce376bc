"""Input validation shared by every resource: names that may reach a shell or a URL.

Pure functions returning an error message (or None), so check() can report every
problem of an input at once, before anything changes. Names are validated when they
enter; commands are still built with shlex quoting (defence in depth).
"""

from __future__ import annotations

import ipaddress
import math
import re

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9._/@+-]*$")
_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SECTION_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def dns_name_error(value: object, what: str = "name") -> str | None:
    """RFC 1123 host name (lower case, as Puppet certnames are): labels of a-z, 0-9 and
    '-', not starting or ending with '-', at most 253 characters in all."""
    if not isinstance(value, str) or not value:
        return f"{what} must be a non-empty string"
    if len(value) > 253:
        return f"{what} {value!r} is longer than 253 characters"
    if value != value.lower():
        return f"{what} {value!r} must be lower case (Puppet certnames are)"
    if _is_ip(value):
        return f"{what} {value!r} is an IP address, not a DNS name"
    labels = value.split(".")  # no trailing dot: 'a.' and 'a' would be two names for one host
    bad = [label for label in labels if not _LABEL.fullmatch(label)]
    if bad:
        return f"{what} {value!r} is not a DNS name (bad label {bad[0]!r}: use a-z, 0-9 and '-')"
    return None


def host_error(value: object, what: str = "host") -> str | None:
    """An SSH/HTTPS target: a DNS name or an IP address."""
    if isinstance(value, str) and _is_ip(value):
        return None
    return dns_name_error(value, what)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
        return True
    except ValueError:
        return False


def port_error(value: object, what: str = "port") -> str | None:
    # The engine sends numbers as floats (22 arrives as 22.0).
    # NaN and infinity are floats that are not integers (and int() of them raises).
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not value.is_integer())
    ):
        return f"{what} must be an integer, not {value!r}"
    if not 1 <= int(value) <= 65535:
        return f"{what} {int(value)} is outside 1-65535"
    return None


def path_error(value: object, what: str = "path") -> str | None:
    if not isinstance(value, str) or not _PATH.fullmatch(value) or "/../" in f"{value}/":
        return f"{what} must be an absolute path of letters, digits and ._/@+- (got {value!r})"
    return None


def server_name_error(value: object, what: str = "server name") -> str | None:
    """A load balancer server/backend name: no spaces, semicolons or other syntax."""
    if not isinstance(value, str) or not _SERVER_NAME.fullmatch(value):
        return f"{what} must be 1-64 characters of letters, digits, '.', '_' and '-' (got {value!r})"
    return None


def positive_seconds_error(value: object, what: str) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        return f"{what} must be a positive number of seconds, not {value!r}"
    return None


def setting_name_error(value: object, what: str = "setting") -> str | None:
    if not isinstance(value, str) or not _SECTION_KEY.fullmatch(value):
        return f"{what} must match [a-z_][a-z0-9_]* (got {value!r})"
    return None


def user_error(value: object, what: str = "user") -> str | None:
    if not isinstance(value, str) or not _USER.fullmatch(value):
        return f"{what} must be a plain POSIX user name (got {value!r})"
    return None
