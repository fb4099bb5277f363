#!/bin/sh
# /init of the gfs2-jdata probe: does a jdata file on gfs2 read through fs/mpage.c?
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
while read -r m; do [ -n "$m" ] && insmod "/lib/modules/$m.ko"; done </lib/modules/load-order
i=0; while [ ! -b /dev/vda ] && [ "$i" -lt 100 ]; do i=$((i + 1)); sleep 0.1; done
echo 2 >/sys/block/vda/queue/nomerges; echo none >/sys/block/vda/queue/scheduler
mount -t gfs2 /dev/vda /mnt || echo "GFS2: mount failed"
touch /mnt/j.bin /mnt/n.bin
chattr +j /mnt/j.bin || echo "GFS2: chattr +j failed"
dd if=/dev/urandom of=/mnt/j.bin bs=64k count=64 conv=notrunc 2>/dev/null
dd if=/dev/urandom of=/mnt/n.bin bs=64k count=64 conv=notrunc 2>/dev/null
sync
lsattr /mnt/j.bin /mnt/n.bin
md5sum /mnt/j.bin /mnt/n.bin
umount /mnt; mount -t gfs2 /dev/vda /mnt
T=/sys/kernel/tracing
echo 'mpage_readahead do_mpage_readpage mpage_read_folio iomap_readahead gfs2_readahead gfs2_block_map block_read_full_folio' >$T/set_ftrace_filter
echo function >$T/current_tracer
echo 1 >$T/events/block/block_rq_issue/enable
for f in j.bin n.bin; do
    echo 3 >/proc/sys/vm/drop_caches
    echo "=== read $f" >$T/trace_marker
    md5sum /mnt/$f
done
echo 0 >$T/tracing_on
echo "GFS2-TRACE-BEGIN"
for fn in mpage_readahead do_mpage_readpage iomap_readahead gfs2_readahead gfs2_block_map block_read_full_folio; do
    echo "count $fn jdata=$(sed -n '/=== read j.bin/,/=== read n.bin/p' $T/trace | grep -c " $fn <-") plain=$(sed -n '/=== read n.bin/,$p' $T/trace | grep -c " $fn <-")"
done
sed -n '/=== read j.bin/,/=== read n.bin/p' $T/trace | grep -v "^#" | grep -E "block_rq_issue|=== " | head -40
echo "GFS2-TRACE-END"
umount /mnt
poweroff -f
