#!/usr/bin/env bash
# The local base image for `make image` where no registry is reachable: Debian bookworm minbase
# (debootstrap, ~2 min once) imported into podman as $1 (default localhost/debian-min:bookworm).
# A no-op when the image exists. bookworm's python3 is 3.11, what the project needs.
set -euo pipefail
IMAGE=${1:-localhost/debian-min:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
podman image exists "$IMAGE" && exit 0
command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (apt-get install debootstrap), or pass BASE=<image>" >&2; exit 2; }
ROOTFS=$(mktemp -d /var/tmp/debian-min.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
echo "making the base image $IMAGE: debootstrap --variant=minbase bookworm (~2 min, once)" >&2
debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
  || { tail -20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
# A container base keeps no documentation, now or from later apt installs (as Debian's official images).
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/01-container-nodoc" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
find "$ROOTFS/usr/share/doc" -type f ! -name copyright -delete
rm -rf "$ROOTFS"/usr/share/{man,info}/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
tar -C "$ROOTFS" -c . | podman import --quiet - "$IMAGE" >/dev/null
echo "made $IMAGE" >&2
