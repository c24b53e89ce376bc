"""The lab command: `python -m lab up | down | status | reset | profile | knobs | alt-names | run`.

Run as root on a Debian bookworm machine with the packages from `make deps` installed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from lab.config import INFRA_ROLES, KNOB_NAMES, LAYOUTS, parse_pe_version
from lab.deploy import Lab
from lab.generations import PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab", description="A PE-shaped deployment on loopback for tests.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="bring the lab up (idempotent)")
    up.add_argument(
        "--pe-version", help=f"the PE generation every host imitates (lab/generations.py: {', '.join(PROFILES)})"
    )
    up.add_argument(
        "--layout", choices=("", *LAYOUTS), help="where PuppetDB, PE-PostgreSQL and the console run ('': common)"
    )
    up.add_argument("--alt-names", choices=("on", "off"), help="ca.conf allow-subject-alt-names")
    up.add_argument("--real-compile-hosts", help="comma-separated compile hosts that run a real Puppet Server")
    sub.add_parser("down", help="stop every lab process, remove /etc/hosts lines (state is kept)")
    sub.add_parser("reset", help="down, then delete all lab state")
    sub.add_parser("check-down", help="exit 1 listing anything a `lab down` left behind")
    sub.add_parser("status", help="show which hosts and services run")
    profile = sub.add_parser("profile", help="show, or switch a running lab to, a PE generation's profile")
    profile.add_argument("pe_version", nargs="?")
    layout = sub.add_parser("layout", help="show, or move a running lab to, a PE architecture (lab/config.py)")
    layout.add_argument("name", nargs="?", choices=("", *LAYOUTS))
    knobs = sub.add_parser("knobs", help="show or set latency knobs, e.g. knobs install=8 master_run=8")
    knobs.add_argument("values", nargs="*")
    alt = sub.add_parser("alt-names", help="switch the CA's allow-subject-alt-names (restarts the CA)")
    alt.add_argument("state", choices=("on", "off"))
    run = sub.add_parser("run", help="run a command inside a host as root: lab run compile01 -- cmd")
    run.add_argument("host")
    run.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    lab = Lab()

    if args.cmd == "up":
        settings = lab.settings()
        if args.pe_version:
            parse_pe_version(args.pe_version)
            settings.pe_version = args.pe_version
        if args.layout is not None:
            settings.layout = args.layout
        if settings.active_layout not in settings.profile.layouts:
            print(f"{settings.profile.label} has no {settings.active_layout} architecture", file=sys.stderr)
            return 2
        if args.alt_names:
            settings.allow_alt_names = args.alt_names == "on"
        if args.real_compile_hosts is not None:
            settings.real_compile_hosts = [h for h in args.real_compile_hosts.split(",") if h]
        lab.up(settings)
    elif args.cmd == "down":
        lab.down()
    elif args.cmd == "reset":
        lab.reset()
    elif args.cmd == "check-down":
        left = lab.leftovers()
        for item in left:
            print(f"left behind: {item}")
        if left:
            return 1
        print("lab down left nothing behind: no lab processes, listeners, /etc/hosts lines or mounts")
    elif args.cmd == "status":
        for name, state in lab.status().items():
            print(f"{name:14} {state}")
    elif args.cmd == "profile":
        if args.pe_version:
            parse_pe_version(args.pe_version)
            lab.set_pe_version(args.pe_version)
        current = lab.settings().profile
        print(
            f"{current.label}: Puppet {current.puppet_major}, binaries in {current.bin_dir}, "
            f"{current.puppetdb_allowlist}, {current.console_allowlist}"
        )
    elif args.cmd == "layout":
        if args.name is not None:
            lab.set_layout(args.name)
        now = lab.settings()
        hosts = ", ".join(f"{role} on {now.role_host(role).short}" for role in INFRA_ROLES)
        print(f"{now.active_layout} ({now.profile.label} has {', '.join(now.profile.layouts)}): {hosts}")
    elif args.cmd == "knobs":
        values = {}
        for item in args.values:
            key, _, value = item.partition("=")
            if key not in KNOB_NAMES:
                parser.error(f"unknown knob {key!r}; knobs: {', '.join(KNOB_NAMES)}")
            values[key] = float(value)
        if values:
            lab.set_knobs(values)
        print(json.dumps(lab.settings().knobs, indent=2))
    elif args.cmd == "alt-names":
        lab.set_alt_names(args.state == "on")
    elif args.cmd == "run":
        command = args.command[1:] if args.command[:1] == ["--"] else args.command
        return subprocess.call(["nsenter", f"--target={lab.pid(args.host)}", "--mount", "--uts", "--", *command])
    return 0


if __name__ == "__main__":
    sys.exit(main())
