"""Each PE generation's reference platform: the oldest master platform PE supported for it,
and the curl and OpenSSL options that platform's own packages have.

The lab's hosts run Debian 12's curl and OpenSSL under every profile. PE's masters ran on
far older ones (RHEL 6's curl 7.19.7 and OpenSSL 1.0.1e, RHEL 7's curl 7.29.0), so an
option newer than the platform would pass in the lab and fail on a real master. Every lab
host therefore reaches curl and openssl through a gate (inhost/bin/pelab-gate, put in
front of /usr/bin by the host's overlay) that refuses, with the tool's own wording for an
unknown option, whatever the profile's platform lacks; options the table does not know are
refused too, so a new one is added here with the version that introduced it.

Pure data and functions: copied into the hosts as pelab_platforms.py by `lab up`.
Sources: PE's system requirements page per version (puppetlabs/docs-archive), the
distributions' package versions, curl's docs/cmdline-opts (each option's "Added:" line)
and OpenSSL's CHANGES / man pages.
"""

from __future__ import annotations

from dataclasses import dataclass

Version = tuple[int, ...]


@dataclass(frozen=True)
class Platform:
    name: str
    curl: Version
    openssl: Version  # 1.0.1e -> (1, 0, 1); 0.9.8e -> (0, 9, 8, 5): a letter counts where an option needs it
    source: str
    coreutils: Version = (8, 30)

    @property
    def has_timeout(self) -> bool:
        """coreutils' timeout(1): "timeout: a new command" in coreutils 7.0 (its NEWS)."""
        return self.coreutils >= (7, 0)

    @property
    def curl_label(self) -> str:
        return ".".join(str(p) for p in self.curl)

    @property
    def openssl_label(self) -> str:
        return label(self.openssl)


# The distributions' own packages (curl, openssl), at the platform's first release: a PE
# master could run on it. Sources: Red Hat's and SUSE's package lists for those releases.
EL5 = Platform("RHEL 5", (7, 15, 5), (0, 9, 8, 5), "RHEL 5: curl-7.15.5, openssl-0.9.8e", (5, 97))
SLES11 = Platform("SLES 11", (7, 19, 0), (0, 9, 8, 10), "SLES 11: curl-7.19.0, openssl-0.9.8j", (6, 12))
EL6 = Platform("RHEL 6", (7, 19, 7), (1, 0, 0), "RHEL 6.0: curl-7.19.7, openssl-1.0.0 (1.0.1e from 6.5)", (8, 4))
EL7 = Platform("RHEL 7", (7, 29, 0), (1, 0, 1), "RHEL 7.0: curl-7.29.0, openssl-1.0.1e (1.0.2k from 7.4)", (8, 22))
EL8 = Platform("RHEL 8", (7, 61, 1), (1, 1, 1), "RHEL 8: curl-7.61.1, openssl-1.1.1", (8, 30))

# The oldest master platform of each PE line the lab has a profile for, newest first:
# (first PE version of the span, platform), from PE's system requirements pages in
# puppetlabs/docs-archive:
#   3.7   pe/3.7/install_system_requirements.markdown: "Red Hat Enterprise Linux | 4, 5, 6, 7
#         | x86_64 | all (RHEL 4 supports agent only)" - EL 5 is a master platform;
#   2016.4 pe/2016.4/sys_req_os.md, "Puppet master platforms": EL 6, 7; "SUSE Linux
#         Enterprise Server 11 (SP1/SP2), 12"; Ubuntu 14.04, 16.04 - SLES 11 is the oldest;
#   2018.1 pe/2018.1/2018.1_markdown/supported_operating_systems.md, "Master platforms":
#         EL "6, 7", SLES 12, Ubuntu 16.04, 18.04 - EL 6;
#   2019.8 PE 2019.8.10.pdf p.178 "Primary server platforms": EL 7, 8, SLES 12, Ubuntu 18.04
#         ("Support for Enterprise Linux 6 ... as a primary server platform was removed in
#         2019.8") - EL 7; 2021.7 (PE 2021.7.1.pdf p.134): EL 7, 8, ... - EL 7;
#   2023.8 (i) EL 7: its page is not in the archive; the 2023.8 client-tools page still lists
#         EL 7 (help.puppet.com/pe/2023.8/topics/supported_pe_client_tools_operating_systems.htm);
#   2025.x (i) EL 8: its page is not in the archive either; peadm's add-compiler test
#         matrix runs 2025.11.0 on AlmaLinux 8 (.github/workflows/test-add-compiler-matrix.yml).
PLATFORM_SPANS: tuple[tuple[Version, Platform], ...] = (
    ((2025, 0), EL8),
    ((2019, 0), EL7),
    ((2018, 0), EL6),
    ((2015, 0), SLES11),
    ((3, 7), EL5),
)


