# shellcheck shell=bash
# Shared by deploy/test-image.sh and deploy/test-systemd.sh (sourced, not run): podman set
# up as this machine allows, a Debian base made without a registry, and the log helpers.
# The caller sets WORK (a scratch directory it removes) before sourcing this file.

DEBIAN_IMAGE=localhost/gemini-collector-debian:bookworm
STARTED=$SECONDS

log() { printf '[%s +%3ds] %s\n' "$(date +%T)" $((SECONDS - STARTED)) "$*"; }
fail() { log "FAIL: $*"; exit 1; }

# runc (crun may not run here), and default rlimits no higher than this shell's: a sandbox
# may refuse to raise them, and podman's defaults (1048576 open files) ask for more.
podman_setup() {
    local nofile runtime=runc
    nofile=$(ulimit -Hn)
    if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then nofile=65536; fi
    command -v runc >/dev/null || runtime=crun
    cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "$runtime"
EOF
    export CONTAINERS_CONF=$WORK/containers.conf
    command -v podman >/dev/null || { echo "podman is not installed"; exit 77; }
    podman --version
}

# Debian bookworm (minbase) from Debian's package mirror, imported as $DEBIAN_IMAGE; kept
# for later runs.
debian_image() {
    podman image exists "$DEBIAN_IMAGE" && return
    command -v debootstrap >/dev/null || fail "no base image, and debootstrap is not installed"
    log "debootstrap --variant=minbase bookworm"
    debootstrap --variant=minbase bookworm "$WORK/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
        >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap"; }
    tar -C "$WORK/rootfs" -c . | podman import -q - "$DEBIAN_IMAGE" >/dev/null
    rm -rf "$WORK/rootfs"
}

# build_on_debian TAG DESCRIPTION PACKAGES...: $DEBIAN_IMAGE with these packages and this
# machine's CA bundle (pip reaches the package index through it here).
build_on_debian() {
    local tag=$1 description=$2 dir=$WORK/build-${1//[^a-z0-9]/-}
    shift 2
    debian_image
    mkdir -p "$dir"
    cp /etc/ssl/certs/ca-certificates.crt "$dir/host-ca.crt"
    cat >"$dir/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
LABEL description="$description (made by deploy/$(basename "$0"))"
RUN apt-get update \\
    && apt-get install -y --no-install-recommends $* \\
    && rm -rf /var/lib/apt/lists/*
COPY host-ca.crt /usr/local/share/ca-certificates/host-ca.crt
RUN update-ca-certificates >/dev/null 2>&1
EOF
    log "building $tag"
    podman build -q --pull=never -t "$tag" "$dir" >/dev/null
}
