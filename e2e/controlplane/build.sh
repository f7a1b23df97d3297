#!/usr/bin/env bash
# Build the local control plane (kube-apiserver, kubectl, etcd), helm and promtool from
# their Go modules, the way controller-runtime's envtest gets its binaries, and cache them
# outside the repository so a fresh clone (CI) reuses them. The `crds` target fetches the
# CRDs of the database operators dbquota prices (CloudNativePG, Zalando, Crossplane's
# provider-aws) from their Go modules at pinned versions, the same way.
#
#   e2e/controlplane/build.sh [all|k8s|etcd|helm|promtool|crds]   # build what is missing
#
# Layout: ${DBQUOTA_CACHE:-~/.cache/dbquota}/bin/k8s-<ver>/{kube-apiserver,kubectl}
#                                              /etcd-<ver>/etcd
#                                              /helm-<ver>/helm
#                                              /promtool-<ver>/promtool
#                                          /crds/<module name>-<ver>/<crd file>
# If KUBEBUILDER_ASSETS names a folder holding etcd, kube-apiserver and kubectl, those are
# used and nothing is built for them.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
PROMETHEUS_VERSION=${PROMETHEUS_VERSION:-v3.16.0}
CNPG_VERSION=${CNPG_VERSION:-v1.27.1}
ZALANDO_VERSION=${ZALANDO_VERSION:-v1.14.0}
PROVIDER_AWS_VERSION=${PROVIDER_AWS_VERSION:-v1.14.0}
CACHE=${DBQUOTA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbquota}
export CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { printf '[build] %s\n' "$*" >&2; }

