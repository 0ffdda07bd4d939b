#!/usr/bin/env bash
# Prints the rendered Kubernetes manifests of knative/ (what `kubectl apply -k` would send).
#
#   infra/k8s-render.sh            the base (no namespace, placeholder image)
#   infra/k8s-render.sh gke|aks    an overlay
#   infra/k8s-render.sh all        base and every overlay, each after a `---` + `# ==== <name>` line
#
# Uses `kubectl kustomize` (kubectl ships on the project's machines) or a standalone
# `kustomize` binary, whichever is found first.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-base}

render() { # dir
  if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize "$1"
  elif command -v kustomize >/dev/null 2>&1; then
    kustomize build "$1"
  else
    echo "k8s-render: neither kubectl nor kustomize is installed" >&2
    exit 127
  fi
}

dir_of() {
  case $1 in
    base) echo "$repo/knative/base" ;;
    *)
      [ -d "$repo/knative/overlays/$1" ] || {
        echo "k8s-render: no overlay '$1' (have: $(ls "$repo/knative/overlays" | tr '\n' ' '))" >&2
        exit 2
      }
      echo "$repo/knative/overlays/$1"
      ;;
  esac
}

if [ "$target" = all ]; then
  for name in base $(ls "$repo/knative/overlays"); do
    printf -- '---\n# ==== %s\n' "$name"
    render "$(dir_of "$name")"
  done
else
  dir=$(dir_of "$target") || exit $?
  render "$dir"
fi
