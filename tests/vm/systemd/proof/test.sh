#!/bin/bash
# Proof test of the systemd guest (tests/vm/systemd/run's default): runs
# inside the booted Debian as vmtest.service and checks, for real, what the
# service tests of issue 10 rely on. One line per check:
# "ok - NAME: DETAIL" or "FAIL - NAME: DETAIL".
set -u

PASSED=0 FAILED=0
check() { # NAME: runs check_NAME, which sets DETAIL and returns 0 on success
	local name=$1 t0 ok=0
	DETAIL=
	t0=$(cut -d' ' -f1 /proc/uptime)
	"check_$name" && ok=1
	DETAIL="$DETAIL ($(awk -v t0="$t0" '{ printf "%.1f", $1 - t0 }' /proc/uptime) s)"
	if [ "$ok" = 1 ]; then
		echo "ok - $name: $DETAIL"
		PASSED=$((PASSED + 1))
	else
		echo "FAIL - $name: $DETAIL"
		FAILED=$((FAILED + 1))
	fi
}
note() { echo "# $*"; }

# systemd finished booting with nothing failed: "running" (a "degraded"
# system fails the check and names its failed units).
check_system_running() {
	local state failed
	state=$(timeout 120 systemctl is-system-running --wait 2>&1)
	failed=$(systemctl list-units --failed --plain --no-legend | awk '{ print $1 }' | paste -sd' ')
	note "systemd-analyze time: $(systemd-analyze time 2>&1 | head -n 1)"
	systemd-analyze blame 2>/dev/null | head -n 5 | sed 's/^ */# blame: /'
	if ! systemctl is-active -q multi-user.target; then
		DETAIL="multi-user.target not active (state $state; failed units: ${failed:-none})"
		return 1
	fi
	DETAIL="state $state, multi-user.target active, PID 1 $(ps -o comm= -p 1), systemd $(systemctl --version | awk 'NR == 1 { print $2 }'), kernel $(uname -r)"
	if [ "$state" != running ]; then
		DETAIL="$DETAIL; failed units: ${failed:-none}"
		local u
		for u in $failed; do
			systemctl --no-pager status "$u" 2>&1 | sed 's/^/# /'
		done
		return 1
	fi
}

# Nothing else steers the guest clock: no time daemon is installed.
check_no_time_daemon() {
	local found
	found=$(systemctl list-unit-files --no-legend 'systemd-timesyncd*' 'chrony*' 'ntp*' 'ntpsec*' 'openntpd*' | awk '{ print $1 }' | paste -sd' ')
	if [ -n "$found" ]; then
		DETAIL="time daemon units present: $found"
		return 1
	fi
	DETAIL="no timesyncd/chrony/ntp/ntpsec/openntpd unit"
}

# udev's coldplug loaded the emulated igb NIC's driver from its modalias,
# and that NIC's PHC is a /dev/ptp device.
check_udev_igb_autoload() {
	local net dev ptp
	udevadm settle -t 30
	for net in /sys/class/net/*; do
		[ "$(basename "$(readlink -f "$net/device/driver" 2>/dev/null)")" = igb ] && dev=$net && break
	done
	if [ -z "${dev:-}" ]; then
		DETAIL="no network interface with the igb driver (lsmod igb: $(lsmod | awk '$1 == "igb"' | wc -l))"
		return 1
	fi
	ptp=$(ls "$dev/device/ptp" 2>/dev/null | head -n 1)
	if [ -z "$ptp" ] || [ ! -c "/dev/$ptp" ]; then
		DETAIL="$(basename "$dev") (igb) has no PHC device (${ptp:-none})"
		return 1
	fi
	DETAIL="$(basename "$dev") (igb, loaded by udev) has /dev/$ptp"
}

# modprobe finds ptp_testclock (installed by vmtest-run, depmod'ed); udev
# makes its /dev/ptpN with its database entry; the clock reads.
check_udev_ptp_testclock() {
	local c dev out
	if ! modprobe ptp_testclock; then
		DETAIL="modprobe ptp_testclock failed"
		return 1
	fi
	udevadm settle -t 30
	for c in /sys/class/ptp/ptp*; do
		[ "$(cat "$c/clock_name" 2>/dev/null)" = ptp_testclock ] && dev=/dev/$(basename "$c") && break
	done
	if [ -z "${dev:-}" ]; then
		DETAIL="no /sys/class/ptp/*/clock_name is ptp_testclock"
		return 1
	fi
	if [ ! -c "$dev" ]; then
		DETAIL="$dev is not a character device"
		return 1
	fi
	if ! udevadm info --query=property "$dev" | grep -q '^SUBSYSTEM=ptp$'; then
		DETAIL="udev has no ptp entry for $dev"
		return 1
	fi
	if ! out=$(phc_check "$dev" precise 5 3 2>&1); then
		DETAIL="phc_check $dev precise failed: $(echo "$out" | tail -n 1)"
		return 1
	fi
	DETAIL="$dev (udev: $(udevadm info --query=property "$dev" | grep -c .) properties, mode $(stat -c %a "$dev")), phc_check precise reads it"
}

