"""HAProxy pieces for pool membership: stat parsing, runtime commands, config edits."""

from __future__ import annotations

import pytest

from provider.lb import haproxy

HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,"
    "weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,"
    "rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,"
    "hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,"
    "lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,"
    "agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo"
)


def row(px: str, sv: str, status: str, scur: int, weight: int, addr: str, check: str = "") -> str:
    fields = [""] * 78
    fields[0], fields[1], fields[4], fields[17], fields[18], fields[73] = px, sv, str(scur), status, str(weight), addr
    fields[36] = check
    return ",".join(fields)


def test_show_stat_rows_become_server_states() -> None:
    text = "\n".join(
        [
            HEADER,
            row("puppet_8140", "FRONTEND", "OPEN", 0, 0, ""),
            row("puppet_compilers", "compile01", "UP", 3, 10, "127.0.10.11:8140", "L7OK"),
            row("puppet_compilers", "dead", "DOWN", 0, 1, "127.0.10.26:8140", "* L4CON"),
            row("puppet_compilers", "fresh", "UP", 0, 1, "127.0.10.27:8140", "INI"),
            row("puppet_compilers", "BACKEND", "UP", 3, 11, ""),
        ]
    )
    stats = haproxy.parse_show_stat(text)
    assert set(stats) == {("puppet_compilers", n) for n in ("compile01", "dead", "fresh")}
    up = stats[("puppet_compilers", "compile01")]
    assert up.is_healthy and up.current_sessions == 3 and up.weight == 10 and up.address == "127.0.10.11:8140"
    assert not stats[("puppet_compilers", "dead")].is_healthy
    assert stats[("puppet_compilers", "dead")].check_status == "L4CON"
    # UP before its first check (leaving maintenance) is not healthy yet.
    assert not stats[("puppet_compilers", "fresh")].is_healthy
    assert haproxy.parse_show_stat("Unknown command") == {}


def test_runtime_commands_and_socket_line_are_quoted() -> None:
    keywords = haproxy.server_keywords("127.0.10.11", 8140, 10, "/etc/haproxy/pe-ca.pem")
    cmds = haproxy.add_server_commands("puppet_compilers", "compile01", keywords)
    assert cmds[0].startswith("add server puppet_compilers/compile01 127.0.10.11:8140 weight 10 check check-ssl")
    assert cmds[1:] == ["enable health puppet_compilers/compile01", "enable server puppet_compilers/compile01"]
    assert haproxy.remove_commands("b", "s") == ["set server b/s state maint", "del server b/s"]
    line = haproxy.socket_command("show stat", "/run/haproxy/admin.sock")
    assert line == "echo 'show stat' | socat stdio UNIX-CONNECT:/run/haproxy/admin.sock"


CFG = """global
    daemon

backend puppet_compilers
    balance leastconn
    option httpchk GET /status/v1/simple

backend other
    server x 10.0.0.1:80
"""


def test_config_edits_add_replace_and_remove_one_server_line() -> None:
    added = haproxy.config_with_server(CFG, "puppet_compilers", "compile01", "127.0.10.11:8140 weight 1 check")
    assert "    option httpchk GET /status/v1/simple\n    server compile01 127.0.10.11:8140 weight 1 check\n" in added
    assert (
        haproxy.config_with_server(added, "puppet_compilers", "compile01", "127.0.10.11:8140 weight 1 check") == added
    )
    reweighted = haproxy.config_with_server(added, "puppet_compilers", "compile01", "127.0.10.11:8140 weight 5 check")
    assert reweighted.count("server compile01") == 1 and "weight 5" in reweighted
    removed = haproxy.config_without_server(reweighted, "puppet_compilers", "compile01")
    assert removed == CFG
    assert "server x 10.0.0.1:80" in removed  # other backends untouched
    with pytest.raises(KeyError, match="no `backend missing`"):
        haproxy.config_with_server(CFG, "missing", "s", "k")


@pytest.mark.parametrize(
    ("backend", "server", "address", "port", "bad"),
    [
        ("puppet_compilers", "bad name", "127.0.10.11", 8140, "server_name"),
        ("puppet_compilers", "x;del", "127.0.10.11", 8140, "server_name"),
        ("b b", "ok", "127.0.10.11", 8140, "backend"),
        ("puppet_compilers", "ok", "127.0.10.11", 0, "port"),
        ("puppet_compilers", "ok", "127.0.10.11", 65536, "port"),
        ("puppet_compilers", "ok", "no such host!", 8140, "address"),
    ],
)
def test_member_input_is_refused_before_anything_changes(
    backend: str, server: str, address: str, port: int, bad: str
) -> None:
    assert bad in dict(haproxy.member_problems(backend, server, address, port))
    assert haproxy.member_problems("puppet_compilers", "compile01", "127.0.10.11", 8140) == []


def test_member_drift_names_what_is_wrong() -> None:
    from provider.lb.drivers import MemberSpec, MemberState
    from provider.pool_member import member_drift

    spec = MemberSpec("puppet_compilers", "c1", "10.0.0.1", 8140, 100, "/etc/haproxy/pe-ca.pem", 2000)
    good = MemberState("UP", "L7OK", True, 0, 100, "10.0.0.1:8140", True)
    assert member_drift(spec, good) == []
    assert member_drift(spec, None) == ["missing from the pool"]
    down = MemberState("DOWN", "L4CON", False, 0, 50, "10.0.0.1:8140", False)
    assert member_drift(spec, down) == [
        "DOWN (last check L4CON)",
        "weight 50, not 100",
        "not saved in the configuration (a reload would drop it)",
    ]
    assert member_drift(spec, MemberState("MAINT", "", False, 0, 100, "10.0.0.1:8140", True)) == ["in maintenance"]
    assert member_drift(spec, MemberState("DRAIN", "L7OK", False, 0, 100, "10.0.0.1:8140", True)) == ["draining"]


def test_runtime_answers_other_than_success_are_errors() -> None:
    assert haproxy.runtime_error("New server registered.\n") is None
    assert haproxy.runtime_error("\n") is None
    assert haproxy.runtime_error("No such backend.\n") == "No such backend."
    cfg = "backend puppet_compilers\n    balance leastconn\n    server c1 10.0.0.1:8140 weight 5 check\n"
    assert haproxy.config_server_line(cfg, "puppet_compilers", "c1") == "10.0.0.1:8140 weight 5 check"
    assert haproxy.config_server_line(cfg, "puppet_compilers", "c2") is None
    assert haproxy.has_backend(cfg, "puppet_compilers") and not haproxy.has_backend(cfg, "other")


def test_the_runtime_api_version_is_read_from_show_info() -> None:
    info = "Name: HAProxy\nVersion: 2.6.12-1+deb12u1\nRelease_date: 2023/12/16\n"
    assert haproxy.parse_version(info) == (2, 6)
    assert haproxy.parse_version("Version: 2.4.22-0ubuntu0.22.04.3\n") == (2, 4) < haproxy.MIN_RUNTIME_VERSION
    assert haproxy.parse_version("Version: 3.0.5\n") == (3, 0) >= haproxy.MIN_RUNTIME_VERSION
    assert haproxy.parse_version("Unknown command\n") is None
