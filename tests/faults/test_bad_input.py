"""Bad and hostile input is refused before anything changes, naming the input key.

Two gates, both reached without the lab:
  * each dynamic resource's Check, called through the SDK's own provider server exactly as
    `pulumi preview` calls it (tests/harness/provider_server.py): a failure there is shown
    by the preview and nothing is created;
  * the stack configuration (components/settings.py `parse`, and the program's `main`
    under mocks), which fails the preview naming the `pe:` key.

Every table test has a positive control: the same inputs with a good value for the key
fail only on a deliberately wrong `connect_timeout` (so the inputs are otherwise valid,
the refusal is about the hostile value, and no SSH is attempted by PoolMember's check).
The last part feeds hostile strings to the pure command builders: each must come back as
exactly one shell word (or never reach a builder because its validator refuses it).
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import string
from collections.abc import Callable, Iterator
from typing import Any

import pulumi
import pytest

from components.settings import ConfigError, parse
from provider.codesync import plan
from provider.compile_master import PeCompileMasterProvider
from provider.compile_master_batch import CompileMasterBatchProvider
from provider.core import validation
from provider.file_sync import FileSyncProvider
from provider.infra_refresh import InfraRefreshProvider
from provider.lb import haproxy
from provider.master.agent import install_arguments
from provider.master.config import MasterConfig
from provider.pe import ca
from provider.pe.generation import generation_for, parse_pe_version
from provider.pool_member import PoolMemberProvider
from tests.harness.provider_server import Engine, ProviderServer, Secret

NOWHERE = "127.0.10.250"  # not a lab host: nothing listens, and no check here gets that far
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBvL2tzZOBSbRBlc+ubhaqz4zYl6XYp5oIcGZfQ1f2p5"
KEY = Secret("-----BEGIN OPENSSH PRIVATE KEY-----\nx\n-----END OPENSSH PRIVATE KEY-----\n")
POISON = {"connect_timeout": -1}  # every resource has it; makes a control fail on that key only

# Strings an attacker (or a typo) could put where a name, user or path goes. Each one is
# either shell syntax, an option, a traversal, a line break, a lookalike or nothing.
HOSTILE = [
    "a;rm -rf /",
    "$(id)",
    "`id`",
    "a b",
    "a|b",
    "a&&b",
    "a>b",
    "../x",
    "-oProxyCommand=x",
    "a\nb",
    "compile01.example.com\n",  # `$` in a regex matches before a final newline
    "a\rb",
    "a\tb",
    "a'b",
    'a"b',
    "a\\b",
    "a*",
    "ｃompile01.example.com",  # fullwidth c
    "compile01.exаmple.com",  # Cyrillic a
    "compile01\u200b.example.com",  # zero-width space
    "",
]
HOSTILE_PATHS = [
    "/etc/x;rm -rf /",
    "/etc/$(id)",
    "/etc/`id`",
    "/etc/a b",
    "/etc/a|b",
    "/etc/a&&b",
    "/etc/../../root",
    "/etc/..",
    "../x",
    "relative/x",
    "-oProxyCommand=x",
    "/etc/x\n",
    "/etc/a\nb",
    "/etc/a'b",
    '/etc/a"b',
    "/etc/x*",
    "~/x",
    "/etc/ｘ",
]
# Not DNS names (as certnames and alt names): RFC 1123 labels only, lower case, no IPs.
NOT_DNS = [
    "under_score.example.com",
    "trailing.dot.",
    "a..b",
    "-leading.example.com",
    "trailing-.example.com",
    "a" * 64 + ".example.com",  # a label over 63
    ".".join(["a" * 63] * 4) + ".ab",  # 255 characters in all
    "10.0.0.1",
    "::1",
    "*.example.com",
    "*",
    "Compile01.example.com",
    "puppet.",
]
BAD_PORTS: list[Any] = [0, 65536, -1, "22x", "22", 22.5, True, math.nan, math.inf, -math.inf, 10**10]


# --- inputs of each resource ------------------------------------------------------------
def master(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "host": NOWHERE,
        "ssh_private_key": KEY,
        "ssh_host_key": HOST_KEY,
        "certname": "compile01.example.com",
        "dns_alt_names": ["compile01", "puppet"],
        "primary_host": NOWHERE,
        "primary_ssh_private_key": KEY,
        "primary_ssh_host_key": HOST_KEY,
        "primary_certname": "primary.example.com",
        "database_host": NOWHERE,  # PE 2019.7+: PE-PostgreSQL's host
        "database_ssh_private_key": KEY,
        "database_ssh_host_key": HOST_KEY,
        "pe_version": "2019.8",
        "classifier_url": f"https://{NOWHERE}:4433",
        "rbac_token": Secret("0token"),
    }
    return {**props, **overrides}


def batch(**entry_overrides: Any) -> dict[str, Any]:
    from provider.compile_master_batch import MASTER_KEYS

    shared = {k: v for k, v in master().items() if k not in MASTER_KEYS}
    entry = {"certname": "compile01.example.com", "host": NOWHERE, "ssh_host_key": HOST_KEY, "dns_alt_names": ["c1"]}
    shared_overrides = {k: entry_overrides.pop(k) for k in list(entry_overrides) if k not in MASTER_KEYS}
    return {**shared, **shared_overrides, "masters": [{**entry, **entry_overrides}]}


def member(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "lb_host": NOWHERE,
        "lb_ssh_private_key": KEY,
        "lb_ssh_host_key": HOST_KEY,
        "server_name": "compile01",
        "address": "10.0.0.11",
    }
    return {**props, **overrides}


def sync(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "method": "rsync",
        "host": NOWHERE,
        "ssh_private_key": KEY,
        "ssh_host_key": HOST_KEY,
        "primary_host": NOWHERE,
        "primary_ssh_private_key": KEY,
        "primary_ssh_host_key": HOST_KEY,
    }
    return {**props, **overrides}


def refresh(**overrides: Any) -> dict[str, Any]:
    props: dict[str, Any] = {
        "masters": ["compile01.example.com"],
        "puppetdb_host": NOWHERE,
        "puppetdb_ssh_private_key": KEY,
        "puppetdb_ssh_host_key": HOST_KEY,
        "console_host": NOWHERE,
        "console_ssh_private_key": KEY,
        "console_ssh_host_key": HOST_KEY,
        # Used only with a database_host (PE-PostgreSQL on a host of its own).
        "database_ssh_private_key": KEY,
        "database_ssh_host_key": HOST_KEY,
    }
    return {**props, **overrides}


PROVIDERS: dict[str, Callable[[], Any]] = {
    "PeCompileMaster": PeCompileMasterProvider,
    "CompileMasterBatch": CompileMasterBatchProvider,
    "PoolMember": PoolMemberProvider,
    "FileSync": FileSyncProvider,
    "InfraRefresh": InfraRefreshProvider,
}
BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "PeCompileMaster": master,
    "CompileMasterBatch": batch,
    "PoolMember": member,
    "FileSync": sync,
    "InfraRefresh": refresh,
}


@pytest.fixture(scope="module")
def server() -> Iterator[ProviderServer]:
    with ProviderServer() as srv:
        yield srv


def check(server: ProviderServer, type_name: str, inputs: dict[str, Any]) -> list[tuple[str, str]]:
    return Engine(server, PROVIDERS[type_name](), "r", type_name).check(inputs).failures


# A target: (resource, how a value is placed in its inputs, the failure key that must name it).
Target = tuple[str, Callable[[Any], dict[str, Any]], str]


def target(type_name: str, key: str, failure_key: str | None = None, in_list: bool = False, in_db: bool = False) -> Any:
    build = BUILDERS[type_name]

    def place(value: Any, **extra: Any) -> dict[str, Any]:
        if type_name == "InfraRefresh" and key == "masters":
            return build(masters=["compile01.example.com", value], **extra)
        if in_db:  # InfraRefresh's optional database host: its SSH settings count once it is given
            return build(database_host="db.example.com", **{key: value}, **extra)
        return build(**{key: ["compile01", value] if in_list else value}, **extra)

    shown = failure_key or key
    return pytest.param(type_name, place, shown, id=f"{type_name}.{shown}")


NAME_TARGETS = [
    target("PeCompileMaster", "certname"),
    target("PeCompileMaster", "primary_certname"),
    target("PeCompileMaster", "dns_alt_names", in_list=True),
    target("PeCompileMaster", "host"),
    target("PeCompileMaster", "primary_host"),
    target("PeCompileMaster", "database_host"),
    target("CompileMasterBatch", "certname", "masters[0].certname"),
    target("CompileMasterBatch", "dns_alt_names", "masters[0].dns_alt_names", in_list=True),
    target("CompileMasterBatch", "host", "masters[0].host"),
    target("PoolMember", "server_name"),
    target("PoolMember", "backend"),
    target("PoolMember", "address"),
    target("PoolMember", "lb_host"),
    target("FileSync", "host"),
    target("FileSync", "primary_host"),
    target("InfraRefresh", "masters"),
    target("InfraRefresh", "puppetdb_host"),
    target("InfraRefresh", "console_host"),
]
# Every resource's SSH targets: (resource, input prefix, the failure key's prefix, database_host needed).
SSH_TARGETS = [
    ("PeCompileMaster", "ssh", "ssh", False),
    ("PeCompileMaster", "primary_ssh", "primary_ssh", False),
    ("PeCompileMaster", "database_ssh", "database_ssh", False),
    ("CompileMasterBatch", "ssh", "masters[0].ssh", False),
    ("PoolMember", "lb_ssh", "lb_ssh", False),
    ("FileSync", "ssh", "ssh", False),
    ("FileSync", "primary_ssh", "primary_ssh", False),
    ("InfraRefresh", "puppetdb_ssh", "puppetdb_ssh", False),
    ("InfraRefresh", "console_ssh", "console_ssh", False),
    ("InfraRefresh", "database_ssh", "database_ssh", True),
]
USER_TARGETS = [
    target(type_name, f"{prefix}_user", f"{shown}_user", in_db=db) for type_name, prefix, shown, db in SSH_TARGETS
]
PATH_TARGETS = [
    target("PeCompileMaster", "environmentpath"),
    target("CompileMasterBatch", "environmentpath", "masters[0].environmentpath"),
    target("PoolMember", "check_ca_file"),
    target("PoolMember", "socket_path"),
    target("PoolMember", "config_path"),
    *(
        target("FileSync", key)
        for key in (
            "code_dir",
            "primary_code_dir",
            "state_dir",
            "r10k_config",
            "r10k_cachedir",
            "r10k_bin",
            "rrsync_path",
            "nfs_export",
        )
    ),
    target("InfraRefresh", "puppetdb_whitelist"),
    target("InfraRefresh", "console_whitelist"),
]
PORT_TARGETS = [
    *(target(type_name, f"{prefix}_port", f"{shown}_port", in_db=db) for type_name, prefix, shown, db in SSH_TARGETS),
    target("PoolMember", "port"),
]


def poison_key(type_name: str) -> str:
    return "masters[0].connect_timeout" if type_name == "CompileMasterBatch" else "connect_timeout"


def assert_refused(
    server: ProviderServer, type_name: str, place: Callable[..., dict[str, Any]], key: str, good: Any, bad: list[Any]
) -> None:
    control = dict(check(server, type_name, place(good, **POISON)))
    assert set(control) == {poison_key(type_name)}, f"control {good!r} for {key}: {control}"
    accepted = []
    for value in bad:
        failures = check(server, type_name, place(value))
        if key not in dict(failures):
            accepted.append((value, failures))
    assert not accepted, f"{type_name} check accepted these as {key}: {accepted}"


@pytest.mark.parametrize(("type_name", "place", "key"), NAME_TARGETS)
def test_hostile_names_are_refused_by_check_naming_the_key(
    server: ProviderServer, type_name: str, place: Callable[..., dict[str, Any]], key: str
) -> None:
    good = "10.0.0.12" if key == "address" else "compile02.example.com"
    assert_refused(server, type_name, place, key, good, HOSTILE)


def test_infra_refreshs_database_host_is_optional_and_refused_when_hostile(server: ProviderServer) -> None:
    """InfraRefresh's database_host may be absent ("" too: PE-PostgreSQL on the PuppetDB host)."""
    assert check(server, "InfraRefresh", refresh(database_host="")) == []
    assert check(server, "InfraRefresh", refresh(database_host="db.example.com")) == []
    accepted = [
        v for v in HOSTILE if v and "database_host" not in dict(check(server, "InfraRefresh", refresh(database_host=v)))
    ]
    assert not accepted, accepted


