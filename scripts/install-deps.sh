#!/usr/bin/env bash
# Install what the lab and the tests need on a Debian bookworm machine (run as root).
# Idempotent: re-running only installs what is missing. Services the packages ship are
# NOT started (the lab starts its own, inside its namespaced hosts).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  puppetserver puppet-agent      # the real CA/compiler and agents (Debian's Puppet 7)
  haproxy socat                  # the load balancer and its runtime API client
  openssh-server openssh-client  # one sshd per lab host
  rsync r10k git cron            # code sync between masters and its periodic job
  puppetdb puppet-terminus-puppetdb  # the real PuppetDB (7.12) and the primary's terminus for it
  postgresql                     # PE-PostgreSQL's stand-in: a real PostgreSQL 15 cluster
  openssl curl ca-certificates
  python3 python3-yaml python3-venv  # in-host lab services run on the machine's python3
  util-linux iproute2 procps psmisc  # unshare, nsenter, findmnt, pgrep
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  created_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    # Keep package scripts from starting sshd/haproxy/puppetserver machine-wide.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    created_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  # PuppetDB's package would otherwise have dbconfig-common set up a database in the
  # machine's own PostgreSQL cluster; the lab runs its own cluster in the PuppetDB host.
  echo "puppetdb puppetdb/dbconfig-install boolean false" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "$created_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.requirements.sha256
want="$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
# The project's own bytecode, as pip writes its packages': every `pulumi` command starts a
# program host and a provider server that import provider/ and components/, and where
# PYTHONDONTWRITEBYTECODE=1 is set (this workplace sets it) each would compile them afresh
# (~70 ms a process, docs/performance.md). A source edited later only makes its file stale:
# Python checks the source's mtime and compiles it in memory again.
.venv/bin/python -m compileall -q provider components lab bench tests __main__.py
bash scripts/install-pulumi.sh
echo "install-deps: ok"
