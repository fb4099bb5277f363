#!/bin/sh
# /init for the vfat round trip: read /mnt/big.bin from the vfat disk /dev/vda,
# print its md5, copy /data/new.bin (shipped in the initramfs) onto the disk.
# Console lines for the host to parse:
#   BLKRIG md5 <md5 of big.bin>
#   BLKRIG done
#   BLKRIG error <what>
# Every path ends in poweroff, so the VM always ends.

# The kernel starts init without PATH.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

halt_now() {
    sync
    poweroff -f
    # Only reached if poweroff failed: PID 1 exiting panics, and panic=-1
    # with -no-reboot ends QEMU too.
    sleep 1
    exit 1
}

fail() {
    echo "BLKRIG error $*"
    umount /mnt 2>/dev/null
    halt_now
}

mount -t proc proc /proc || fail "mount proc"
mount -t sysfs sysfs /sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /dev || fail "mount devtmpfs"

if [ -f /lib/modules/load-order ]; then
    while read -r m; do
        [ -n "$m" ] || continue
        insmod "/lib/modules/$m.ko" || fail "insmod $m"
    done </lib/modules/load-order
fi

# virtio-blk probes asynchronously; give it up to 10 s.
i=0
while [ ! -b /dev/vda ]; do
    i=$((i + 1))
    [ "$i" -le 100 ] || fail "no /dev/vda after 10 s"
    sleep 0.1
done

mount -t vfat /dev/vda /mnt || fail "mount /dev/vda vfat"
[ -f /mnt/big.bin ] || fail "no big.bin on /dev/vda"
sum=$(md5sum /mnt/big.bin) || fail "md5sum big.bin"
echo "BLKRIG md5 ${sum%% *}"

[ -f /data/new.bin ] || fail "no /data/new.bin in the initramfs"
cp /data/new.bin /mnt/new.bin || fail "write new.bin"
sync || fail "sync"
umount /mnt || fail "umount /mnt"

echo "BLKRIG done"
halt_now
