#!/usr/bin/env bash
# Vagrant provisioner (runs as root inside the VM). Uses the same install path
# as scripts/demo and scripts/test (scripts/install-deps), loads sch_netem for
# the kernel impairment backend, and builds and installs testbed.
set -euo pipefail

# Vagrant uploads this file to /tmp before running it, so its own location says
# nothing about the repository: the Vagrantfile passes TESTBED_ROOT. Fall back
# to the script's parent directory when run by hand from a checkout.
ROOT="${TESTBED_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
if [[ ! -x "$ROOT/scripts/install-deps" ]]; then
    echo "error: $ROOT/scripts/install-deps not found; set TESTBED_ROOT to the repository" >&2
    exit 1
fi
cd "$ROOT"

echo "==> provision: dependencies"
"$ROOT/scripts/install-deps"

echo "==> provision: kernel modules"
echo sch_netem >/etc/modules-load.d/testbed.conf
if modprobe sch_netem; then
    echo "    sch_netem loaded (and loaded at every boot via /etc/modules-load.d/testbed.conf)"
else
    echo "warning: modprobe sch_netem failed; the kernel impairment backend will be unavailable" >&2
fi

echo "==> provision: build"
"$ROOT/scripts/build"

echo "==> provision: done. Try: vagrant ssh -c 'sudo testbed up /testbed/topologies/city.toml'"
