#!/bin/sh
# Beolaunch stage 2: /init of the small initramfs (bootsvc/stage2.py builds it).
#
# Never blind: syslogd forwarding to the master starts first; lines said before
# the node has an address are kept in /run/stage2.log and re-sent once it has one.
# Never a hang: every network step is retried with backoff (1 s doubling to 30 s)
# and each failure is logged. Never an exit: init exiting panics the kernel.
#
# Kernel command line (written by the master's iPXE script, launcher/master/boothttp.py):
#   beolaunch.master=IP beolaunch.http=PORT beolaunch.logs=PORT beolaunch.name=NAME
#   beolaunch.ticket=TICKET beolaunch.stage3=SHA256 [beolaunch.debug]
export PATH=/bin:/sbin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /run /tmp /newroot
mount -t tmpfs -o mode=0755,size=64k tmpfs /run
LOG=/run/stage2.log
: >"$LOG"

#@include cmdline_arg.sh

MASTER=$(arg master)
HTTP=$(arg http)
LOGS=$(arg logs)
NAME=$(arg name)
TICKET=$(arg ticket)
STAGE3=$(arg stage3)
NET_UP=

# Before anything else: the log goes to the master (and stays here too).
if [ -n "$MASTER" ] && [ -n "$LOGS" ]; then
	syslogd -R "$MASTER:$LOGS" -L -O /run/syslog.log
fi

say() {
	echo "stage2: $*" >/dev/console
	echo "$(cut -d' ' -f1 /proc/uptime) $*" >>"$LOG"
	[ -n "$NET_UP" ] && logger -t "stage2[$NAME]" "$*"
	return 0
}

hold() { # a boot that cannot go on: say why, keep the console, never exit
	say "cannot boot: $*"
	if arg debug >/dev/null; then
		setsid cttyhack sh
	fi
	while :; do sleep 3600; done
}

say "starting on $(uname -r), command line: $(sed 's/beolaunch.ticket=[^ ]*/beolaunch.ticket=(hidden)/' /proc/cmdline)"
for key in MASTER HTTP LOGS NAME TICKET STAGE3; do
	eval "value=\$$key"
	[ -n "$value" ] || hold "no beolaunch.$(echo "$key" | tr 'A-Z' 'a-z')= on the kernel command line"
done

# NIC drivers, in modules.dep order (bootsvc/modalias.py chose them at build time).
if [ -f /lib/modules/load-order ]; then
	while read -r module; do
		insmod "/lib/modules/$module" 2>>"$LOG" || say "insmod $module failed"
	done </lib/modules/load-order
fi

cat >/run/udhcpc.script <<'EOF'
#!/bin/sh
case "$1" in
deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
bound|renew)
	ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
	if [ -n "$router" ]; then ip route replace default via "${router%% *}" dev "$interface"; fi
	echo "$interface $ip" >/run/address ;;
esac
exit 0
EOF
chmod 755 /run/udhcpc.script
ip link set lo up

write_env() { # what stage 3 needs to know, for its /init and launcher.node.boot
	(umask 077 && cat >"$1") <<EOF
BEOLAUNCH_MASTER=$MASTER
BEOLAUNCH_HTTP=$HTTP
BEOLAUNCH_LOGS=$LOGS
BEOLAUNCH_NAME=$NAME
BEOLAUNCH_TICKET=$TICKET
BEOLAUNCH_IFACE=$IFACE
BEOLAUNCH_ADDRESS=$ADDRESS
EOF
}

delay=1
backoff() {
	sleep "$delay"
	delay=$((delay * 2))
	[ "$delay" -gt 30 ] && delay=30
	return 0
}

