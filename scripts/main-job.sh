#!/usr/bin/env bash
# The main job against the lab: the real Pulumi CLI (scripts/install-pulumi.sh) applies the
# `lab` stack (Pulumi.lab.yaml) with a local state backend under the lab root (the lab never
# touches a Pulumi Cloud org) and a passphrase secrets provider. `up --refresh` reads the
# hosts first, so a lab that tests or a person changed is repaired, and an unchanged one
# reports no changes. The program is served by scripts/pulumi (pulumicli/): no language host.
set -euo pipefail
cd "$(dirname "$0")/.."

ROOT="${PELAB_ROOT:-/var/lib/pelab}"
mkdir -p "$ROOT/pulumi-state"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$ROOT/pulumi-state}"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-lab}"  # lab-only secrets provider passphrase
pulumi=scripts/pulumi
config=(--stack lab)
if [ "$ROOT" != /var/lib/pelab ]; then
  # Pulumi.lab.yaml names the default lab root: a lab elsewhere gets a copy with its paths.
  sed "s#/var/lib/pelab/#$ROOT/#" Pulumi.lab.yaml > "$ROOT/pulumi-state/Pulumi.lab.yaml"
  config+=(--config-file "$ROOT/pulumi-state/Pulumi.lab.yaml")
fi
"$pulumi" stack select --create lab --non-interactive
echo "main job: pulumi up --refresh --stack lab (state: $PULUMI_BACKEND_URL)"
"$pulumi" up --refresh --yes --non-interactive "${config[@]}"
"$pulumi" stack output --stack lab