@pytest.mark.parametrize(("type_name", "place", "key"), USER_TARGETS)
def test_hostile_user_names_are_refused_by_check_naming_the_key(
    server: ProviderServer, type_name: str, place: Callable[..., dict[str, Any]], key: str
) -> None:
    assert_refused(server, type_name, place, key, "pe-deploy", [*HOSTILE, "root\n", "Root", "r" * 33])


@pytest.mark.parametrize(("type_name", "place", "key"), PATH_TARGETS)
def test_hostile_paths_are_refused_by_check_naming_the_key(
    server: ProviderServer, type_name: str, place: Callable[..., dict[str, Any]], key: str
) -> None:
    assert_refused(server, type_name, place, key, "/srv/puppet-code_1.2/x@y+z", HOSTILE_PATHS)


@pytest.mark.parametrize(("type_name", "place", "key"), PORT_TARGETS)
def test_ports_outside_1_to_65535_are_refused_by_check_naming_the_key(
    server: ProviderServer, type_name: str, place: Callable[..., dict[str, Any]], key: str
) -> None:
    assert_refused(server, type_name, place, key, 65535, BAD_PORTS)
    assert key not in dict(check(server, type_name, place(1, **POISON)))


@pytest.mark.parametrize(
    ("type_name", "place", "key"),
    [
        target("PeCompileMaster", "certname"),
        target("PeCompileMaster", "dns_alt_names", in_list=True),
        target("CompileMasterBatch", "certname", "masters[0].certname"),
        target("CompileMasterBatch", "dns_alt_names", "masters[0].dns_alt_names", in_list=True),
        target("InfraRefresh", "masters"),
    ],
)
def test_names_that_are_not_dns_names_are_refused(
    server: ProviderServer, type_name: str, place: Callable[..., dict[str, Any]], key: str
) -> None:
    assert_refused(server, type_name, place, key, "xn--bcher-kva.example.com", NOT_DNS)


