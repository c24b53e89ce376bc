#!/bin/bash
# PE-style agent installer, served by the lab's primary at
#   https://@PRIMARY@:8140/packages/current/install.bash
# Usage (as PE documents it):
#   curl --cacert ca.pem https://@PRIMARY@:8140/packages/current/install.bash | bash -s -- \
#     main:dns_alt_names=a,b agent:certname=x extension_requests:pp_auth_role=pe_compiler \
#     --puppet-service-ensure stopped --puppet-service-enable false
# section:key=value arguments go to puppet.conf (main, agent, server, user) or to
# csr_attributes.yaml (extension_requests, custom_attributes, from PE 2016.4), then, as PE's
# installer does, an initial run submits the CSR and the agent service starts - unless
# `--puppet-service-ensure stopped` (PE 2016.4.9+/2017.2.5+): then "an initial Puppet run
# doesn't occur" (pe-generations.md §5 [S23,S24]), so no CSR either. Flags and sections a
# generation's installer did not know are refused. The lab's hosts share the machine's
# Puppet 7; "installing the package" lays out the generation's PE paths
# (inhost/bin/pelab-pe-install); the install latency knob stands in for the download.
set -euo pipefail

PRIMARY="@PRIMARY@"
INHOST="@INHOST@"
service_ensure=running
service_enable=true
settings=()
extension_requests=()
custom_attributes=()

die() { echo "install.bash: $*" >&2; exit 1; }

eval "$("$INHOST/bin/pelab-pe-install" shell)"  # PE_LABEL BIN_DIR AGENT_SERVICE SERVICE_FLAGS CSR_ATTRIBUTES
while [ $# -gt 0 ]; do
  case "$1" in
    -s|--) ;;
    --puppet-service-ensure|--puppet-service-enable)
      [ "$SERVICE_FLAGS" = 1 ] || die "unrecognised argument '$1' (the $PE_LABEL installer has no service flags)"
      [ $# -ge 2 ] || die "$1 needs a value"
      if [ "$1" = --puppet-service-ensure ]; then service_ensure="$2"; else service_enable="$2"; fi
      shift ;;
    *:*=*)
      section="${1%%:*}"; kv="${1#*:}"; key="${kv%%=*}"; value="${kv#*=}"
      [[ "$key" =~ ^[a-z_][a-z0-9_]*$ ]] || die "bad setting name '$key' in '$1'"
      case "$section" in
        main|agent|server|user) settings+=("$section" "$key" "$value") ;;
        extension_requests|custom_attributes)
          [ "$CSR_ATTRIBUTES" = 1 ] || die "unknown section '$section' in '$1' (new in PE 2016.4)"
          if [ "$section" = extension_requests ]; then extension_requests+=("$key" "$value")
          else custom_attributes+=("$key" "$value"); fi ;;
        *) die "unknown section '$section' in '$1'" ;;
      esac ;;
    *) die "unrecognised argument '$1'" ;;
  esac
  shift
done
case "$service_ensure" in running|stopped) ;; *) die "--puppet-service-ensure must be running or stopped" ;; esac

"$INHOST/bin/pelab-delay" install
"$INHOST/bin/pelab-pe-install" agent
echo "Notice: $PE_LABEL agent installed ($BIN_DIR/puppet, service $AGENT_SERVICE)"

# PE's installer runs `puppet config set` once per setting; the lab writes them all in one
# process (pelab-config-set does what `puppet config set` does), since its hosts share 2 cores.
# Lab speed-ups, not PE behaviour: 2048-bit keys (Puppet 7 defaults to 4096, whose key
# generation takes tens of seconds on the lab's 2 cores), and no HTTP keep-alive (Debian's
# Ruby 3.1 agent stalls 30 s reusing a connection after its CSR PUT to Debian's Puppet
# Server 7). Arguments given to this script come last, so they win.
# Debian's puppet-agent keeps puppet.conf in /etc/puppet (PE's installer knows its own
# package's /etc/puppetlabs/puppet the same way).
"$INHOST/bin/pelab-config-set" /etc/puppet/puppet.conf \
  main server "$PRIMARY" main keylength 2048 main http_keepalive_timeout 0 "${settings[@]}"
for ((i = 0; i < ${#settings[@]}; i += 3)); do
  echo "Notice: puppet.conf [${settings[i]}] ${settings[i+1]} = ${settings[i+2]}"
done

declare -A agent=()
while IFS= read -r line; do
  agent["${line%% = *}"]="${line#* = }"
done < <("$INHOST/bin/pelab-puppet" config print csr_attributes certname hostcert --section agent)
certname="${agent[certname]}"

if [ ${#extension_requests[@]} -gt 0 ] || [ ${#custom_attributes[@]} -gt 0 ]; then
  /usr/bin/python3 - "${agent[csr_attributes]}" "${#extension_requests[@]}" "${extension_requests[@]}" "${custom_attributes[@]}" <<'PY'
import json, sys
path, n = sys.argv[1], int(sys.argv[2])
ext, attrs = sys.argv[3:3 + n], sys.argv[3 + n:]
def block(name, pairs):
    if not pairs:
        return ""
    return name + ":\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in zip(pairs[::2], pairs[1::2]))
with open(path, "w") as f:
    f.write("---\n" + block("custom_attributes", attrs) + block("extension_requests", ext))
print(f"Notice: wrote {path}")
PY
fi

if [ "$service_ensure" = running ]; then
  # The initial run: its first act is the CSR (then it waits for the certificate; the
  # service started below goes on waiting, as PE's does).
  if [ -s "${agent[hostcert]}" ]; then
    echo "Notice: certificate for $certname already present; not requesting another"
  else
    "$INHOST/bin/pelab-puppet" ssl submit_request --certname "$certname"
    echo "Notice: certificate request for $certname submitted to $PRIMARY"
  fi
  service "$AGENT_SERVICE" start
else
  service "$AGENT_SERVICE" stop >/dev/null 2>&1 || true
  echo "Notice: --puppet-service-ensure stopped: no initial run, so no certificate request"
fi
echo "Notice: puppet service ensure=$service_ensure enable=$service_enable"