# dpkg -i of a package built on the host (vmtest-dummy: adduser'd system
# user, a service enabled and started from its postinst), then dpkg --purge
# removes the files, the unit, the process and the user.
check_dpkg_install_purge() {
	local deb=/vmtest/vmtest-dummy_1.0_all.deb log=/vmtest/out/dpkg.log pid user
	if ! dpkg -i "$deb" >"$log" 2>&1; then
		DETAIL="dpkg -i failed: $(tail -n 1 "$log")"
		return 1
	fi
	if [ "$(dpkg-query -W -f '${Status}' vmtest-dummy 2>/dev/null)" != "install ok installed" ]; then
		DETAIL="after dpkg -i: status $(dpkg-query -W -f '${Status}' vmtest-dummy 2>&1)"
		return 1
	fi
	if ! systemctl is-active -q vmtest-dummy.service; then
		DETAIL="vmtest-dummy.service not active after install ($(systemctl is-active vmtest-dummy.service))"
		return 1
	fi
	pid=$(systemctl show -p MainPID --value vmtest-dummy.service)
	user=$(ps -o user= -p "$pid")
	if [ "$user" != vmtest-dummy ]; then
		DETAIL="vmtest-dummy.service main PID $pid runs as '$user', not vmtest-dummy"
		return 1
	fi
	if ! dpkg --purge vmtest-dummy >>"$log" 2>&1; then
		DETAIL="dpkg --purge failed: $(tail -n 1 "$log")"
		return 1
	fi
	local left=
	dpkg-query -W vmtest-dummy >/dev/null 2>&1 && left="$left package-still-known"
	[ -e /usr/share/vmtest-dummy ] && left="$left /usr/share/vmtest-dummy"
	[ -e /lib/systemd/system/vmtest-dummy.service ] && left="$left unit-file"
	[ "$(systemctl show -p LoadState --value vmtest-dummy.service)" = not-found ] || left="$left unit-still-loaded"
	getent passwd vmtest-dummy >/dev/null && left="$left user"
	getent group vmtest-dummy >/dev/null && left="$left group"
	kill -0 "$pid" 2>/dev/null && left="$left process-$pid"
	if [ -n "$left" ]; then
		DETAIL="after dpkg --purge still there:$left"
		return 1
	fi
	DETAIL="installed (service active as user vmtest-dummy, PID $pid), purged: no files, unit, user, group or process left"
}

# A transient unit from systemd-run, with a dynamic user.
check_systemd_run_transient() {
	local out rc=0
	out=$(timeout 60 systemd-run --quiet --wait --pipe --collect --unit=vmtest-transient \
		-p DynamicUser=yes -p ProtectSystem=strict sh -c 'id -u; id -un' 2>&1) || rc=$?
	local uid name
	uid=$(echo "$out" | sed -n 1p)
	name=$(echo "$out" | sed -n 2p)
	if [ "$rc" != 0 ]; then
		DETAIL="systemd-run exited $rc: $(echo "$out" | tail -n 1)"
		return 1
	fi
	case $uid in '' | *[!0-9]* | 0)
		DETAIL="unexpected uid '$uid' (output: $(echo "$out" | paste -sd' '))"
		return 1 ;;
	esac
	DETAIL="transient vmtest-transient.service ran as dynamic user $name (uid $uid), exit 0"
}