@pytest.mark.parametrize(
    ("override", "key", "phrase"),
    [
        ({"schedule": "*/5 * * * *\n"}, "schedule", "five cron fields"),  # a second cron line
        ({"schedule": "* * * * * root reboot"}, "schedule", "five cron fields"),
        ({"excludes": ["*.swp\n"]}, "excludes", "patterns"),
        ({"excludes": ["a b"]}, "excludes", "patterns"),
        ({"nfs_options": "ro\n"}, "nfs_options", "mount options"),
        ({"nfs_options": "ro hard"}, "nfs_options", "mount options"),
        ({"method": "r10k", "r10k_remote": "ext::sh -c id"}, "r10k_remote", "plain git URL"),
        ({"method": "r10k", "r10k_remote": "ext::/tmp/evil"}, "r10k_remote", "plain git URL"),  # git remote helper
        ({"method": "r10k", "r10k_remote": "--upload-pack=touch /x"}, "r10k_remote", "plain git URL"),
        ({"method": "r10k", "r10k_remote": "-uevil"}, "r10k_remote", "plain git URL"),
        ({"method": "r10k", "r10k_remote": "git@git.example.com:p/c.git\n"}, "r10k_remote", "plain git URL"),
        ({"method": "rsync\n"}, "method", "one of"),
    ],
)
def test_file_sync_refuses_hostile_schedules_patterns_remotes_and_options(
    server: ProviderServer, override: dict[str, Any], key: str, phrase: str
) -> None:
    failures = dict(check(server, "FileSync", sync(**override)))
    assert key in failures and phrase in failures[key], failures
    good = {"method": "r10k", "r10k_remote": "git@git.example.com:puppet/control-repo.git", **POISON}
    assert set(dict(check(server, "FileSync", sync(**good)))) == {"connect_timeout"}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"pe_version": "2019.8;id"}, "pe_version"),
        ({"pe_version": "2019.8.$(id)"}, "pe_version"),
        ({"pe_version": "2019.٨"}, "pe_version"),  # an Arabic-Indic digit is a digit to str.isdigit
        ({"run_timeout": math.nan}, "run_timeout"),
        ({"install_timeout": math.inf}, "install_timeout"),
    ],
)
def test_compile_master_refuses_hostile_versions_and_non_finite_deadlines(
    server: ProviderServer, override: dict[str, Any], key: str
) -> None:
    assert key in dict(check(server, "PeCompileMaster", master(**override)))


