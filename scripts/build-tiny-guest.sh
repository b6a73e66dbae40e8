#!/bin/sh
# Build the novalite tiny test guest from Debian packages, without a VM and without mounting.
#
#   scripts/build-tiny-guest.sh [OUTDIR]      (default ./build/guest)
#
# Outputs in OUTDIR:
#   tiny-guest.qcow2   bootable disk (MBR + syslinux + FAT partition with kernel and initramfs), ~16 MB
#   vmlinuz            the kernel, for direct kernel boot (image with kernel_id/ramdisk_id)
#   initrd.gz          the initramfs (busybox + virtio/ata/cdrom modules + /init scripts)
#   BUILD-INFO         what went in; the cache key
#
# The guest runs entirely from its initramfs: it prints "novalite-tiny-guest booted" on the
# serial console (ttyS0) and the screen (tty0), loads its drivers, starts busybox acpid (so
# ACPI shutdown/reboot work), runs DHCP on every NIC and prints "novalite-guest-ip: <ip>",
# reads a config drive (label config-2) and prints the instance uuid and the first line of
# user_data (a user_data starting with "#!" is run as a script, in the background, its output
# on ttyS0), prints "novalite-guest-ready", then runs root shells on ttyS0 and tty1.
#
# Cached: when OUTDIR already holds a build of the same recipe (scripts/guest/* and this
# script), it exits at once. FORCE=1 rebuilds. Needs root only to install missing build tools
# (cpio, kmod, fdisk, dosfstools, mtools, syslinux, qemu-utils); apt-get must reach a Debian
# mirror on a first build. Takes ~5-15 s.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
GUEST_SRC=$HERE/guest
OUT=${1:-./build/guest}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
KERNEL_META=${NOVALITE_GUEST_KERNEL:-linux-image-cloud-amd64}
# Modules the guest loads (their dependencies are added): virtio PCI + disk + NIC, the IDE
# cdrom path of the i440fx machine (ata_piix, sr_mod, isofs) for the config drive, virtio-scsi
# for a cdrom on a virtio-scsi controller, and the ACPI power button with evdev for acpid.
MODULES="virtio_pci virtio_blk virtio_net virtio_scsi ata_piix sr_mod isofs button evdev"

log() { echo "build-tiny-guest: $*" >&2; }

