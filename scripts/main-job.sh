#!/usr/bin/env bash
# The main job against the lab: `pulumi up` of the `lab` stack (Pulumi.lab.yaml), with a
# local state backend under the lab root so the lab never touches your Pulumi Cloud org.
# Needs the Pulumi CLI (https://www.pulumi.com/docs/iac/download-install/); without it,
# this says so and stops (the lab stays up for the tests and for you).
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT="${PELAB_ROOT:-/var/lib/pelab}"
if ! command -v pulumi >/dev/null 2>&1; then
  echo "main job: the Pulumi CLI is not installed here, so \`pulumi up --stack lab\` was not run."
  echo "          Install it, then run \`make lab\` again (the lab itself is up: \`make lab-status\`)."
  exit 0
fi
mkdir -p "$ROOT/pulumi-state"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$ROOT/pulumi-state}"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-lab}"  # lab-only secrets provider passphrase
pulumi stack select --create lab
if [ "$ROOT" != /var/lib/pelab ]; then
  pulumi config set pe:sshPrivateKeyFile "$ROOT/keys/lab_ed25519"
  pulumi config set pe:knownHostsFile "$ROOT/keys/known_hosts"
  pulumi config set pe:rbacTokenFile "$ROOT/keys/rbac-token"
fi
pulumi preview --diff
pulumi up --yes --skip-preview
pulumi stack output