def test_the_primarys_own_certname_and_duplicates_are_refused_by_check(server: ProviderServer) -> None:
    failures = dict(check(server, "PeCompileMaster", master(certname="primary.example.com")))
    assert "primary's own certname" in failures["certname"]
    failures = dict(check(server, "CompileMasterBatch", batch(certname="primary.example.com")))
    assert "primary's own certname" in failures["masters[0].certname"]
    two = batch()
    two["masters"].append({**two["masters"][0], "certname": "COMPILE01.example.com"})  # same after case-folding
    assert "masters[1].certname" in dict(check(server, "CompileMasterBatch", two))
    failures = dict(check(server, "InfraRefresh", refresh(masters=["c1.example.com", "c1.example.com"])))
    assert "twice" in failures["masters"]
    failures = dict(check(server, "InfraRefresh", refresh(masters=["c1.example.com", "C1.example.com"])))
    assert "lower case" in failures["masters"]
    assert check(server, "InfraRefresh", refresh(masters=["c1.example.com", "c2.example.com"])) == []


def test_pool_member_weight_must_be_a_finite_integer(server: ProviderServer) -> None:
    for weight in (math.nan, math.inf, 1.5, "50", 257, -1):
        assert "weight" in dict(check(server, "PoolMember", member(weight=weight))), weight


