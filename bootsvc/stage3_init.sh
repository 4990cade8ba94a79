#!/bin/sh
# Beolaunch stage 3: /init of the node's root (bootsvc/stage3.py builds the image).
#
# Stage 2 unpacked this image into a tmpfs, wrote /run/beolaunch/boot.env (and
# stage2.log) and moved its devtmpfs here before switch_root. So: never mount over
# /run, never fail when /dev is mounted already. Then: syslog to the master, the kernel
# modules (fuse, NFS), and `python -m launcher.node.boot` (enroll with the ticket, mount
# the site filesystems, run the node agent).
#
# Python runs as a child, not exec'ed: init must reap the orphans of every job the
# agent starts, and an init that exits panics the kernel; this shell does both jobs
# and restarts the agent if it ever stops. Never an exit.
#
# Kernel command line: [beolaunch.debug] a shell on the console when something is
# missing; [beolaunch.selftest] check the image (Python imports the agent, libfuse
# loads, /dev/fuse exists, the kernel knows nfs4), print STAGE3-OK and power off:
# for trying an image on a spare machine, or under QEMU, without a master.
export PATH=/usr/bin:/usr/sbin:/bin:/sbin
export HOME=/root
export PYTHONUNBUFFERED=1
# fusepy finds libfuse through this: ctypes.util.find_library needs ldconfig or gcc.
[ -f /etc/beolaunch/stage3.env ] && . /etc/beolaunch/stage3.env
export FUSE_LIBRARY_PATH

mounted() { grep -q " $1 " /proc/mounts 2>/dev/null; }
mounted /proc || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mounted /dev/pts || mount -t devpts devpts /dev/pts
mounted /dev/shm || mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mounted /tmp || mount -t tmpfs -o mode=1777 tmpfs /tmp
# The node cache: a tmpfs of its own (the agent's budget is half the memory).
mounted /var/cache/beolaunch || mount -t tmpfs -o mode=0700 tmpfs /var/cache/beolaunch
mkdir -p /run/beolaunch /var/lib/beolaunch/roots
chmod 700 /run/beolaunch
ip link set lo up 2>/dev/null

#@include cmdline_arg.sh

SYSLOG=
say() {
	echo "stage3: $*" >/dev/console
	[ -n "$SYSLOG" ] && logger -t stage3 "$*"
	return 0
}

# The image's kernel modules (fuse, the NFSv4 client), in load order, each unless
# already loaded or built in (/sys/module/NAME: also there when /init runs again).
RELEASE=$(uname -r)
ORDER=/usr/lib/modules/$RELEASE/beolaunch.load-order
if [ -f "$ORDER" ]; then
	while read -r module; do
		name=${module##*/}
		name=${name%.ko}
		[ -d "/sys/module/$(echo "$name" | tr - _)" ] && continue
		insmod "/usr/lib/modules/$RELEASE/$module" || say "insmod $module failed"
	done <"$ORDER"
else
	say "no kernel modules for $RELEASE in this image (built for $(ls /usr/lib/modules)):" \
		"no FUSE (the agent falls back to hardlinked roots) and no NFS client (site mounts" \
		"fail); rebuild stage 3 for this kernel"
fi

if arg selftest >/dev/null; then
	say "self-test on $RELEASE"
	python -c 'import json, launcher.node.agent, launcher.node.boot, cachefs.view.fuse
from launcher.node.hardware import hardware_report
print(json.dumps(hardware_report(), sort_keys=True))' && echo "PYTHON-OK"
	fusermount -V && echo "FUSERMOUNT-OK"
	[ -c /dev/fuse ] && echo "FUSE-OK"
	grep -qw nfs4 /proc/filesystems && echo "NFS-OK"
	echo "STAGE3-OK uptime $(cut -d' ' -f1 /proc/uptime)"
	sync
	poweroff -f
fi

ENV=/run/beolaunch/boot.env
while [ ! -f "$ENV" ]; do
	say "$ENV is missing: stage 2 writes it before switch_root (was stage 3 booted directly?)"
	if arg debug >/dev/null; then
		say "beolaunch.debug: a shell; leave it to look again"
		setsid cttyhack sh
	else
		sleep 30
	fi
done
. "$ENV"

if [ -n "$BEOLAUNCH_MASTER" ] && [ -n "$BEOLAUNCH_LOGS" ]; then
	syslogd -R "$BEOLAUNCH_MASTER:$BEOLAUNCH_LOGS" -L -O /var/log/messages && SYSLOG=1
fi
[ -n "$BEOLAUNCH_NAME" ] && hostname "$BEOLAUNCH_NAME"
say "stage 3 on $RELEASE, node ${BEOLAUNCH_NAME:-?} at ${BEOLAUNCH_ADDRESS:-?}," \
	"master ${BEOLAUNCH_MASTER:-?}:${BEOLAUNCH_HTTP:-?}"

cd /
while :; do
	python -m launcher.node.boot
	say "launcher.node.boot exited with status $?; starting it again in 10 s"
	sleep 10
done
