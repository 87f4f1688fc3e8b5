#!/usr/bin/env bash
# A full release on local parts: installs and starts what is missing (dockerd,
# a registry, the Prefect server and UI, ko), makes a source repository shaped
# like FMA at v0.6.4 (its bases pushed to the local registry), releases it with
# the project's default release.yaml, signed with a cosign key pair made for the
# demo (FMA_SIGNING_KEY, unless one is set already), prints the summary and then
# checks the release with fma-release verify. Stop it all with scripts/stop.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"
bash "$here/scripts/services.sh"
REGISTRY_PORT=${FMA_DEMO_REGISTRY_PORT:-5000}
PREFECT_PORT=${FMA_DEMO_PREFECT_PORT:-4200}
TAG=${1:-v0.6.4}

run_id=$(date +%Y%m%d-%H%M%S)
work="$here/.local/demo/$run_id"
# A path of its own per demo run, so that every run publishes afresh.
registry="127.0.0.1:$REGISTRY_PORT/demo-$run_id/llm-d-fast-model-actuation"
eval "$("$here/.venv/bin/python" -m devkit.fma_sample "$work" "127.0.0.1:$REGISTRY_PORT/demo-$run_id/bases" "$TAG")"

if [ -z "${FMA_SIGNING_KEY:-}${FMA_SIGNING_KEY_BLOCK:-}" ]; then
  # A key pair of the demo's own; its password lives in this shell only.
  FMA_SIGNING_PASSWORD=$(head -c 18 /dev/urandom | base64)
  export FMA_SIGNING_PASSWORD FMA_SIGNING_KEY="$work/keys/cosign.key"
  mkdir -p "$work/keys"
  (cd "$work/keys" && COSIGN_PASSWORD=$FMA_SIGNING_PASSWORD "$here/.local/bin/cosign" generate-key-pair >/dev/null 2>&1)
fi
echo "demo: releasing $TAG of $source (tagged commit $tag_commit) to $registry"
export PREFECT_API_URL="http://127.0.0.1:$PREFECT_PORT/api"
"$here/.venv/bin/fma-release" run "$TAG" --source "$source" --config "$config" \
  --registry "$registry" --summary-json "$work/summary.json"
echo "demo: summary JSON at $work/summary.json"
if [ -n "${FMA_SIGNING_KEY:-}" ] && [ -f "${FMA_SIGNING_KEY%.key}.pub" ]; then
  echo "demo: verifying the release from the registry with ${FMA_SIGNING_KEY%.key}.pub"
  "$here/.venv/bin/fma-release" verify "$TAG" --key "${FMA_SIGNING_KEY%.key}.pub" --config "$config" \
    --registry "$registry" --chart fma-controllers
fi
echo "demo: Prefect UI at http://127.0.0.1:$PREFECT_PORT (flow runs -> release $TAG); stop everything with: bash scripts/stop.sh"
