#!/usr/bin/env bash
# Provide a real Kubernetes control plane for the test suite: kube-apiserver and
# kube-controller-manager built from Debian bookworm's source package `kubernetes` (1.20.2, with
# its Go dependencies vendored, so the build is offline) with Debian's Go 1.19, and etcd from
# Debian's etcd-server. One vendored library is replaced by its fixed release (see patch_vendor).
#
# Called by scripts/test.sh (and so by CI) before pytest, and by hand. tests/support/kube.py
# looks for the binaries where this script leaves them:
#     ${XDG_CACHE_HOME:-$HOME/.cache}/millstream/kube/<version>/{kube-apiserver,kube-controller-manager,etcd}
# The build takes minutes, so the result is cached there and a later run only checks it. The
# last line on stdout is that directory; progress goes to stderr.
#
# Environment: MILLSTREAM_KUBE_KEEP_BUILD=1 keeps the source tree and Go build cache
# (under .../millstream/kube/build-<version>) after a successful build, for debugging.
set -euo pipefail

readonly kube_version=1.20.2
# The source package lives in bookworm whatever release this machine runs.
readonly source_suite=bookworm
readonly binaries=(kube-apiserver kube-controller-manager)
# Written beside the binaries; change it whenever the build changes, so that stale caches rebuild.
readonly recipe="kubernetes $kube_version from Debian source, vendored reflect2 1.0.2, Debian Go"

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/millstream/kube"
cache="$cache_root/$kube_version"
build="$cache_root/build-$kube_version"

log() { printf 'kube-apiserver.sh: %s\n' "$*" >&2; }

as_root() {
    if ((EUID == 0)); then
        "$@"
    else
        sudo "$@"
    fi
}

built() {
    local name
    [[ $(cat "$cache/RECIPE" 2>/dev/null) == "$recipe" ]] || return 1
    for name in "${binaries[@]}"; do
        [[ -x $cache/$name ]] || return 1
    done
}