staging_minor=${K8S_VERSION#v1.}               # 36.3
staging_version=v0.${staging_minor}            # v0.36.3
k8s_minor=${staging_minor%%.*}                 # 36
STAGING="api apiextensions-apiserver apimachinery apiserver cli-runtime client-go
cloud-provider cluster-bootstrap code-generator component-base component-helpers
controller-manager cri-api cri-client cri-streaming csi-translation-lib
dynamic-resource-allocation endpointslice externaljwt kms kube-aggregator
kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics mount-utils
pod-security-admission sample-apiserver sample-cli-plugin sample-controller streaming"

build_k8s() {
  local out=$CACHE/bin/k8s-$K8S_VERSION
  if [[ -x $out/kube-apiserver && -x $out/kubectl ]]; then return; fi
  local work=$CACHE/src/k8s-$K8S_VERSION
  mkdir -p "$work" "$out"
  log "building kube-apiserver and kubectl $K8S_VERSION in $work (cold: tens of minutes)"
  {
    echo "module dbquota.local/k8s-build"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in $STAGING; do echo "	k8s.io/$m => k8s.io/$m $staging_version"; done
    echo ")"
  } >"$work/go.mod"
  cat >"$work/tools.go" <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  (cd "$work" && go mod tidy)
  local pkg=k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$k8s_minor"
  ldflags+=" -X $pkg.gitTreeState=clean"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$k8s_minor"
  (cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver)
  (cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$out/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl)
  mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
  mv "$out/kubectl.tmp" "$out/kubectl"
}

build_etcd() {
  local out=$CACHE/bin/etcd-$ETCD_VERSION
  if [[ -x $out/etcd ]]; then return; fi
  local work=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$work" "$out"
  log "building etcd $ETCD_VERSION in $work"
  printf 'module dbquota.local/etcd-build\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$ETCD_VERSION" >"$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' >"$work/tools.go"
  (cd "$work" && go mod tidy)
  (cd "$work" && go build -trimpath -ldflags "-s -w" -o "$out/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$out/etcd.tmp" "$out/etcd"
}

build_helm() {
  local out=$CACHE/bin/helm-$HELM_VERSION
  if [[ -x $out/helm ]]; then return; fi
  mkdir -p "$out"
  log "building helm $HELM_VERSION"
  local pkg=helm.sh/helm/v3/internal/version
  GOBIN=$out go install -trimpath \
    -ldflags "-s -w -X $pkg.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# promtool checks and unit-tests the chart's PrometheusRule (tests/chart). Prometheus
# publishes its Go module as v0.<major*100+minor>.<patch>: release v3.16.0 is module
# v0.316.0. Its go.mod has no replace directives, so `go install pkg@version` builds it
# with exactly the dependency versions Prometheus pins. The remove_all_sd tag leaves out
# the service-discovery plugins (cloud SDKs, most of the build; rule checks and tests
# need none of them).
build_promtool() {
  local out=$CACHE/bin/promtool-$PROMETHEUS_VERSION
  if [[ -x $out/promtool ]]; then return; fi
  mkdir -p "$out"
  local release=${PROMETHEUS_VERSION#v}                    # 3.16.0
  local major=${release%%.*} rest=${release#*.}            # 3, 16.0
  local minor=${rest%%.*} patch=${rest#*.}                 # 16, 0
  local module_version=v0.$((major * 100 + minor)).$patch  # v0.316.0
  log "building promtool $PROMETHEUS_VERSION (module $module_version)"
  local pkg=github.com/prometheus/common/version
  GOBIN=$out go install -trimpath -tags remove_all_sd \
    -ldflags "-s -w -X $pkg.Version=$release -X $pkg.Branch=HEAD -X $pkg.Revision=$module_version" \
    "github.com/prometheus/prometheus/cmd/promtool@$module_version"
}

# fetch_crd NAME MODULE VERSION FILE: copy FILE of MODULE@VERSION (from the Go module
# proxy, through the module cache) to $CACHE/crds/NAME-VERSION/.
fetch_crd() {
  local name=$1 module=$2 version=$3 file=$4
  local out=$CACHE/crds/$name-$version
  if [[ -f $out/${file##*/} ]]; then return; fi
  log "fetching $module@$version for $file"
  local dir
  dir=$(go mod download -json "$module@$version" |
    python3 -c 'import json, sys; d = json.load(sys.stdin); print(d.get("Dir") or sys.exit(d.get("Error", "no Dir")))')
  mkdir -p "$out"
  install -m 0644 "$dir/$file" "$out/${file##*/}.tmp"
  mv "$out/${file##*/}.tmp" "$out/${file##*/}"
}

fetch_crds() {
  fetch_crd cloudnative-pg github.com/cloudnative-pg/cloudnative-pg "$CNPG_VERSION" \
    config/crd/bases/postgresql.cnpg.io_clusters.yaml
  fetch_crd postgres-operator github.com/zalando/postgres-operator "$ZALANDO_VERSION" \
    manifests/postgresql.crd.yaml
  fetch_crd provider-aws github.com/upbound/provider-aws "$PROVIDER_AWS_VERSION" \
    package/crds/rds.aws.upbound.io_instances.yaml
}

# One build at a time per cache: two at once (`make binaries` and `make lint`, or two
# clones) would write the same work folders and race on the same .tmp files. The second
# waits here, then finds what the first built and returns.
mkdir -p "$CACHE"
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then
  log "another build holds $CACHE/.build.lock; waiting for it"
  flock 9
fi

what=${1:-all}
case $what in
  k8s) build_k8s ;;
  etcd) build_etcd ;;
  helm) build_helm ;;
  promtool) build_promtool ;;
  crds) fetch_crds ;;
  all)
    if [[ -n ${KUBEBUILDER_ASSETS:-} && -x $KUBEBUILDER_ASSETS/kube-apiserver \
          && -x $KUBEBUILDER_ASSETS/etcd && -x $KUBEBUILDER_ASSETS/kubectl ]]; then
      log "using KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS for etcd, kube-apiserver, kubectl"
    else
      build_etcd
      build_k8s
    fi
    build_helm
    build_promtool
    fetch_crds
    ;;
  *) echo "usage: $0 [all|k8s|etcd|helm|promtool|crds]" >&2; exit 2 ;;
esac
