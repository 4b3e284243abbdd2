#!/bin/sh
# Boot one guest: run as the first process of fresh mount, PID, UTS and IPC namespaces, inside
# the guest's network namespace (see guest.py). $1: the guest's state folder; $2: the shared
# read-only root; $3: its host name. Mounts made here live in the guest's mount namespace only
# and vanish with it.
set -eu
D=$1 ROOT=$2 NAME=$3
M=$D/root
mount --make-rprivate /
mount -t overlay overlay -o "lowerdir=$ROOT,upperdir=$D/upper,workdir=$D/work" "$M"
mount -t proc proc "$M/proc"
mount -t sysfs -o ro sysfs "$M/sys" 2>/dev/null || true
mount -t tmpfs -o mode=755,size=65536k tmpfs "$M/run"
# Its own small /dev, never the host's devtmpfs; /dev/console is a FIFO the init relays.
mount -t tmpfs -o mode=755,size=1024k tmpfs "$M/dev"
for dev in "null c 1 3" "zero c 1 5" "full c 1 7" "random c 1 8" "urandom c 1 9" "tty c 5 0"; do
    set -- $dev
    mknod -m 666 "$M/dev/$1" "$2" "$3" "$4"
done
mkfifo -m 600 "$M/dev/console"
mkdir -p "$M/dev/pts" "$M/dev/shm" "$M/dev/disk/by-id" "$M/run/ivc"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$M/dev/pts"
ln -s pts/ptmx "$M/dev/ptmx"
ln -s /proc/self/fd "$M/dev/fd"
mount -t tmpfs -o mode=1777,size=65536k tmpfs "$M/dev/shm"
# Disks attached while the server was stopped (or before a restart): one line each,
# "<device> <major>:<minor> <by-id name> <loop> <file>".
if [ -f "$D/disks" ]; then
    while read -r dev majmin byid rest; do
        mknod -m 660 "$M/dev/$dev" b "${majmin%%:*}" "${majmin##*:}"
        ln -sf "../../$dev" "$M/dev/disk/by-id/$byid"
    done < "$D/disks"
fi
cp "$D/macs" "$M/run/ivc/macs" 2>/dev/null || true
hostname "$NAME"
exec 3>>"$D/console.log"
cd "$M"
exec env -i product_name="OpenStack Nova" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 HOME=/root TERM=vt100 chroot "$M" /usr/bin/python3 /usr/local/sbin/ivc-init
