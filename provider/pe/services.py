"""A host's services (the Puppet agent's, the compile service), driven through the host's
own service manager rather than `puppet resource service`: the same effect without a
Ruby start-up (~1.2 CPU-s per call, measured on the lab's hosts, and a new master needs
one or two). What Bolt's `service` task does: systemd where it is PID 1, otherwise the
SysV `service` command, with update-rc.d (Debian) or chkconfig (Red Hat) for boot.

Pure: each function builds a POSIX sh script; the caller runs it over SSH. Every script
checks first (no start of a running service, no stop of a stopped one) and verifies after.
"""

from __future__ import annotations

import shlex

# sd_booted(3): this directory exists if and only if systemd is the running init.
SYSTEMD_MARKER = "/run/systemd/system"


def _is_systemd(marker: str) -> str:
    return f"[ -d {shlex.quote(marker)} ] && command -v systemctl >/dev/null 2>&1"


def service_state_script(name: str, marker: str = SYSTEMD_MARKER) -> str:
    """Prints `running` or `stopped`."""
    n = shlex.quote(name)
    return (
        f"if {_is_systemd(marker)}; then\n"
        f"  if systemctl is-active --quiet {n}; then echo running; else echo stopped; fi\n"
        f"elif service {n} status >/dev/null 2>&1; then echo running; else echo stopped; fi\n"
    )


def service_script(name: str, ensure: str, enable: bool | None = None, marker: str = SYSTEMD_MARKER) -> str:
    """Bring `name` to `ensure` (running|stopped) and, unless `enable` is None, set
    whether it starts at boot; exits non-zero if the service is not `ensure` afterwards."""
    if ensure not in ("running", "stopped"):
        raise ValueError(f"ensure must be running or stopped, not {ensure!r}")
    n = shlex.quote(name)
    want_running = ensure == "running"
    systemd_boot = "" if enable is None else f"  systemctl {'enable' if enable else 'disable'} --quiet {n}\n"
    sysv_boot = (
        ""
        if enable is None
        # update-rc.d only flips links that exist: `defaults` makes them first (no-op if there).
        else (
            f"  if command -v update-rc.d >/dev/null 2>&1; then update-rc.d {n} defaults >/dev/null 2>&1 || true\n"
            f"    update-rc.d {n} {'enable' if enable else 'disable'}\n"
            f"  elif command -v chkconfig >/dev/null 2>&1; then chkconfig {n} {'on' if enable else 'off'}; fi\n"
        )
    )
    sysv_act = (
        f"  service {n} status >/dev/null 2>&1 || service {n} start\n"
        if want_running
        else f"  if service {n} status >/dev/null 2>&1; then service {n} stop; fi\n"
    )
    return (
        "set -e\n"
        f"if {_is_systemd(marker)}; then\n"
        f"{systemd_boot}"
        f"  systemctl {'start' if want_running else 'stop'} {n}\n"
        f"else\n"
        f"{sysv_act}"
        f"{sysv_boot}"
        "fi\n"
        f"state=$({service_state_script(name, marker).strip()})\n"
        f'if [ "$state" != {ensure} ]; then echo "service {name} is $state, not {ensure}" >&2; exit 1; fi\n'
        f"echo {ensure}\n"
    )


def reload_script(name: str, marker: str = SYSTEMD_MARKER) -> str:
    """Reload `name` (re-read its configuration, no restart): `systemctl reload <name>.service`
    where systemd is PID 1, else `service <name> reload`; the script's exit status is the
    reload's."""
    n = shlex.quote(name)
    unit = shlex.quote(f"{name}.service")
    return f"if {_is_systemd(marker)}; then systemctl reload {unit}; else service {n} reload; fi"


def restart_script(name: str, marker: str = SYSTEMD_MARKER) -> str:
    """Restart `name` (stop, then start: a new process reads everything again): systemctl
    where systemd is PID 1, else `service <name> restart`; exit status is the restart's."""
    n = shlex.quote(name)
    unit = shlex.quote(f"{name}.service")
    return f"if {_is_systemd(marker)}; then systemctl restart {unit}; else service {n} restart; fi"
