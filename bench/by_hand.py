"""PE's procedure for adding compilers, done by hand: the documented commands in a script,
no product, on the same lab hosts, knobs and CPU sampler as bench/scale_out.py. It is the
experiment behind issue 16's floors: what N compilers cost this machine (wall, CPU-s per
compiler) when nothing but PE's own steps run, all hosts in parallel as a fast admin's
script would (a `for` loop with `&`), the shared runs once for the whole batch (peadm's fix).

The procedure (PE 2019.7+, the lab's default generation: ../shared/facts/pe-procedure.md,
the 2019.7+ row and "What peadm's add_compilers does", steps 2, 3 and 5):
  1. on each new compiler: install.bash with its DNS alt names and
     `extension_requests:pp_auth_role=pe_compiler`, the service left as PE's installer leaves
     it (running: its initial run submits the CSR, then the service waits for the certificate);
  2. on the CA: what `puppetserver ca sign --certname <all of them>` sends, one PUT of
     certificate_status per compiler, by curl with the primary's certificate (the lab's
     Debian Ruby stalls 30 s reusing a connection to Debian's Puppet Server, see
     lab/templates/install.bash: the CLI would add 30 s per certname that PE's does not);
  3. on PE-PostgreSQL's host: the compilers' pg_ident lines, one reload (peadm, before the
     compilers' first run: their PuppetDB connects with their certificate);
  4. on each compiler: `puppet agent --onetime --no-daemonize ...` (peadm's run helper:
     it waits for a run in progress, e.g. the service's, to end first), which applies PE
     Compiler's profiles (the compile service, the compiler's PuppetDB);
  5. once for the batch: a Puppet run on PuppetDB's host, then on the console's (the lab's
     split install: the allowlists are rewritten from what PuppetDB knows), then on the
     primary ("Run Puppet on the compiler, and then on the primary server": its file sync
     then serves the compilers; from 2026-12-07, so earlier figures lack this run).
No load balancer, code sync or verification beyond the runs' exit codes: those are not
PE's procedure, so leaving them out makes this a floor for the product's figures.
"""

from __future__ import annotations

import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench import cpu
from lab.client import LabClient, LabHost
from provider.pe.agent_runs import RUN_FLAGS  # peadm's run flags (PE facts, not the product's logic)
from provider.pe.generation import PUPPETDB_PG_IDENT_MAPS
from tests.labtests.helpers import PRIMARY, bare_masters

RUN = " ".join(["agent", *RUN_FLAGS])


@dataclass
class ByHand:
    n: int
    seconds: float
    cpu_seconds: float  # machine busy CPU-s during the procedure (the sampler's own left out)
    purposes: dict[str, float]  # compile hosts' CPU-s by what the command is for
    steps: dict[str, float]  # step -> seconds it took (wall, all hosts)
    roles: dict[str, float] = field(default_factory=dict)  # CPU-s by lab host role (bench/cpu.py)
    step_cpu: dict[str, float] = field(default_factory=dict)  # step -> machine CPU-s during it


def _on(host: LabHost, command: str, timeout: float) -> None:
    for _ in range(3):
        result = host.run(command.format(certname=host.fqdn), timeout)
        if result.exit_status in (0, 2):  # --detailed-exitcodes: 2 is "changes applied"
            return
        if "already in progress" not in result.stdout + result.stderr:  # the service won the lock: again
            break
    raise RuntimeError(f"{host.fqdn}: {command} exited {result.exit_status}: {result.stderr[-2000:]}")


def _parallel(hosts: list[LabHost], command: str, timeout: float) -> None:
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        list(pool.map(lambda h: _on(h, command, timeout), hosts))


def _agent_run(puppet: str) -> str:
    """peadm's run helper: wait for a run in progress (its lock file) to end, then run once.
    The lock's path is the lab agent's (Debian's Puppet: statedir /var/cache/puppet/state),
    not read with `puppet config print`, which would add a Ruby start-up to the floor."""
    lock = "/var/cache/puppet/state/agent_catalog_run.lock"
    return f"for i in $(seq 600); do [ -e {lock} ] || break; sleep 1; done; {puppet} {RUN}"


def _ca_curl(primary: str) -> str:
    """curl to the CA's HTTP API with the primary's own certificate, verified against the CA (-f: an
    HTTP error fails the step; options every PE platform's curl has, lab/platforms.py)."""
    ssl = "/var/lib/puppet/ssl"
    return (
        f"curl -sSf --max-time 60 --cacert {ssl}/certs/ca.pem --cert {ssl}/certs/{primary}.pem "
        f"--key {ssl}/private_keys/{primary}.pem -H 'Content-Type: application/json' "
    )


def sign_command(primary: str, certnames: list[str]) -> str:
    """PUT certificate_status {"desired_state": "signed"} per certname: the requests
    `puppetserver ca sign` sends (puppetlabs/puppetserver-ca-cli, action/sign.rb)."""
    put = _ca_curl(primary) + """-X PUT --data '{"desired_state":"signed"}' """
    return " && ".join(
        put + shlex.quote(f"https://{primary}:8140/puppet-ca/v1/certificate_status/{c}") for c in certnames
    )


def clean_command(primary: str, certnames: list[str]) -> str:
    """What `puppetserver ca clean` sends (action/clean.rb): revoke, then delete, per certname."""
    url = f"https://{primary}:8140/puppet-ca/v1/certificate_status/"
    revoke = _ca_curl(primary) + """-X PUT --data '{"desired_state":"revoked"}' """
    delete = _ca_curl(primary) + "-X DELETE "
    return " && ".join(f"{revoke}{shlex.quote(url + c)} && {delete}{shlex.quote(url + c)}" for c in certnames)