# Install Debian packages that are missing; `apt-get update` only when something is.
apt_install() {
    local pkg status missing=()
    for pkg in "$@"; do
        status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
        [[ $status == "install ok installed" ]] || missing+=("$pkg")
    done
    ((${#missing[@]} > 0)) || return 0
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# Print one-line deb-src entries for the source suite on the mirrors this machine already uses
# for its main Debian archive (the entries whose suite is the release's own codename, which
# leaves out -security, -updates and third-party repositories). Reads both the deb822
# (*.sources) and the one-line (*.list) formats.
derive_deb_src() {
    local codename
    # shellcheck source=/dev/null
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:?}")
    {
        shopt -s nullglob
        local file
        for file in /etc/apt/sources.list.d/*.sources; do
            awk -v codename="$codename" '
                function flush() {
                    if (types ~ /(^| )deb( |$)/ && enabled != "no" && (" " suites " ") ~ (" " codename " ")) {
                        n = split(uris, u, " ")
                        for (i = 1; i <= n; i++) print (key == "" ? "" : "[signed-by=" key "] ") u[i]
                    }
                    types = uris = suites = key = enabled = ""
                }
                /^#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ { next }   # continuation, e.g. an inline key: not needed for a path
                {
                    field = tolower($1); sub(/:$/, "", field); $1 = ""; sub(/^ +/, "")
                    if (field == "types") types = $0
                    else if (field == "uris") uris = $0
                    else if (field == "suites") suites = $0
                    else if (field == "enabled") enabled = tolower($0)
                    else if (field == "signed-by" && $0 ~ /^\//) key = $0
                }
                END { flush() }
            ' "$file"
        done
        for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
            [[ -f $file ]] || continue
            awk -v codename="$codename" '
                $1 != "deb" { next }
                {
                    opts = ""; i = 2
                    if ($2 ~ /^\[/) {
                        while (i <= NF) { opts = opts (opts == "" ? "" : " ") $i; if ($i ~ /\]$/) break; i++ }
                        i++
                    }
                    if ($(i + 1) == codename) print (opts == "" ? "" : opts " ") $i
                }
            ' "$file"
        done
    } | sort -u | while read -r entry; do
        printf 'deb-src %s %s main\n' "$entry" "$source_suite"
    done
}

fetch_source() {
    local apt_dir="$build/apt"
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
    derive_deb_src >"$apt_dir/sources.list"
    if [[ ! -s $apt_dir/sources.list ]]; then
        log "found no Debian archive in /etc/apt to derive a deb-src entry from"
        exit 1
    fi
    log "deb-src entries: $(tr '\n' ';' <"$apt_dir/sources.list")"
    # A private apt configuration: the system's sources and lists stay untouched.
    local apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=$apt_dir/sources.list.d"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
        # _apt cannot write into a private directory under $HOME; the archive is still verified.
        -o "APT::Sandbox::User=$(id -un)"
    )
    apt-get "${apt_opts[@]}" update -qq >&2
    local version
    version=$(apt-cache "${apt_opts[@]}" showsrc kubernetes | awk '$1 == "Version:" && !v { v = $2 } END { print v }')
    # Debian calls it e.g. 1.20.5+really1.20.2-1.1: what matters is the upstream tree inside.
    if [[ $version != *"$kube_version"-* ]]; then
        log "the archive offers kubernetes source '$version', not $kube_version"
        exit 1
    fi
    log "fetching source package kubernetes $version"
    (cd "$build" && apt-get "${apt_opts[@]}" source -qq --only-source "kubernetes=$version" >&2)
}

# Kubernetes 1.20 vendors modern-go/reflect2 1.0.1, which links against a runtime map iterator
# whose signature changed in Go 1.18: built with Debian's Go 1.19, the API server dies with
# "fatal error: fault" the first time it encodes a map with json-iterator (on every custom
# resource create). reflect2 1.0.2 is the upstream fix, and Debian ships its source.
patch_vendor() {
    local src=$1 fixed=/usr/share/gocode/src/github.com/modern-go/reflect2
    rsync -a --delete --exclude go.mod "$fixed/" "$src/vendor/github.com/modern-go/reflect2/"
    # Stop here, not at run time, should the package ever lose the fix.
    grep -q go1.18 "$src/vendor/github.com/modern-go/reflect2/go_above_118.go"
}

build_binaries() {
    apt_install golang-go rsync dpkg-dev golang-github-modern-go-reflect2-dev
    local src
    src=$(find "$build" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
    if [[ -z $src || ! -f $src/Makefile ]]; then
        rm -rf "${build:?}"/kubernetes*
        fetch_source
        src=$(find "$build" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
    fi
    patch_vendor "$src"
    log "building ${binaries[*]} in $src (several minutes)"
    local started=$SECONDS
    # GOPROXY=off and the vendor tree keep the build offline; the Go cache stays in the build
    # dir so that removing it frees everything. The version stamp (v1.20.2 and its commit) comes
    # from hack/lib/version.sh, which the upstream release archive has filled in.
    (
        cd "$src"
        export GOPROXY=off GOFLAGS=-mod=vendor GOCACHE="$build/go-cache"
        make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >&2
    )
    log "built in $((SECONDS - started))s"
    local out="$src/_output/bin" name
    mkdir -p "$cache.tmp"
    for name in "${binaries[@]}"; do
        install -m 0755 "$out/$name" "$cache.tmp/$name"
    done
    echo "$recipe" >"$cache.tmp/RECIPE"
}

main() {
    mkdir -p "$cache_root"
    # Two runs at once (a developer and CI, or two terminals) build once: the second waits.
    exec 9>"$cache_root/.lock"
    if ! flock -w 3600 9; then
        log "another build held $cache_root/.lock for an hour; giving up"
        exit 1
    fi

    apt_install etcd-server
    if ! built; then
        rm -rf "$cache.tmp"
        mkdir -p "$build"
        build_binaries
        rm -rf "$cache"
        mv "$cache.tmp" "$cache"
        [[ ${MILLSTREAM_KUBE_KEEP_BUILD:-0} == 1 ]] || rm -rf "$build"
    fi
    # Beside the built binaries so that one directory holds the whole control plane.
    [[ -x $cache/etcd ]] || ln -sfn "$(command -v etcd)" "$cache/etcd"
    log "$("$cache/kube-apiserver" --version), etcd $("$cache/etcd" --version | awk 'NR == 1 { print $3 }')"
    echo "$cache"
}

main "$@"; exit