# --- the stack configuration ------------------------------------------------------------
def stack(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "version": "2019.8",
        "primary": {"host": "primary.example.com", "hostKey": HOST_KEY},
        "console": {"host": "console.example.com", "hostKey": HOST_KEY},
        "puppetdb": {"host": "puppetdb.example.com", "hostKey": HOST_KEY},
        "loadBalancer": {"host": "lb.example.com", "hostKey": HOST_KEY},
        "fileSync": {"method": "rsync"},
        "dnsAltNames": ["puppet", "puppet.example.com"],
        "compileMasters": [
            {"certname": f"compile0{i}.example.com", "address": f"10.0.0.1{i}", "hostKey": HOST_KEY} for i in (1, 2)
        ],
    }
    raw.update(changes)
    return raw


SECRETS = {"sshPrivateKey", "rbacToken"}


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as failed:
        parse(raw, SECRETS)
    return failed.value.key


def with_master(**fields: Any) -> dict[str, Any]:
    masters = stack()["compileMasters"]
    masters[0] = {**masters[0], **fields}
    return stack(compileMasters=masters)


def with_host(section: str, **fields: Any) -> dict[str, Any]:
    return stack(**{section: {**stack()[section], **fields}})


NAME = "compile09.example.com"
SETTING_TARGETS: list[Any] = [
    pytest.param(lambda v: with_master(certname=v), "compileMasters[0].certname", NAME, id="master.certname"),
    pytest.param(lambda v: with_master(address=v), "compileMasters[0].address", "10.0.0.19", id="master.address"),
    pytest.param(lambda v: with_master(dnsAltNames=[v]), "compileMasters[0].dnsAltNames[0]", NAME, id="master.alt"),
    pytest.param(lambda v: with_master(user=v), "compileMasters[0].user", "pe-deploy", id="master.user"),
    pytest.param(
        lambda v: with_master(poolAddress=v), "compileMasters[0].poolAddress", "10.0.0.19", id="master.poolAddress"
    ),
    pytest.param(lambda v: stack(dnsAltNames=["puppet", v]), "dnsAltNames[1]", NAME, id="dnsAltNames"),
    pytest.param(lambda v: stack(sshUser=v), "sshUser", "pe-deploy", id="sshUser"),
    pytest.param(lambda v: with_host("primary", certname=v), "primary.certname", NAME, id="primary.certname"),
    *(
        pytest.param(lambda v, s=section: with_host(s, host=v), f"{section}.host", NAME, id=f"{section}.host")
        for section in ("primary", "console", "puppetdb", "loadBalancer")
    ),
    pytest.param(lambda v: with_host("loadBalancer", backend=v), "loadBalancer.backend", "pool_1", id="lb.backend"),
]


@pytest.mark.parametrize(("place", "key", "good"), SETTING_TARGETS)
def test_stack_config_refuses_hostile_names_naming_the_key(
    place: Callable[[Any], dict[str, Any]], key: str, good: str
) -> None:
    parse(place(good), SECRETS)
    accepted = []
    for value in HOSTILE:
        try:
            parse(place(value), SECRETS)
            accepted.append(value)
        except ConfigError as exc:
            assert exc.key == key, (value, str(exc))
    assert not accepted, f"pe:{key} accepted {accepted}"