def platform_for(pe_version: Version) -> Platform:
    for first, platform in PLATFORM_SPANS:
        if pe_version >= first:
            return platform
    return PLATFORM_SPANS[-1][1]


# curl options -> the curl version that introduced them (curl's docs/cmdline-opts/*.md,
# "Added:"). Short and long forms share an entry. Only options someone here runs on a host.
CURL_OPTIONS: dict[str, Version] = {
    "-s": (4, 0), "--silent": (4, 0),
    "-S": (5, 9), "--show-error": (5, 9),
    "-f": (4, 0), "--fail": (4, 0),
    "--fail-with-body": (7, 76, 0),
    "-m": (4, 0), "--max-time": (4, 0),
    "--connect-timeout": (7, 7),
    "--cacert": (7, 5),
    "-E": (5, 0), "--cert": (5, 0),
    "--key": (7, 9, 3),
    "-X": (6, 0), "--request": (6, 0),
    "-H": (5, 0), "--header": (5, 0),
    "-d": (4, 0), "--data": (4, 0),
    "--data-binary": (7, 2),
    "--data-urlencode": (7, 18, 0),
    "-G": (7, 8, 1), "--get": (7, 8, 1),
    "-o": (4, 0), "--output": (4, 0),
    "-w": (6, 5), "--write-out": (6, 5),
    "-L": (4, 9), "--location": (4, 9),
    "-I": (4, 0), "--head": (4, 0),
    "-k": (7, 10), "--insecure": (7, 10),
    "--noproxy": (7, 19, 4),
    "--retry": (7, 12, 3),
    "--json": (7, 82, 0),
}  # fmt: skip
# Options that take a value (the next argument is not an option).
CURL_VALUED = frozenset(
    {"-m", "--max-time", "--connect-timeout", "--cacert", "-E", "--cert", "--key", "-X", "--request", "-H",
     "--header", "-d", "--data", "--data-binary", "--data-urlencode", "-o", "--output", "-w", "--write-out",
     "--noproxy", "--retry", "--json"}
)  # fmt: skip
# -w variables -> the version that introduced them (curl's docs/cmdline-opts/write-out.md).
CURL_WRITE_OUT: dict[str, Version] = {
    "http_code": (7, 0),
    "response_code": (7, 18, 2),
    "exitcode": (7, 75, 0),
    "errormsg": (7, 75, 0),
    "json": (7, 70, 0),
}

# openssl subcommand options -> the OpenSSL version that introduced them (OpenSSL's CHANGES
# and the subcommands' man pages), per subcommand.
OPENSSL_OPTIONS: dict[str, dict[str, Version]] = {
    # -servername: 0.9.8f (CHANGES "0.9.8e -> 0.9.8f"); -verify_return_error: 1.0.0;
    # -verify_hostname, -brief, -CRL: 1.0.2 (CHANGES "1.0.1l -> 1.0.2").
    "s_client": {
        "-connect": (0, 9),
        "-CAfile": (0, 9),
        "-servername": (0, 9, 8, 6),
        "-verify_return_error": (1, 0, 0),
        "-verify_hostname": (1, 0, 2),
        "-brief": (1, 0, 2),
        "-showcerts": (0, 9),
        "-cert": (0, 9),
        "-key": (0, 9),
        "-CRL": (1, 0, 2),
    },
    "x509": {
        "-in": (0, 9),
        "-noout": (0, 9),
        "-text": (0, 9),
        "-pubkey": (0, 9, 6),
        "-serial": (0, 9),
        "-fingerprint": (0, 9),
        "-sha256": (1, 0, 0),
        "-subject": (0, 9),
        "-enddate": (0, 9),
        "-ext": (1, 1, 1),
    },
    "pkey": {
        "-in": (1, 0, 0),
        "-pubout": (1, 0, 0),
    },
    "rsa": {
        "-in": (0, 9),
        "-pubout": (0, 9),
    },
    "dgst": {
        "-sha256": (0, 9, 8),
    },
    "req": {
        "-in": (0, 9),
        "-outform": (0, 9),
        "-noout": (0, 9),
        "-text": (0, 9),
    },
    "crl": {
        "-in": (0, 9),
        "-noout": (0, 9),
        "-text": (0, 9),
        "-inform": (0, 9),
    },
    "pkcs8": {
        "-topk8": (0, 9),
        "-inform": (0, 9),
        "-outform": (0, 9),
        "-nocrypt": (0, 9),
        "-in": (0, 9),
        "-out": (0, 9),
    },
}
# openssl subcommands -> the version that introduced them (pkey: 1.0.0, CHANGES "0.9.8n ->
# 1.0.0": "New utilities pkey and pkeyparam").
OPENSSL_COMMANDS: dict[str, Version] = {
    "s_client": (0, 9), "x509": (0, 9), "req": (0, 9), "crl": (0, 9), "pkcs8": (0, 9), "pkey": (1, 0, 0),
    "rsa": (0, 9), "dgst": (0, 9), "version": (0, 9),
}  # fmt: skip
OPENSSL_VALUED = frozenset(
    {"-connect", "-servername", "-CAfile", "-cert", "-key", "-in", "-out", "-inform", "-outform", "-CRL"}
)