# systemd-analyze security scores stock units (the package's unit will be
# recorded the same way).
check_systemd_analyze_security() {
	local u line scores=
	for u in systemd-udevd.service dbus.service prometheus.service; do
		line=$(systemd-analyze security --no-pager "$u" 2>&1 | grep 'Overall exposure level' | tail -n 1)
		# "-> Overall exposure level for X: 5.7 MEDIUM :-|"
		local score
		score=$(echo "$line" | sed -n 's/.*: \([0-9][0-9]*\.[0-9]\) \([A-Z]*\).*/\1 \2/p')
		if [ -z "$score" ]; then
			DETAIL="no score for $u: $(systemd-analyze security --no-pager "$u" 2>&1 | tail -n 1)"
			return 1
		fi
		scores="$scores${scores:+, }$u $score"
	done
	DETAIL=$scores
}

# Debian's prometheus starts on loopback (as a transient unit, its own
# user), is ready, scrapes itself, and stops leaving nothing listening.
check_prometheus_loopback() {
	local dir=/run/vmtest-prometheus port=19090 i ready= up= t0 t1
	mkdir -p "$dir/data"
	cat >"$dir/prometheus.yml" <<-EOF
	global:
	  scrape_interval: 1s
	scrape_configs:
	  - job_name: self
	    static_configs:
	      - targets: ['127.0.0.1:$port']
	EOF
	chown -R prometheus:prometheus "$dir"
	note "$(prometheus --version 2>&1 | head -n 1)"
	t0=$(date +%s.%N)
	if ! systemd-run --quiet --unit=vmtest-prometheus -p User=prometheus \
		/usr/bin/prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
		--web.listen-address="127.0.0.1:$port" --log.level=warn; then
		DETAIL="systemd-run of prometheus failed"
		return 1
	fi
	for i in $(seq 1 120); do
		if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then ready=1; break; fi
		sleep 0.5
	done
	t1=$(date +%s.%N)
	if [ -z "$ready" ]; then
		DETAIL="/-/ready not answering after 60 s ($(systemctl is-active vmtest-prometheus.service))"
		journalctl -u vmtest-prometheus.service --no-pager | tail -n 10 | sed 's/^/# /'
		systemctl stop vmtest-prometheus.service
		return 1
	fi
	# the query API: its own target is up after a scrape
	for i in $(seq 1 60); do
		up=$(curl -fsS "http://127.0.0.1:$port/api/v1/query?query=up" 2>/dev/null |
			jq -r '.data.result[] | select(.metric.job == "self") | .value[1]' 2>/dev/null)
		[ "$up" = 1 ] && break
		sleep 0.5
	done
	if ! ss -Htln "sport = :$port" | grep -q '127.0.0.1:'; then
		DETAIL="prometheus is not listening on 127.0.0.1:$port only: $(ss -Htln "sport = :$port" | paste -sd' ')"
		systemctl stop vmtest-prometheus.service
		return 1
	fi
	systemctl stop vmtest-prometheus.service
	if ss -Htln "sport = :$port" | grep -q .; then
		DETAIL="port $port still listening after systemctl stop"
		return 1
	fi
	if [ "$up" != 1 ]; then
		DETAIL="ready, but the query API gave up=${up:-nothing} for its own target within 30 s"
		return 1
	fi
	DETAIL="ready on 127.0.0.1:$port after $(echo "$t1 $t0" | awk '{ printf "%.1f", $1 - $2 }') s, query API: up{job=\"self\"}=1, stopped, port closed"
}

note "systemd guest proof test: $(. /etc/os-release && echo "$PRETTY_NAME"), $(dpkg-query -W -f '${Version}' systemd) systemd package"
for c in system_running no_time_daemon udev_igb_autoload udev_ptp_testclock dpkg_install_purge \
	systemd_run_transient systemd_analyze_security prometheus_loopback; do
	check "$c"
done
note "proof: $PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