recipe_hash() {
    cat "$0" "$GUEST_SRC"/* | sha256sum | cut -d' ' -f1
}

HASH=$(recipe_hash)
if [ -z "${FORCE:-}" ] && [ -f "$OUT/BUILD-INFO" ] && [ -f "$OUT/tiny-guest.qcow2" ] \
    && [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.gz" ] \
    && grep -q "^recipe=$HASH\$" "$OUT/BUILD-INFO"; then
    log "up to date in $OUT"
    exit 0
fi

# -- build tools -------------------------------------------------------------------------------
need=""
for pair in cpio:cpio depmod:kmod modprobe:kmod sfdisk:fdisk mkfs.vfat:dosfstools mcopy:mtools \
    syslinux:syslinux qemu-img:qemu-utils; do
    cmd=${pair%%:*}
    pkg=${pair#*:}
    PATH=$PATH:/usr/sbin:/sbin command -v "$cmd" >/dev/null 2>&1 || need="$need $pkg"
done
[ -f /usr/lib/syslinux/mbr/mbr.bin ] || need="$need syslinux-common"
if [ -n "$need" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build-tiny-guest: missing build tools, install them:$need" >&2
        exit 1
    fi
    log "installing build tools:$need"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $need >/dev/null
fi
export PATH=$PATH:/usr/sbin:/sbin

WORK=$(mktemp -d "${TMPDIR:-/tmp}/novalite-guest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT INT TERM
cd "$WORK"

# -- packages ----------------------------------------------------------------------------------
# The metapackage depends on the versioned kernel package; download that one.
KPKG=$(apt-cache depends "$KERNEL_META" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1)
if [ -z "$KPKG" ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        KPKG=$(apt-cache depends "$KERNEL_META" | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n 1)
    fi
    [ -n "$KPKG" ] || { echo "build-tiny-guest: cannot resolve $KERNEL_META (apt-get update?)" >&2; exit 1; }
fi
log "downloading $KPKG busybox-static"
mkdir -p debs
chmod 777 debs  # apt-get download drops privileges to _apt when it can
(cd debs && apt-get download -qq "$KPKG" busybox-static 2>/dev/null) \
    || (cd debs && apt-get download "$KPKG" busybox-static)
dpkg -x debs/linux-image-*.deb kernel
dpkg -x debs/busybox-static_*.deb busybox
KVER=$(ls kernel/lib/modules)
[ -f "kernel/boot/vmlinuz-$KVER" ] || { echo "build-tiny-guest: no kernel in $KPKG" >&2; exit 1; }

# -- initramfs ---------------------------------------------------------------------------------
R=root
mkdir -p $R/bin $R/sbin $R/usr/bin $R/usr/sbin $R/etc/init.d $R/etc/acpi/PWRF $R/lib/modules \
    $R/proc $R/sys $R/dev $R/run $R/tmp $R/mnt/config $R/root
cp busybox/bin/busybox $R/bin/busybox
for applet in $(busybox/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"
done
ln -sf bin/busybox $R/init  # busybox init reads /etc/inittab
install -m 0755 "$GUEST_SRC/rcS" $R/etc/init.d/rcS
install -m 0755 "$GUEST_SRC/udhcpc.script" $R/etc/udhcpc.script
install -m 0755 "$GUEST_SRC/power-button" $R/etc/acpi/PWRF/00000080
install -m 0644 "$GUEST_SRC/inittab" $R/etc/inittab
install -m 0644 "$GUEST_SRC/profile" $R/etc/profile
echo "root:x:0:0:root:/root:/bin/sh" >$R/etc/passwd
echo "root:x:0:" >$R/etc/group
echo novalite-guest >$R/etc/hostname

# Kernel modules: resolve dependencies with kmod against the extracted tree, keep load order.
depmod -b kernel "$KVER"
: >$R/etc/modules.order
for m in $MODULES; do
    modprobe -d kernel -S "$KVER" --show-depends "$m" | while read -r verb path _; do
        [ "$verb" = insmod ] || continue
        name=$(basename "$path")
        if ! grep -qx "$name" $R/etc/modules.order; then
            cp "$path" "$R/lib/modules/$name"
            echo "$name" >>$R/etc/modules.order
        fi
    done
done
(cd $R && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -9 >initrd.gz
cp "kernel/boot/vmlinuz-$KVER" vmlinuz

# -- bootable disk -----------------------------------------------------------------------------
# 48 MiB: one FAT16 partition from sector 2048, syslinux in it, syslinux's MBR code in front.
DISK=disk.raw
truncate -s 48M $DISK
echo 'label: dos
start=2048, type=6, bootable' | sfdisk -q $DISK
dd if=/usr/lib/syslinux/mbr/mbr.bin of=$DISK bs=440 count=1 conv=notrunc status=none
mkfs.vfat -F 16 -n NOVAGUEST --offset 2048 -h 2048 $DISK >/dev/null
syslinux --offset $((2048 * 512)) --install $DISK
export MTOOLS_SKIP_CHECK=1
mcopy -i "$DISK@@$((2048 * 512))" vmlinuz ::vmlinuz
mcopy -i "$DISK@@$((2048 * 512))" initrd.gz ::initrd.gz
mcopy -i "$DISK@@$((2048 * 512))" "$GUEST_SRC/syslinux.cfg" ::syslinux.cfg
qemu-img convert -c -O qcow2 $DISK tiny-guest.qcow2

# -- publish (atomically per file) -------------------------------------------------------------
for f in vmlinuz initrd.gz tiny-guest.qcow2; do
    cp "$f" "$OUT/.$f.tmp" && mv -f "$OUT/.$f.tmp" "$OUT/$f"
done
rm -f "$OUT/tiny-guest.raw"
cat >"$OUT/.BUILD-INFO.tmp" <<EOF
recipe=$HASH
kernel_package=$KPKG
kernel_version=$KVER
busybox=$(dpkg-deb -f debs/busybox-static_*.deb Version)
modules=$(tr '\n' ' ' <$R/etc/modules.order)
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
EOF
mv -f "$OUT/.BUILD-INFO.tmp" "$OUT/BUILD-INFO"
log "built $OUT/tiny-guest.qcow2 ($(du -h "$OUT/tiny-guest.qcow2" | cut -f1)), vmlinuz, initrd.gz"