@pytest.mark.parametrize(
    ("place", "key"),
    [
        pytest.param(lambda v: with_master(certname=v), "compileMasters[0].certname", id="master.certname"),
        pytest.param(lambda v: with_master(dnsAltNames=[v]), "compileMasters[0].dnsAltNames[0]", id="master.alt"),
        pytest.param(lambda v: stack(dnsAltNames=[v]), "dnsAltNames[0]", id="dnsAltNames"),
    ],
)
def test_stack_config_refuses_alt_names_and_certnames_that_are_not_dns_names(
    place: Callable[[Any], dict[str, Any]], key: str
) -> None:
    for value in NOT_DNS:
        assert config_error(place(value)) == key, value


@pytest.mark.parametrize(
    ("place", "key"),
    [
        pytest.param(lambda v: with_host("loadBalancer", caFile=v), "loadBalancer.caFile", id="lb.caFile"),
        pytest.param(lambda v: stack(fileSync={"method": "rsync", "codeDir": v}), "fileSync.codeDir", id="codeDir"),
        pytest.param(
            lambda v: stack(fileSync={"method": "rsync", "primaryCodeDir": v}),
            "fileSync.primaryCodeDir",
            id="primaryCodeDir",
        ),
    ],
)
def test_stack_config_refuses_hostile_paths(place: Callable[[Any], dict[str, Any]], key: str) -> None:
    parse(place("/srv/code"), SECRETS)
    for value in HOSTILE_PATHS:
        assert config_error(place(value)) == key, value


@pytest.mark.parametrize("section", ["primary", "console", "puppetdb", "loadBalancer"])
def test_stack_config_refuses_ports_outside_1_to_65535(section: str) -> None:
    parse(with_host(section, port=65535), SECRETS)
    for port in BAD_PORTS:
        assert config_error(with_host(section, port=port)) == f"{section}.port", port
    for port in BAD_PORTS:
        assert config_error(with_master(port=port)) == "compileMasters[0].port", port


def test_stack_config_refuses_the_primarys_certname_and_duplicates() -> None:
    masters = stack()["compileMasters"]
    # The primary's certname, given explicitly or defaulting to its host.
    explicit = with_host("primary", certname="ca.example.com")
    explicit["compileMasters"] = [{**masters[0], "certname": "ca.example.com"}]
    assert config_error(explicit) == "compileMasters[0].certname"
    assert config_error(stack(compileMasters=[{**masters[0], "certname": "primary.example.com"}])) == (
        "compileMasters[0].certname"
    )
    # The same certname twice - also spelled differently (case, trailing dot) - and one address twice.
    for twin in ("compile01.example.com", "COMPILE01.example.com", "Compile01.Example.Com", "compile01.example.com."):
        duplicate = stack(compileMasters=[masters[0], {**masters[1], "certname": twin}])
        assert config_error(duplicate) == "compileMasters[1].certname", twin
    duplicate = stack(compileMasters=[masters[0], {**masters[1], "address": masters[0]["address"]}])
    assert config_error(duplicate) == "compileMasters[1].address"
    assert len(parse(stack(), SECRETS)[0].masters) == 2


def test_the_program_fails_the_preview_naming_the_key_for_a_case_folded_duplicate() -> None:
    from components.program import main
    from tests.harness.mocks import run_program

    masters = stack()["compileMasters"]
    raw = stack(compileMasters=[masters[0], {**masters[1], "certname": "Compile01.example.com"}])
    config = {f"pe:{k}": v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}
    config |= {"pe:sshPrivateKey": KEY.value, "pe:rbacToken": "0token"}
    with pytest.raises(pulumi.RunError) as failed:
        run_program(main, stack="faults", config=config)
    assert "stack configuration: pe:compileMasters[1].certname:" in str(failed.value)


# --- command building: validated parts, quoted ------------------------------------------
# What a name may contain once a validator accepted it: nothing a shell, HAProxy's CLI
# (spaces, ';'), cron, fstab or authorized_keys (quotes, spaces) treats as syntax.
SAFE = set(string.ascii_letters + string.digits + "._-")
SAFE_PATH = SAFE | set("/@+")
PROBE = [chr(c) for c in range(0x2FF)] + ["\u2028", "\u200b", "\ufeff", "а", "ｃ", "\u0131"]


