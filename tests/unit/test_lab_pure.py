"""Pure pieces of the lab: roster, /etc/hosts editing, the console's PE semantics, and
reading Puppet's report YAML (golden data captured from the lab's real Puppet Server)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lab.config import (
    ETC_HOSTS_BEGIN,
    ETC_HOSTS_END,
    INFRA_ROLES,
    LAYOUTS,
    LabSettings,
    etc_hosts_block,
    host_by_short,
    infra_certnames,
    parse_pe_version,
    replace_etc_hosts_block,
    role_host,
    roster,
)
from lab.generations import profile_for
from lab.hosts import HostPaths, boot_script

DATA = Path(__file__).resolve().parents[1] / "data"
INHOST = Path(__file__).resolve().parents[2] / "lab" / "inhost"


def inhost_module(name: str) -> ModuleType:
    sys.path.insert(0, str(INHOST))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(INHOST))


def test_roster_has_infrastructure_and_sixteen_compile_hosts_on_distinct_loopback_addresses() -> None:
    hosts = roster()
    assert [h.short for h in hosts[:4]] == ["primary", "console", "puppetdb", "lb"]
    assert len([h for h in hosts if h.role == "compile"]) == 16
    assert len({h.address for h in hosts}) == len(hosts)
    assert all(h.address.startswith("127.0.10.") for h in hosts)
    assert host_by_short("compile16.pelab.test").address == "127.0.10.26"


def test_etc_hosts_block_is_added_replaced_and_removed_without_touching_other_lines() -> None:
    original = "127.0.0.1 localhost\n::1 localhost\n"
    block = etc_hosts_block(roster()[:2])
    once = replace_etc_hosts_block(original, block)
    assert once.startswith(original) and ETC_HOSTS_BEGIN in once and ETC_HOSTS_END in once
    assert replace_etc_hosts_block(once, block) == once  # idempotent
    assert replace_etc_hosts_block(once, None) == original
    assert replace_etc_hosts_block("no newline at end", None) == "no newline at end"


def test_pe_versions_parse_and_bad_ones_are_refused() -> None:
    assert parse_pe_version("3.7") == (3, 7, 0)  # without a patch level: the line's first release
    assert parse_pe_version("2019.8.5") == (2019, 8, 5)
    with pytest.raises(ValueError, match=r"3\.7, 2019\.8 or 2016\.4\.9"):
        parse_pe_version("latest")


def test_boot_script_quotes_paths_and_gives_every_host_pes_layout_without_debians_puppet() -> None:
    """Each host sees its own /opt/puppetlabs, /opt/puppet and /usr/local/bin, and /usr/bin
    through an overlay (Debian's puppet/puppetserver whited out): PE's host surface."""
    root = Path("/var/lib/pe lab")
    primary = boot_script(HostPaths(root, host_by_short("primary")))
    compile01 = boot_script(HostPaths(root, host_by_short("compile01")))
    assert "'/var/lib/pe lab/hosts/primary/etc-puppet' /etc/puppet" in primary
    for short, script in (("primary", primary), ("compile01", compile01)):
        for name, mountpoint in (("opt-puppetlabs", "/opt/puppetlabs"), ("usr-local-bin", "/usr/local/bin")):
            assert f"'/var/lib/pe lab/hosts/{short}/{name}' {mountpoint}\n" in script
        overlay = next(line for line in script.splitlines() if " -t overlay " in line)
        assert overlay.endswith(" /usr/bin") and f"upperdir='/var/lib/pe lab/hosts/{short}/usr-bin-upper'" in overlay
        assert " /usr/bin/puppet" not in script  # nothing bound over Debian's puppet any more
    assert "puppet-legacy" not in compile01
    assert compile01.rstrip().splitlines()[-1].startswith("exec /usr/sbin/sshd -D")


@pytest.fixture(scope="module")
def console() -> ModuleType:
    return inhost_module("console")


def test_rules_follow_the_classifier_grammar(console: ModuleType) -> None:
    node = {
        "name": "c1.example.com",
        "facts": {"os": {"family": "Debian"}, "memory": 8},
        "trusted": {"extensions": {"pp_auth_role": "pe_compiler"}},
    }
    assert console.matches(["or", ["=", "name", "x"], ["=", "name", "c1.example.com"]], node)
    assert console.matches(["and", ["~", "name", r"^c\d"], ["=", ["fact", "os", "family"], "Debian"]], node)
    assert console.matches(["=", ["trusted", "extensions", "pp_auth_role"], "pe_compiler"], node)
    assert console.matches([">=", ["fact", "memory"], "4"], node)
    assert not console.matches(["not", ["=", "name", "c1.example.com"]], node)
    assert not console.matches(None, node)
    assert console.validate_rule(["or", ["=", "name", "a"]]) is None
    assert console.validate_rule(["=", "hostname", "a"]) is not None
    assert console.validate_rule(["xor", ["=", "name", "a"]]) is not None


def test_classification_inherits_rules_and_classes_from_ancestors(console: ModuleType) -> None:
    root = console.ROOT_GROUP_ID
    groups = {
        root: {
            "id": root,
            "parent": root,
            "rule": ["and", ["~", "name", ".*"]],
            "classes": {},
            "variables": {},
            "environment": "production",
            "environment_trumps": False,
        },
        "infra": {
            "id": "infra",
            "parent": root,
            "rule": None,
            "classes": {"puppet_enterprise": {"a": 1}},
            "variables": {},
            "environment": "production",
            "environment_trumps": False,
        },
        "master": {
            "id": "master",
            "parent": "infra",
            "rule": ["or", ["=", "name", "m1"]],
            "classes": {"puppet_enterprise::profile::master": {}},
            "variables": {},
            "environment": "production",
            "environment_trumps": False,
        },
        "child": {
            "id": "child",
            "parent": "master",
            "rule": ["or", ["~", "name", "^m"]],
            "classes": {},
            "variables": {},
            "environment": "production",
            "environment_trumps": False,
        },
    }
    m1 = console.classify(groups, {"name": "m1", "facts": {}, "trusted": {}})
    assert set(m1["groups"]) == {root, "master", "child"}
    assert m1["classes"] == {"puppet_enterprise": {"a": 1}, "puppet_enterprise::profile::master": {}}
    # m2 matches the child's own rule but not its parent's: not in the child (inherited rules).
    m2 = console.classify(groups, {"name": "m2", "facts": {}, "trusted": {}})
    assert m2["groups"] == [root]


def test_unpinning_removes_only_the_named_nodes(console: ModuleType) -> None:
    rule = ["or", ["=", "name", "a"], ["=", "name", "b"], ["~", "name", "x"]]
    assert console.Handler.without_pins(rule, {"a"}) == ["or", ["=", "name", "b"], ["~", "name", "x"]]
    assert console.Handler.without_pins(["or", ["=", "name", "a"]], {"a"}) is None


def _config_set_module() -> ModuleType:
    from importlib.machinery import SourceFileLoader
    from importlib.util import module_from_spec, spec_from_loader

    loader = SourceFileLoader("pelab_config_set", str(INHOST / "bin" / "pelab-config-set"))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("before", "section", "key", "after"),
    [
        ([], "main", "server", ["[main]", "server = v"]),
        (["server = x", "[agent]", "certname = y"], "main", "server", ["server = v", "[agent]", "certname = y"]),
        (
            ["[main]", "server = x", "", "[agent]"],
            "main",
            "keylength",
            ["[main]", "server = x", "keylength = v", "", "[agent]"],
        ),
        (["[main]", "certname = x"], "agent", "certname", ["[main]", "certname = x", "[agent]", "certname = v"]),
        (
            ["[main]", "a = 1", "[agent]", "certname = x", ""],
            "agent",
            "certname",
            ["[main]", "a = 1", "[agent]", "certname = v", ""],
        ),
    ],
)
def test_lab_config_set_edits_puppet_conf_like_puppet_config_set(
    before: list[str], section: str, key: str, after: list[str]
) -> None:
    """The lab's installer writes its settings in one process; it must land each in its
    section, replacing the same key there only."""
    assert _config_set_module().set_setting(before, section, key, "v") == after


def test_lab_config_set_writes_several_settings_and_refuses_bad_names(tmp_path: Path) -> None:
    module = _config_set_module()
    conf = tmp_path / "puppet.conf"
    assert module.main([str(conf), "main", "server", "p", "agent", "certname", "c", "main", "server", "q"]) == 0
    assert conf.read_text() == "[main]\nserver = q\n[agent]\ncertname = c\n"
    assert module.main([str(conf), "main", "bad key", "x"]) == 2
    assert module.main([str(conf), "main", "server"]) == 2


def test_the_lb_health_check_follows_the_generation() -> None:
    from lab.deploy import HTTP_CHECK, haproxy_cfg, with_health_check

    cfg = haproxy_cfg("127.0.10.5")
    assert HTTP_CHECK in cfg
    tls_only = with_health_check(cfg, status_simple=False)  # PE 3.x: Puppet Server < 2.6
    assert "httpchk" not in tls_only and "check check-ssl verify required" in tls_only
    assert with_health_check(tls_only, status_simple=False) == tls_only
    assert with_health_check(tls_only, status_simple=True) == cfg


# --- PE's architectures (lab/config.py LAYOUTS, Profile.layouts) ----------------------------


def test_each_layout_puts_puppetdb_the_console_and_the_database_on_its_hosts() -> None:
    where = {layout: {role: role_host(role, layout).short for role in INFRA_ROLES} for layout in LAYOUTS}
    assert where["split"] == {"puppetdb": "puppetdb", "console": "console", "database": "puppetdb"}
    assert where["monolithic"] == {"puppetdb": "primary", "console": "primary", "database": "primary"}
    assert where["extra-large"] == {"puppetdb": "primary", "console": "primary", "database": "puppetdb"}
    # The installer's trusted certnames: each infrastructure host once, the primary first.
    assert infra_certnames("monolithic") == ["primary.pelab.test"]
    assert infra_certnames("split") == ["primary.pelab.test", "puppetdb.pelab.test", "console.pelab.test"]
    assert infra_certnames("extra-large") == ["primary.pelab.test", "puppetdb.pelab.test"]
    with pytest.raises(ValueError, match="unknown lab layout"):
        role_host("puppetdb", "large")


def test_each_generation_has_the_architectures_pe_documents_for_it() -> None:
    assert profile_for("3.7").layouts == ("monolithic", "split")
    assert profile_for("2018.1").layouts == ("monolithic", "split")
    assert profile_for("2019.0").layouts == ("monolithic", "split", "extra-large")  # split deprecated
    assert profile_for("2019.8").layouts == ("monolithic", "extra-large")  # split gone in 2019.2
    assert profile_for("2025.12").layouts == ("monolithic", "extra-large")


def test_lab_json_names_the_hosts_of_the_layout_and_keeps_the_choice(tmp_path: Path) -> None:
    default = json.loads(LabSettings().to_json(tmp_path))
    assert default["active_layout"] == "monolithic"  # the generation's common one
    assert (default["puppetdb"], default["console"], default["database"]) == ("primary.pelab.test",) * 3
    assert default["infra_certnames"] == ["primary.pelab.test"]
    split = LabSettings(pe_version="2018.1", layout="split")
    data = json.loads(split.to_json(tmp_path))
    assert (data["puppetdb"], data["console"], data["database"]) == (
        "puppetdb.pelab.test",
        "console.pelab.test",
        "puppetdb.pelab.test",
    )
    assert LabSettings.from_json(split.to_json(tmp_path)).layout == "split"


def test_the_console_points_its_infrastructure_groups_at_the_layout_hosts(
    console: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "at_least", lambda version: True)
    split = {"primary": "p.test", "puppetdb": "db.test", "console": "c.test", "database": "db.test"}
    groups = console.seed_groups(split)
    console.point_infrastructure(groups, split)
    by_name = {g["name"]: g for g in groups.values()}
    assert by_name["PE Database"]["rule"] == ["or", ["=", "name", "db.test"]]  # PE 2018.1+
    serial = by_name["PE PuppetDB"]["serial_number"]
    monolithic = {**split, "puppetdb": "p.test", "console": "p.test", "database": "p.test"}
    console.point_infrastructure(groups, monolithic)
    assert by_name["PE PuppetDB"]["rule"] == ["or", ["=", "name", "p.test"]]
    assert by_name["PE PuppetDB"]["serial_number"] == serial + 1
    assert by_name["PE Console"]["rule"] == ["or", ["=", "name", "p.test"]]
    assert by_name["PE Infrastructure"]["classes"]["puppet_enterprise"]["puppetdb_host"] == "p.test"
    assert [g["name"] for g in groups.values()].count("PE Database") == 1
