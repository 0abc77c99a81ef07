#!/usr/bin/env bash
# Container tooling for `make image` and tests/deploy/test_deploy.py on a Debian machine (CI calls it): podman with
# runc, debootstrap for the local base image, and podman settings that work inside a container host
# (cgroupfs, runc instead of crun, bounded ulimits). Idempotent: a no-op (~0.1 s) when all is in place.
set -euo pipefail
missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
  echo "installing ${missing[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # With recommends: netavark/aardvark (pod networks) and catatonit (the pause image of `podman kube play`).
  apt-get update -qq && apt-get install -y -qq podman runc debootstrap >/dev/null
fi
# A drop-in, so the system's own containers.conf (if any) stays as it is.
CONF=/etc/containers/containers.conf.d/50-hidecl.conf
if [ ! -f "$CONF" ]; then
  mkdir -p "$(dirname "$CONF")"
  cat >"$CONF" <<'CFG'
# Written by hide-cl's deploy/podman-setup.sh: crun fails on hybrid cgroups here, and raising
# RLIMIT_NOFILE beyond the host's limit is refused ("setrlimit RLIMIT_NOFILE: Operation not permitted").
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
CFG
fi