@pytest.mark.parametrize(
    ("validator", "inside", "at_end", "allowed"),
    [
        (validation.dns_name_error, "a{}a.example.com", "compile01.example.com{}", SAFE),
        (validation.host_error, "a{}a.example.com", "10.0.0.1{}", SAFE),
        (validation.server_name_error, "a{}a", "compile01{}", SAFE),
        (validation.user_error, "a{}a", "root{}", SAFE),
        (validation.path_error, "/a{}a", "/etc/puppetlabs{}", SAFE_PATH),
        (validation.setting_name_error, "a{}a", "server{}", SAFE),
    ],
    ids=["dns_name", "host", "server_name", "user", "path", "setting_name"],
)
def test_validators_accept_no_character_that_is_syntax_anywhere(
    validator: Callable[[object], str | None], inside: str, at_end: str, allowed: set[str]
) -> None:
    assert validator(inside.format("b")) is None and validator(at_end.format("")) is None  # the controls
    leaked = [c for c in PROBE if validator(inside.format(c)) is None and c not in allowed]
    assert not leaked, f"{validator.__name__} accepts {leaked!r} inside a name"
    trailing = [end for end in ("\n", "\r\n", " ", "\t", "\x00") if validator(at_end.format(end)) is None]
    assert not trailing, f"{validator.__name__} accepts {at_end.format('')!r} followed by {trailing!r}"


def one_token(line: list[str] | str, value: str) -> bool:
    """`value` is exactly one word of the shell line (lists are run with shlex.join)."""
    words = shlex.split(line if isinstance(line, str) else shlex.join(line))
    return value in words


@pytest.mark.parametrize("hostile", HOSTILE[:-1])
def test_ca_commands_are_argument_lists_with_the_certname_as_one_word(hostile: str) -> None:
    for version in ("2018.1", "2019.8"):
        generation = generation_for(version)
        cli, binary = generation.ca_cli, generation.ca_bin
        for command in (ca.sign_command(cli, binary, hostile), ca.clean_command(cli, binary, hostile)):
            assert isinstance(command, list) and command.count(hostile) == 1 and command[0] == binary
            assert one_token(command, hostile) and shlex.split(shlex.join(command)) == command


