"""The light stand-in for a PE 2019.7+ compiler's PuppetDB (compile hosts not listed in
lab.json's real_compile_hosts, where a JVM per host would not fit the machine).

What it keeps of the real one is what can fail: the status says `running` only while this
host's certificate really authenticates to PE-PostgreSQL on the database host - one real
`psql` connection per role PuppetDB uses (pe-puppetdb, pe-puppetdb-read, and
pe-puppetdb-migrator, which PuppetDB connects as first), with the same TLS files and
`sslmode=verify-full`. Until then it answers 503 with state `starting`, as PuppetDB does
while it retries its database connection.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pelab_common as common
import pelab_http

ROLES = ("pe-puppetdb-migrator", "pe-puppetdb", "pe-puppetdb-read")
SSL = Path("/etc/puppetlabs/puppetdb/ssl")
CACHE_SECONDS = 2.0


class DatabaseProbe:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.checked = 0.0
        self.result: tuple[bool, str] = (False, "not checked yet")

    def connect(self, role: str) -> tuple[bool, str]:
        me = common.certname()
        dsn = (
            f"host={common.settings()['database']} port=5432 dbname=pe-puppetdb user={role} sslmode=verify-full "
            f"sslrootcert={SSL / 'ca.pem'} sslcert={SSL / f'{me}.cert.pem'} sslkey={SSL / f'{me}.private_key.pem'} "
            "connect_timeout=5"
        )
        proc = subprocess.run(
            ["psql", "-X", "-A", "-t", "-c", "select current_user", dsn], capture_output=True, text=True, timeout=15
        )
        return proc.returncode == 0, (proc.stdout + proc.stderr).strip()

    def check(self) -> tuple[bool, str]:
        with self.lock:
            if time.monotonic() - self.checked > CACHE_SECONDS:
                self.result = (True, "connected as " + ", ".join(ROLES))
                for role in ROLES:
                    ok, detail = self.connect(role)
                    if not ok:
                        self.result = (False, f"{role}: {detail}")
                        break
                self.checked = time.monotonic()
            return self.result


PROBE = DatabaseProbe()


class Handler(pelab_http.JsonHandler):
    def do_GET(self) -> None:  # noqa: N802
        if self.path.split("?")[0] not in ("/status/v1/services/puppetdb-status", "/status/v1/services"):
            return self.error(404, "not-found", self.path)
        ok, detail = PROBE.check()
        status: dict[str, Any] = {
            "service_version": "7.12.1",
            "service_status_version": 1,
            "detail_level": "info",
            "state": "running" if ok else "starting",
            "status": {"read_db_up?": ok, "write_db_up?": ok, "maintenance_mode?": not ok, "pelab": detail},
        }
        body = status if self.path.startswith("/status/v1/services/") else {"puppetdb-status": status}
        return self.reply(200 if ok else 503, body)


def main() -> None:
    me = common.certname()
    server = pelab_http.TLSServer((common.address_of(me), 8081), Handler, common.server_context())
    print(f"compiler PuppetDB stand-in listening on {me}:8081", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
