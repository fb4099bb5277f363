#!/bin/sh
# /init for `blkrig vm`: the same kernel, modules, disk and queue knobs as a
# scenario run, with a busybox shell on the console instead of the agent.
# /etc/blkrig/vm.conf (written by the host) holds FSTYPE=, MOUNT_OPTIONS=
# and QUEUE_<knob>=value lines. Leaving the shell powers the guest off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null

while read -r m; do
    [ -n "$m" ] && insmod "/lib/modules/$m.ko"
done </lib/modules/load-order

i=0
while [ ! -b /dev/vda ] && [ "$i" -lt 100 ]; do
    i=$((i + 1))
    sleep 0.1
done

FSTYPE=
MOUNT_OPTIONS=
[ -f /etc/blkrig/vm.conf ] && . /etc/blkrig/vm.conf
for kv in $(set | sed -n 's/^QUEUE_\([a-z_]*\)=.\(.*\).$/\1=\2/p'); do
    echo "${kv#*=}" >"/sys/block/vda/queue/${kv%%=*}" || echo "blkrig-vm: cannot set queue/${kv%%=*}"
done
if [ -n "$FSTYPE" ]; then
    mount -t "$FSTYPE" ${MOUNT_OPTIONS:+-o "$MOUNT_OPTIONS"} /dev/vda /mnt && echo "blkrig-vm: /dev/vda ($FSTYPE) is mounted on /mnt"
fi
echo "BLKRIG-VM ready: leave the shell (exit or Ctrl-D) to power off"
setsid cttyhack sh -l
cd /
umount /mnt 2>/dev/null
sync
poweroff -f