@pytest.mark.parametrize("hostile", HOSTILE[:-1])
def test_agent_side_commands_keep_the_certname_and_paths_one_word(hostile: str) -> None:
    from provider.master.agent import puppet_conf_strip_script, remove_stale_script

    for version in ("3.7", "2018.1", "2019.8"):
        command = generation_for(version).csr_command(hostile)
        assert command.count(hostile) == 1 and shlex.split(shlex.join(command)) == command

    def words(script: str) -> list[str]:  # sh's words, with `;` and friends as their own tokens
        lexer = shlex.shlex(script, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        return list(lexer)

    stale = words(remove_stale_script({"hostcsr": f"/ssl/{hostile}.pem"}))
    assert stale.count(f"/ssl/{hostile}.pem") == 2  # tested, then removed: each time one word
    strip = words(puppet_conf_strip_script(f"/etc/{hostile}/puppet.conf", ("server",), ("main",)))
    assert strip[:2] == [f"f=/etc/{hostile}/puppet.conf", ";"]


@pytest.mark.parametrize("hostile", HOSTILE[:-1])
def test_haproxy_socket_line_quotes_the_runtime_command_and_the_socket(hostile: str) -> None:
    line = haproxy.socket_command(f"show servers state {hostile}", f"/run/{hostile}")
    assert shlex.split(line) == [
        "echo",
        f"show servers state {hostile}",
        "|",
        "socat",
        "stdio",
        f"UNIX-CONNECT:/run/{hostile}",
    ]
    # HAProxy's own CLI splits on spaces and ';': names never get there unvalidated.
    assert {k for k, _ in haproxy.member_problems(hostile, hostile, hostile, 8140)} == {
        "backend",
        "server_name",
        "address",
    }


def hostile_sync(hostile: str, method: str = "rsync") -> plan.SyncConfig:
    """A SyncConfig built around check (as if validation had a hole)."""
    props = {
        **{k: (v.value if isinstance(v, Secret) else v) for k, v in sync(method=method).items()},
        "resource_name": f"x{hostile}\n* * * * * root reboot",
        "code_dir": f"/srv/{hostile}",
        "state_dir": f"/var/{hostile}",
        "r10k_bin": f"/opt/{hostile}/r10k",
        "r10k_config": f"/etc/{hostile}.yaml",
        "excludes": [hostile],
    }
    return plan.SyncConfig.from_props(props)


@pytest.mark.parametrize("hostile", HOSTILE[:-1])
def test_file_sync_script_cron_and_digest_quote_every_part(hostile: str) -> None:
    cfg = hostile_sync(hostile)
    rsync = plan.sync_command(cfg)
    assert isinstance(rsync, list) and f"--exclude={hostile}" in rsync and f"/srv/{hostile}/environments/" in rsync
    ssh = shlex.split(rsync[rsync.index("-e") + 1])  # rsync splits -e like this (quotes, spaces)
    assert ssh[ssh.index("-i") + 1] == f"/var/{hostile}/id_ed25519"
    assert f"UserKnownHostsFile=/var/{hostile}/known_hosts" in ssh and "StrictHostKeyChecking=yes" in ssh
    script = plan.sync_script(cfg)  # a quoted value may span lines: parse the text, not its lines
    marker = f"exec timeout -k 10 {plan.JOB_TIMEOUT} /bin/sh -c "
    start = script.index(marker) + len(marker)
    quoted = shlex.split(script[start : script.index("; else exec perl -e ", start)])
    assert len(quoted) == 1 and shlex.split(quoted[0]) == rsync  # one word for the shell, then rsync's argv
    start = script.index("; else exec perl -e ") + len("; else exec ")
    perl = shlex.split(script[start : script.index("; fi )", start)])
    assert perl[3:6] == ["1800", "10", "/bin/sh"] and perl[6] == "-c" and shlex.split(perl[7]) == rsync
    start = script.index("\nmkdir -p ") + 1
    assert shlex.split(script[start : script.index("\nexec 9>", start)]) == [
        "mkdir",
        "-p",
        f"/srv/{hostile}/environments",
    ]
    r10k = plan.sync_command(hostile_sync(hostile, "r10k"))
    assert r10k[0] == f"/opt/{hostile}/r10k" and one_token(r10k, f"/etc/{hostile}.yaml")
    # The cron file: the resource name stays inside its comment line; the script is one word.
    named = plan.cron_entry(dataclasses.replace(cfg, state_dir="/var/ok")).splitlines()
    assert len(named) == 4 and named[0].startswith("# ") and not any("reboot" in line for line in named[1:])
    if len(f"{hostile}x".splitlines()) > 1:  # cron is line-based: no quoting helps, only validation
        assert validation.path_error(cfg.state_dir) is not None
    else:
        cron = plan.cron_entry(cfg).splitlines()
        assert shlex.split(cron[3].split(" root ", 1)[1])[0] == f"/var/{hostile}/sync"
    digest = plan.digest_command(f"/srv/{hostile}")
    assert shlex.split(digest)[:3] == ["cd", f"/srv/{hostile}", "&&"]


@pytest.mark.parametrize("hostile", HOSTILE[:-1])
def test_install_arguments_carry_each_hostile_value_as_one_word(hostile: str) -> None:
    props = {k: (v.value if isinstance(v, Secret) else v) for k, v in master().items()}
    cfg = MasterConfig.from_props(
        {**props, "certname": hostile, "dns_alt_names": [hostile], "environmentpath": f"/e/{hostile}"}
    )
    args = install_arguments(cfg)
    command = ["bash", "/tmp/install.bash", *args]  # how provider/master/steps.py runs it (a list: shlex.join)
    for word in (f"main:certname={hostile}", f"main:dns_alt_names={hostile}", f"main:environmentpath=/e/{hostile}"):
        assert args.count(word) == 1 and one_token(command, word)
    assert args[-4:] == ["--puppet-service-ensure", "stopped", "--puppet-service-enable", "false"]


@pytest.mark.parametrize("hostile", [*HOSTILE, "2019.8 x", "2019.8;id", "2019.8.$(id)", "2019.٨", "-2019.8"])
def test_the_generation_is_chosen_from_a_version_never_from_hostile_text(hostile: str) -> None:
    with pytest.raises(ValueError, match="pe_version"):
        parse_pe_version(hostile)
    with pytest.raises(ValueError, match="pe_version"):
        generation_for(hostile)
    assert parse_pe_version("2019.8.5") == (2019, 8, 5)  # the patch level is kept (issue 28)