def label(version: Version) -> str:
    """(7, 19, 7) -> '7.19.7'; OpenSSL's letter releases: (0, 9, 8, 6) -> '0.9.8f'."""
    text = ".".join(str(p) for p in version[:3])
    return text + (chr(ord("a") + version[3] - 1) if len(version) > 3 and version[3] > 0 else "")


def curl_refusal(argv: list[str], platform: Platform) -> str | None:
    """What `curl` on the platform would say about these arguments, or None if it has them
    all. curl's own message for an option it does not know: "curl: option X: is unknown"."""
    args = iter(argv)
    for arg in args:
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            continue
        options: list[tuple[str, str | None]] = []  # (option, its value if it takes one)
        if arg.startswith("--"):
            name, eq, inline = arg.partition("=")
            options.append((name, (inline if eq else next(args, "")) if name in CURL_VALUED else None))
        else:  # bundled short options: -sSf, -o file, -ofile
            for i, ch in enumerate(arg[1:], start=2):
                name = f"-{ch}"
                if name in CURL_VALUED:
                    options.append((name, arg[i:] or next(args, "")))
                    break
                options.append((name, None))
        for name, value in options:
            refusal = option_refusal(name, platform)
            if refusal is None and name in ("-w", "--write-out") and value is not None:
                refusal = write_out_refusal(value, platform)
            if refusal:
                return refusal
    return None


def _untabled(table: dict[str, Version], name: str, what: str) -> str | None:
    """The lab refuses what its tables do not date: it cannot tell which platforms have it."""
    return None if name in table else f"curl: {what} is not in the lab's table (lab/platforms.py)"


def option_refusal(name: str, platform: Platform) -> str | None:
    untabled = _untabled(CURL_OPTIONS, name, f"option {name}")
    if untabled:
        return untabled
    added = CURL_OPTIONS[name]
    if added <= platform.curl:
        return None
    return (
        f"curl: option {name}: is unknown\ncurl: try 'curl --help' or 'curl --manual' for more "
        f"information\n(lab: {name} arrived in curl {label(added)}; {platform.name} has "
        f"{platform.curl_label}: {platform.source})"
    )


def write_out_refusal(fmt: str, platform: Platform) -> str | None:
    """A -w format with a variable the platform's curl lacks: curl prints it unexpanded
    (no error), which the product would then misread - refused here instead."""
    import re

    for name in re.findall(r"%\{([a-z_]+)\}", fmt):
        untabled = _untabled(CURL_WRITE_OUT, name, f"write-out variable %{{{name}}}")
        if untabled:
            return untabled
        added = CURL_WRITE_OUT[name]
        if added > platform.curl:
            return (
                f"curl: write-out variable %{{{name}}} arrived in curl {label(added)}; {platform.name} has "
                f"{platform.curl_label} ({platform.source}), which prints it unexpanded"
            )
    return None


def openssl_refusal(argv: list[str], platform: Platform) -> str | None:
    """What `openssl` on the platform would say about these arguments, or None."""
    if not argv:
        return None
    command, rest = argv[0], argv[1:]
    added = OPENSSL_COMMANDS.get(command)
    if added is None:
        return f"openssl: command {command} is not in the lab's table of openssl commands (lab/platforms.py)"
    if added > platform.openssl:
        return (
            f"openssl:Error: '{command}' is an invalid command.\n(lab: {command} arrived in OpenSSL "
            f"{label(added)}; {platform.name} has {platform.openssl_label}: {platform.source})"
        )
    args = iter(rest)
    for arg in args:
        if not arg.startswith("-"):
            continue
        option_added = OPENSSL_OPTIONS.get(command, {}).get(arg)
        if option_added is None:
            return f"openssl {command}: option {arg} is not in the lab's table (lab/platforms.py)"
        if option_added > platform.openssl:
            return (
                f"unknown option {arg}\nusage: {command} args\n(lab: openssl {command} {arg} arrived in OpenSSL "
                f"{label(option_added)}; {platform.name} has {platform.openssl_label}: {platform.source})"
            )
        if arg in OPENSSL_VALUED:
            next(args, None)
    return None