# An address: DHCP on each wired interface in turn until one answers.
while [ ! -s /run/address ]; do
	found=
	for path in /sys/class/net/*; do
		iface=${path##*/}
		[ "$iface" = lo ] && continue
		[ -e "$path/device" ] || continue
		found=1
		ip link set "$iface" up
		udhcpc -i "$iface" -s /run/udhcpc.script -q -n -t 4 -T 2 -x "hostname:$NAME" >>"$LOG" 2>&1 && break
	done
	[ -s /run/address ] && break
	if [ -z "$found" ]; then
		say "no network interface yet (NIC driver missing from stage 2?); retrying in $delay s"
	else
		say "no DHCP answer; retrying in $delay s"
	fi
	backoff
done
read -r IFACE ADDRESS </run/address
NET_UP=1
# Re-send what was said before the address was up, then carry on live.
while read -r line; do logger -t "stage2[$NAME]" "(before network) $line"; done <"$LOG"
say "address $ADDRESS on $IFACE; fetching stage 3 $STAGE3 from $MASTER:$HTTP"

# The benchmark's baseline packs stage 3 into this initramfs (bootsvc.stage2.pack_baseline),
# as single-image systems do: nothing to fetch, no root to switch.
if [ -x /init.stage3 ]; then
	say "stage 3 is packed in this initramfs; starting it"
	cp "$LOG" /stage2.log
	kill "$(pidof syslogd)" 2>/dev/null
	umount /run
	mkdir -p /run/beolaunch
	mv /stage2.log /run/beolaunch/stage2.log
	write_env /run/beolaunch/boot.env
	exec /init.stage3
fi

# Stage 3: fetch into the initramfs itself (switch_root frees it), check, unpack into a tmpfs.
URL="http://$MASTER:$HTTP/boot/images/$STAGE3"
delay=1
while :; do
	rm -f /stage3.img
	started=$(cut -d' ' -f1 /proc/uptime)
	# busybox wget has no -T here (it crashes on it); timeout bounds a master that stalls
	if timeout 300 wget -q -O /stage3.img "$URL" 2>>"$LOG"; then
		got=$(sha256sum /stage3.img | cut -d' ' -f1)
		if [ "$got" = "$STAGE3" ]; then
			break
		fi
		say "stage 3 from $URL has sha256 $got, not $STAGE3; retrying in $delay s"
	else
		say "cannot fetch $URL (master not answering?); retrying in $delay s"
	fi
	backoff
done
say "stage 3 fetched: $(wc -c </stage3.img) bytes in $(awk "BEGIN{print $(cut -d' ' -f1 /proc/uptime) - $started}") s, sha256 checked"

if [ "$(head -c 4 /stage3.img)" = hsqs ]; then
	# squashfs (bootsvc.squash): mounted as it is under an overlay with a tmpfs on top.
	# The loop device keeps the file after switch_root unlinks it from the initramfs.
	mkdir -p /lower /upper
	mount -t squashfs -o ro,loop /stage3.img /lower 2>>"$LOG" || hold "cannot mount stage 3 (squashfs)"
	mount -t tmpfs -o mode=0755 tmpfs /upper || hold "cannot mount a tmpfs for stage 3's writes"
	mkdir -p /upper/rw /upper/work
	mount -t overlay -o lowerdir=/lower,upperdir=/upper/rw,workdir=/upper/work overlay /newroot \
		2>>"$LOG" || hold "cannot mount the overlay for stage 3"
else
	mount -t tmpfs -o mode=0755 tmpfs /newroot || hold "cannot mount a tmpfs for stage 3"
	(cd /newroot && gzip -dc /stage3.img | cpio -idm 2>>"$LOG") || hold "stage 3 image does not unpack"
	rm -f /stage3.img
fi
[ -x /newroot/init ] || hold "stage 3 has no /init"
mkdir -p /newroot/run/beolaunch /newroot/dev /newroot/proc /newroot/sys
write_env /newroot/run/beolaunch/boot.env
say "switching to stage 3"
cp "$LOG" /newroot/run/beolaunch/stage2.log
kill "$(pidof syslogd)" 2>/dev/null
umount /run /sys /proc 2>/dev/null
mount --move /dev /newroot/dev
exec switch_root /newroot /init
