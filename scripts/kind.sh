#!/usr/bin/env bash
# Run the whole system on a local kind cluster, or tear it down (docs/kind.md):
#
#   bash scripts/kind.sh up      # cluster, image, chart, Topic, ConsumerGroup, records, scaling
#   bash scripts/kind.sh down    # delete the kind cluster
#
# Needs Docker and kind; helm and kubectl are taken from PATH, or else fetched (pinned) by
# scripts/k8s-tools.sh. KIND_CLUSTER_NAME (default millstream) names the kind cluster,
# MILLSTREAM_NAMESPACE (default streaming) the namespace. `up` can be run again on a cluster it
# created: every step converges.
#
# Run by .github/workflows/kind.yml on hosted runners; the project's own CI machine has no
# Docker. tests/k8s/test_kind.py checks this file statically (shellcheck, and that the values,
# resources and fields it names exist in the chart and the CRDs).
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=${KIND_CLUSTER_NAME:-millstream}
namespace=${MILLSTREAM_NAMESPACE:-streaming}
# Loaded into the nodes by `kind load`, never pulled: hence pullPolicy Never below.
readonly image=millstream:kind
# The chart names the Cluster after the release, and the operator names the Cluster's
# StatefulSet and client Service after the Cluster: all three are "millstream".
readonly release=millstream
readonly url=http://millstream:9092
readonly timeout=300s
# The chart's values, checked against charts/millstream/values.schema.json by the tests.
readonly helm_values=(
    --set image.registry=
    --set image.repository=millstream
    --set image.tag=kind
    --set image.pullPolicy=Never
    --set cluster.create=true
    --set cluster.brokers=2
    --set cluster.storage.size=1Gi
    --set cluster.pvcPolicy=Delete
)

step() { printf '\n== kind.sh: %s\n' "$*"; }
die() {
    printf 'kind.sh: %s\n' "$*" >&2
    exit 1
}
need() { command -v "$1" >/dev/null || die "$1 is not installed: $2"; }
k() { kubectl --context "kind-$cluster" --namespace "$namespace" "$@"; }

check_docker_and_kind() {
    need docker "see https://docs.docker.com/engine/install/"
    docker info >/dev/null 2>&1 ||
        die "docker cannot reach a Docker engine: start it, or check your access to its socket"
    need kind "see https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
}

check_helm_and_kubectl() {
    if ! command -v helm >/dev/null || ! command -v kubectl >/dev/null; then
        step "helm or kubectl not on PATH: fetching the pinned ones (scripts/k8s-tools.sh)"
        PATH="$(bash scripts/k8s-tools.sh):$PATH"
    fi
    need helm "install it, or run scripts/k8s-tools.sh and put its directory on PATH"
    need kubectl "install it, or run scripts/k8s-tools.sh and put its directory on PATH"
}

# Run the image's CLI in a pod in the namespace, wait for it to finish, print its output.
# kubectl run --attach can miss the output of a short pod; waiting and reading logs does not.
in_pod() {
    local name=$1
    shift
    k delete pod "$name" --ignore-not-found --wait >/dev/null
    k run "$name" --image="$image" --image-pull-policy=Never --restart=Never \
        --env="MILLSTREAM_URL=$url" "$@" >/dev/null
    if ! k wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$name" --timeout=120s >/dev/null; then
        k logs "pod/$name" >&2 || true
        die "pod $name did not succeed"
    fi
    k logs "pod/$name"
    k delete pod "$name" --wait=false >/dev/null
}

# consume_all POD COUNT [ARGS...]: read COUNT records of orders (as ARGS say), print them.
consume_all() {
    local out
    out=$(in_pod "$1" -- consume orders --from-beginning --max-records "$2" --format json "${@:3}")
    printf '%s\n' "$out"
    [[ $(wc -l <<<"$out") -eq $2 ]] || die "expected $2 records, got the above"
}

scale_to() {
    step "scaling Cluster $release to $1 brokers (spec.brokers)"
    k patch clusters.millstream.io "$release" --type=merge -p "{\"spec\":{\"brokers\":$1}}"
    k wait --for=jsonpath='{.status.readyBrokers}'="$1" "clusters.millstream.io/$release" \
        --timeout="$timeout"
    k wait --for=condition=Ready "clusters.millstream.io/$release" --timeout="$timeout"
    k rollout status "statefulset/$release" --timeout="$timeout"
    k get pods --output=wide
}

# On failure (any exit but 0 once the cluster exists), what a person or a CI log needs to see.
diagnose() {
    local status=$?
    ((status != 0)) || return 0
    step "failed (exit $status): state of namespace $namespace"
    k get millstream,statefulsets,pods,pvc --output=wide || true
    k describe "clusters.millstream.io/$release" || true
    k logs "deployment/$release-operator" --tail=100 || true
    k get events --sort-by=.lastTimestamp | tail -n 30 || true
}

up() {
    check_docker_and_kind
    check_helm_and_kubectl

    local clusters
    clusters=$(kind get clusters)
    if grep -qx "$cluster" <<<"$clusters"; then
        step "kind cluster $cluster exists: using it"
    else
        step "creating kind cluster $cluster (deploy/kind/cluster.yaml)"
        kind create cluster --name "$cluster" --config deploy/kind/cluster.yaml --wait 120s
    fi
    trap diagnose EXIT

    step "building $image from the Dockerfile and loading it into the nodes"
    docker build --tag "$image" .
    kind load docker-image "$image" --name "$cluster"

    step "installing charts/millstream as release $release in namespace $namespace"
    helm upgrade --install "$release" charts/millstream --kube-context "kind-$cluster" \
        --namespace "$namespace" --create-namespace "${helm_values[@]}"

    step "waiting for the operator and the brokers"
    k rollout status "deployment/$release-operator" --timeout="$timeout"
    k wait --for=condition=Ready "clusters.millstream.io/$release" --timeout="$timeout"
    k rollout status "statefulset/$release" --timeout="$timeout"
    k get millstream

    step "applying examples/topic.yaml and examples/consumergroup.yaml"
    k apply -f examples/topic.yaml -f examples/consumergroup.yaml
    k wait --for=condition=Ready topics.millstream.io/orders --timeout="$timeout"
    k get topics.millstream.io orders -o jsonpath='{.status.placement}{"\n"}'

    step "producing 3 records to topic orders from a pod ($url)"
    in_pod producer --command -- sh -c \
        'printf "alice:espresso\nbob:tea\ncarol:mocha\n" | millstream produce orders --key-separator :'

    step "consuming them as group billing from a pod (it commits its offsets)"
    consume_all consumer 3 --group billing
    k get consumergroups.millstream.io billing

    scale_to 4
    scale_to 1

    step "producing 3 more records after scaling"
    in_pod producer-2 --command -- sh -c \
        'printf "dave:latte\nerin:cortado\nfrank:mocha\n" | millstream produce orders --key-separator :'

    step "group billing carries on from its committed offsets: only the 3 new records"
    local again
    again=$(consume_all consumer-2 3 --group billing)
    printf '%s\n' "$again"
    grep -q alice <<<"$again" && die "group billing read alice's record again: its offsets were lost"

    step "reading everything from the beginning: all 6 records are still there"
    consume_all reader 6

    step "done: kubectl --context kind-$cluster --namespace $namespace get millstream"
    k get millstream
}

down() {
    check_docker_and_kind
    step "deleting kind cluster $cluster"
    kind delete cluster --name "$cluster"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) die "usage: $0 up|down" ;;
esac
