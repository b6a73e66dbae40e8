#!/bin/sh
# Install and start libvirt + QEMU for novalite's libvirt driver (CI and developer machines).
#
# Idempotent: packages already installed are not reinstalled, daemons already running are
# left alone. Needs root. Debian 12 (bookworm) or a derivative.
#
#   sudo scripts/setup-libvirt.sh            # packages, daemons, /dev/kvm permissions,
#                                            # libvirt-python, the isolated test network
#   NOVALITE_SKIP_PIP=1 scripts/setup-libvirt.sh   # without pip install libvirt-python
#
# What it does:
#   1. apt-get install the daemon (the -sysv flavour keeps systemd out of containers),
#      QEMU, qemu-img, libvirt-dev (to build libvirt-python), dnsmasq (DHCP for libvirt
#      networks; dnsmasq-utils for dhcp_release), iproute2 and nftables (the per-network bridges,
#      VXLAN and security groups of drivers/libvirt/{bridges,vxlan,firewall,dhcp}.py), busybox
#      (udhcpc) and iputils-ping (the datapath tests' stand-in guests), and the build tools for libvirt-python.
#   2. Starts virtlogd and libvirtd in the background unless they already answer, then
#      waits until `virsh -c qemu:///system version` works (the first start takes ~10 s).
#   3. Makes /dev/kvm group-kvm mode 660 (with mode 0600 every defineXML takes a minute
#      while libvirt probes it). Guests still run under TCG (virt_type = "qemu").
#   4. pip installs libvirt-python into the current python3.
#   5. Creates the isolated libvirt network "novalite-test" (no <forward>: guest traffic
#      never leaves the host) that the driver tests use.
set -eu

NET_NAME=${NOVALITE_TEST_NETWORK:-novalite-test}
NET_BRIDGE=${NOVALITE_TEST_BRIDGE:-nlvtest0}
NET_CIDR=${NOVALITE_TEST_CIDR:-10.213.77.1/24}
PYTHON=${PYTHON:-python3}

log() { echo "setup-libvirt: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    echo "setup-libvirt: must run as root" >&2
    exit 1
fi

PKGS="libvirt-daemon-system libvirt-daemon-system-sysv qemu-system-x86 qemu-utils libvirt-dev \
dnsmasq-base dnsmasq-utils iproute2 nftables busybox iputils-ping pkg-config gcc libc6-dev python3-dev"
missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    log "packages already installed"
fi

# /dev/kvm: libvirt probes it on every define; with 0600 root-only that probe times out.
if [ -e /dev/kvm ]; then
    getent group kvm >/dev/null || groupadd -r kvm
    chgrp kvm /dev/kvm || true
    chmod 660 /dev/kvm || true
fi

running() {
    if command -v pgrep >/dev/null 2>&1; then
        pgrep -x "$1" >/dev/null 2>&1
    else
        [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null
    fi
}

mkdir -p /var/run/libvirt /var/lib/libvirt /var/log/libvirt/qemu
if ! running virtlogd; then
    log "starting virtlogd"
    virtlogd -d
fi
if ! running libvirtd; then
    log "starting libvirtd"
    libvirtd -d
fi
i=0
until virsh -c qemu:///system version >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 120 ]; then
        echo "setup-libvirt: libvirtd did not answer within 60 s" >&2
        exit 1
    fi
    sleep 0.5
done
log "libvirtd is up: $(virsh -c qemu:///system version 2>/dev/null | tr '\n' ' ')"

if [ -z "${NOVALITE_SKIP_PIP:-}" ]; then
    if ! "$PYTHON" -c "import libvirt" 2>/dev/null; then
        log "pip install libvirt-python (builds against the system libvirt)"
        "$PYTHON" -m pip install -q libvirt-python
    fi
fi

# The isolated test network (no <forward>, so nothing routes off this host).
if ! virsh -c qemu:///system net-info "$NET_NAME" >/dev/null 2>&1; then
    addr=${NET_CIDR%/*}
    prefix=${NET_CIDR#*/}
    base=${addr%.*}
    xml=$(mktemp)
    cat >"$xml" <<EOF
<network>
  <name>$NET_NAME</name>
  <bridge name='$NET_BRIDGE' stp='on' delay='0'/>
  <ip address='$addr' prefix='$prefix'>
    <dhcp>
      <range start='$base.100' end='$base.199'/>
    </dhcp>
  </ip>
</network>
EOF
    virsh -c qemu:///system net-define "$xml" >/dev/null
    rm -f "$xml"
    log "defined isolated network $NET_NAME ($NET_CIDR on $NET_BRIDGE)"
fi
virsh -c qemu:///system net-autostart "$NET_NAME" >/dev/null 2>&1 || true
if ! virsh -c qemu:///system net-info "$NET_NAME" 2>/dev/null | grep -Eq '^Active: +yes'; then
    virsh -c qemu:///system net-start "$NET_NAME" >/dev/null
    log "started network $NET_NAME"
fi
log "ready"
