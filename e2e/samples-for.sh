#!/usr/bin/env bash
# e2e/samples-for.sh NAMESPACE [DIR]: config/samples (or the kustomization in DIR, such as
# config/samples/echo) rendered for NAMESPACE. The samples' DNS names are the service names of
# namespace `default` (payments-api.default.svc); an identity may claim only its own namespace's
# service names (the tenant policy), so they are rewritten for NAMESPACE.
set -euo pipefail
cd "$(dirname "$0")/.."
ns=${1:?usage: e2e/samples-for.sh NAMESPACE [DIR]}
kubectl kustomize "${2:-config/samples}" | sed "s/\.default\.svc/.${ns}.svc/g"