def pg_ident_add(data: str, certnames: list[str]) -> str:
    """peadm's three lines per compiler (`<map> <certname> <role>`) appended to pg_ident.conf."""
    lines = "".join(f"{m} {c} {role}\n" for c in certnames for m, role in PUPPETDB_PG_IDENT_MAPS)
    return f"printf %s {shlex.quote(lines)} >> {shlex.quote(data + '/pg_ident.conf')}"


def pg_ident_remove(data: str, certnames: list[str]) -> str:
    """Those lines removed again (and no other certname's)."""
    maps = "|".join(re.escape(m) for m, _ in PUPPETDB_PG_IDENT_MAPS)
    script = f"/^({maps}) (" + "|".join(re.escape(c) for c in certnames) + ") /d"
    return f"sed -i -E {shlex.quote(script)} {shlex.quote(data + '/pg_ident.conf')}"


def run(client: LabClient, n: int, state_dir: Path) -> ByHand:
    """PE's procedure for compile01..compileN from bare hosts; they are left as it leaves them
    (call `undo` before the product's runs)."""
    profile = client.profile
    if profile.pe_version < (2019, 7):
        raise SystemExit(f"bench.by_hand scripts PE 2019.7+'s procedure; the lab runs {profile.label}")
    shorts = [f"compile{i:02d}" for i in range(1, n + 1)]
    bare_masters(client, shorts)
    hosts = [client.host(s) for s in shorts]
    for host in hosts:
        host.put("/tmp/pe-ca.pem", Path(client.ca_file).read_bytes())
    puppet = f"{profile.bin_dir}/puppet"
    install = (  # the CA in the agent's ssldir first, as PE's install.bash places it (no trust on first use)
        "mkdir -p /var/lib/puppet/ssl/certs && cp /tmp/pe-ca.pem /var/lib/puppet/ssl/certs/ca.pem && "
        f"curl -sSf --cacert /tmp/pe-ca.pem https://{PRIMARY}:8140/packages/current/install.bash | bash -s -- "
        "main:certname={certname} main:dns_alt_names={certname},puppet,puppet.pelab.test "
        "extension_requests:pp_auth_role=pe_compiler"
    )
    steps: dict[str, tuple[float, float]] = {}  # step -> (monotonic start, end)
    t0, busy0, roles0 = time.monotonic(), cpu.machine_busy_seconds(), cpu.snapshot()
    with cpu.sampling(state_dir / "bench-by-hand-purposes.json") as sampled:
        mark = time.monotonic()
        _parallel(hosts, install, 1800)
        steps["1. install.bash (its initial run submits the CSR; service running)"] = (mark, time.monotonic())
        mark = time.monotonic()
        client.host("primary").run(sign_command(PRIMARY, [h.fqdn for h in hosts]), 300).check()
        steps["2. sign on the CA (all)"] = (mark, time.monotonic())
        mark = time.monotonic()
        add = pg_ident_add(profile.postgresql_data, [h.fqdn for h in hosts])
        client.role_host("database").run(f"{add} && service pe-postgresql reload", 120).check()
        steps["3. pg_ident lines + PE-PostgreSQL reload"] = (mark, time.monotonic())
        mark = time.monotonic()
        _parallel(hosts, _agent_run(puppet), 1800)
        steps["4. agent run on each compiler"] = (mark, time.monotonic())
        # PE's page (2019.8): "Run Puppet on the compiler, and then on the primary server"; a
        # split install runs PuppetDB and the console before the primary. One run per host
        # (the lab's layout may put them all on the primary).
        roles = ("puppetdb", "console", "primary")
        for short in dict.fromkeys(client.role_host(r).spec.short if r != "primary" else r for r in roles):
            mark = time.monotonic()
            _parallel([client.host(short)], _agent_run(puppet), 1800)
            steps[f"5. agent run on {short}"] = (mark, time.monotonic())
    seconds = time.monotonic() - t0
    busy = cpu.machine_busy_seconds() - busy0 - sampled.own_cpu
    return ByHand(
        n,
        seconds,
        busy,
        sampled.purposes,
        {step: end - start for step, (start, end) in steps.items()},
        cpu.spent(roles0, cpu.snapshot()),
        {step: sampled.work_between(start, end) for step, (start, end) in steps.items()},
    )


def undo(client: LabClient, n: int) -> None:
    """Back to bare hosts: certificates cleaned, agents gone, the compilers deactivated in
    PuppetDB and their pg_ident lines removed (what the product's delete does, by hand)."""
    shorts = [f"compile{i:02d}" for i in range(1, n + 1)]
    primary = client.host("primary")
    for short in shorts:
        certname = client.host(short).fqdn
        requests.post(
            f"https://{client.role_host('puppetdb').fqdn}:8081/pdb/cmd/v1?command=deactivate_node&version=3&certname={certname}",
            json={"certname": certname, "producer_timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            cert=primary.cert_files(),
            verify=client.ca_file,
            timeout=30,
        ).raise_for_status()
    primary.run(clean_command(PRIMARY, [client.host(s).fqdn for s in shorts]), 300).check()  # no CLI stalls
    remove = pg_ident_remove(client.profile.postgresql_data, [client.host(s).fqdn for s in shorts])
    client.role_host("database").run(f"{remove} && service pe-postgresql reload").check()
    bare_masters(client, shorts)
