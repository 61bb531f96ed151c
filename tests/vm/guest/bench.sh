#!/bin/sh
# The peer benchmark (busybox sh), run by /init inside the qemu guest when
# tests/vm/run is called with NTPD_HOST_VM_SUITE=bench (tests/vm/bench does).
#
# Closed loop, one tool at a time, same guest, same test clock: the test PHC
# starts at +200 ms and +20 ppm from the guest's CLOCK_REALTIME, and the tool
# steers CLOCK_REALTIME to it. Ground truth: the module's true_offset_ns
# (PHC - CLOCK_REALTIME), sampled once a second. Per run:
#   first  time from the tool's start to the first |offset| < 1 us
#   settled  time from the start to the first sample after the last |offset| >= 1 us
#   rms, mean, sd, max|offset| over the last BENCH_WINDOW seconds
# Before each run the guest clock and the kernel's NTP state are reset
# (clockctl reset) and the test clock is loaded afresh.
#
# Read method = which callbacks the test clock has (load-time parameters):
#   precise: precise=1 (PTP_SYS_OFFSET_PRECISE, EXTENDED and basic offered)
#   extended: precise=0 (EXTENDED and basic)      basic: precise=0 extended=0
#   jitter: as extended, with jitter_ns=1000 (1 us of noise on each PHC read)
#   fstep: as precise; when the window starts, the PHC's frequency jumps by
#     +1 ppm (a temperature change of a NIC oscillator, a host's clock
#     re-tuned under a VM): the window's RMS includes the recovery
# chrony polls at ntpd-host's poll interval (refclock PHC ... poll BENCH_POLL
# dpoll -2, as its own default refclock poll is 4); phc2sys runs at its
# defaults (1 update a second).
# Every tool takes the best the clock offers by itself: chrony's refclock PHC
# and phc2sys probe PRECISE, then EXTENDED, then basic; ntpd-host's PTP plugin
# has method = "auto" (what it detected is printed).
#
# Output: "# ..." lines (the host shows them), one "# result ..." line per run,
# and per-second lines "S TOOL METHOD T_MS OFFSET_NS" (console log only).

. /lib.sh

START_OFFSET=200000000  # ns, PHC - CLOCK_REALTIME at the start of a run
START_FREQ=20000        # ppb, the test clock's oscillator error
FSTEP_PPB=1000          # ppb, the fstep scenario's jump of that error

. /etc/bench.conf
[ $# -gt 0 ] && BENCH_METHODS="$*"

# tc_load_method METHOD: the test clock with that read method, at the start offset
tc_load_method() {
	local p
	case $1 in
	precise) p= ;;
	extended) p="precise=0" ;;
	basic) p="precise=0 extended=0" ;;
	# EXTENDED reads with 1 us of noise on each PHC timestamp
	jitter) p="precise=0 jitter_ns=1000" ;;
	# precise, and its oscillator jumps by +1 ppm when the window starts
	fstep) p= ;;
	*) return 1 ;;
	esac
	tc_load name=tc_bench offset_ns=$START_OFFSET freq_ppb=$START_FREQ $p
}

# start_ntpd_host [KEY=VALUE...]: more PTP plugin keys
start_ntpd_host() {
	ntp_config "$(plugin_source phc "$BENCH_POLL" clock-name=tc_bench "$@")" > /tmp/bench.toml
	start_host /tmp/bench.toml
	TOOL_PID=$HOSTPID
}

# ntpd-host again, its PTP plugin with more keys (ALT_CONFIG, key=value
# words) and, if ALT_SYNC / ALT_SOURCE are set, those in place of SYNC_EXTRA
# / SOURCE_EXTRA; another build of ntpd-host if one was added (ALT_HOST):
# an A/B in the same boot
ALT_BIN=/opt/ntpd-host/bin/ntpd-host-alt
start_ntpd_host_alt() {
	local sync=$SYNC_EXTRA source=$SOURCE_EXTRA host=$HOST
	SYNC_EXTRA=${ALT_SYNC:-$SYNC_EXTRA}
	SOURCE_EXTRA=${ALT_SOURCE:-$SOURCE_EXTRA}
	[ -x "$ALT_BIN" ] && HOST=$ALT_BIN
	# shellcheck disable=SC2086 # one word per key=value
	start_ntpd_host $ALT_CONFIG
	SYNC_EXTRA=$sync
	SOURCE_EXTRA=$source
	HOST=$host
}

start_chrony() {
	mkdir -p /run/chrony /var/lib/chrony
	chmod 750 /run/chrony
	rm -f /run/chrony/chronyd.pid
	cat > /tmp/chrony.conf <<-EOT
	refclock PHC $DEV poll $BENCH_POLL dpoll -2
	makestep 0.1 3
	cmdport 0
	pidfile /run/chrony/chronyd.pid
	EOT
	chronyd -d -f /tmp/chrony.conf -u root > /tmp/tool.log 2>&1 &
	TOOL_PID=$!
}

start_phc2sys() {
	phc2sys -s "$DEV" -c CLOCK_REALTIME -O 0 -N 5 -m -q > /tmp/tool.log 2>&1 &
	TOOL_PID=$!
}

# what the tool says about the read method it uses
tool_method() {
	case $1 in
	ntpd-host | ntpd-host-alt)
		status_now /tmp/bench.toml
		src_raw phc method ;;
	*) echo "-" ;;
	esac
}

# run_one TOOL METHOD
run_one() {
	local tool=$1 method=$2 t0 t off i reads0 reads1 used res
	clockctl reset "$BASE" > /dev/null || { note "clockctl reset failed"; return 1; }
	tc_load_method "$method" || { note "result tool=$tool method=$method error=insmod"; return 1; }
	reads0=$(cat $TC/reads)
	rm -f /tmp/samples /tmp/tool.log /tmp/host.log
	t0=$(clockctl now)
	"start_$(echo "$tool" | tr - _)"
	i=0
	while [ "$i" -lt "$BENCH_SECS" ]; do
		i=$((i + 1))
		# sample on the second of the tool's run time
		t=$(clockctl now)
		sleep "$(awk -v d=$((i * 1000 - (t - t0))) 'BEGIN { if (d < 0) d = 0; printf "%.3f", d / 1000 }')"
		t=$(clockctl now)
		off=$(cat $TC/true_offset_ns)
		echo "$((t - t0)) $off" >> /tmp/samples
		echo "S $tool $method $((t - t0)) $off"
		[ $((i % 30)) = 0 ] && note "  $tool $method t=$((i)) s offset=$off ns"
		[ "$i" = 5 ] && used=$(tool_method "$tool")
		[ "$method" = fstep ] && [ "$i" = $((BENCH_SECS - BENCH_WINDOW)) ] &&
			echo $((START_FREQ + FSTEP_PPB)) > $TC/freq_ppb
		kill -0 "$TOOL_PID" 2>/dev/null || { note "$tool exited early"; break; }
	done
	reads1=$(cat $TC/reads)
	kill "$TOOL_PID" 2>/dev/null; wait "$TOOL_PID" 2>/dev/null
	if [ "${BENCH_TRACE:-0}" = 1 ]; then
		cat /tmp/tool.log /tmp/host.log 2>/dev/null | sed "s/^/L $tool $method: /"
		[ "$tool" = ntpd-host ] && grep -h precision /run/ntpd-host/ntp.toml 2>/dev/null |
			sed "s/^/L $tool $method: derived: /"
	else
		grep -hv kalman /tmp/tool.log /tmp/host.log 2>/dev/null | tail -n 6 | sed "s/^/L $tool $method: /"
	fi
	res=$(awk -v secs="$BENCH_SECS" -v win="$BENCH_WINDOW" '
	function sq(x, r, k) { if (x <= 0) return 0; r = x; for (k = 0; k < 100; k++) r = (r + x / r) / 2; return r }
	function abs(x) { return x < 0 ? -x : x }
	{ t[NR] = $1 + 0; o[NR] = $2 + 0; n = NR }
	END {
		first = "never"; last = 0
		for (k = 1; k <= n; k++) {
			if (first == "never" && abs(o[k]) < 1000) first = t[k]
			if (abs(o[k]) >= 1000) last = k
		}
		settled = (last == n) ? "never" : (last == 0 ? t[1] : t[last + 1])
		m = 0; s = 0; ss = 0; mx = 0
		for (k = 1; k <= n; k++) if (t[k] > (secs - win) * 1000) {
			m++; s += o[k]; ss += o[k] * o[k]; if (abs(o[k]) > mx) mx = abs(o[k])
		}
		mean = 0; rms = -1; sd = 0
		if (m > 0) { mean = s / m; rms = sq(ss / m) }
		if (m > 1) sd = sq((ss - m * mean * mean) / (m - 1))
		printf "first_ms=%s settled_ms=%s rms_ns=%.0f mean_ns=%.0f sd_ns=%.0f max_ns=%d window_n=%d", first, settled, rms, mean, sd, mx, m
	}' /tmp/samples)
	note "result tool=$tool method=$method $res reads_per_s=$(( (reads1 - reads0) / BENCH_SECS )) used=${used:--}"
	tc_unload
	clockctl reset "$BASE" > /dev/null
}

BASE=$(clockctl base)
mkdir -p /run/ntpd-rs
# The guest has no hardware random source: its kernel's generator becomes
# ready a few seconds after boot, and ntpd-rs's start waits for it (~1 s of
# the first run's start-up, once). A server's is ready long before its time
# daemon starts: wait for it, so that every run starts alike.
t=$(cut -d' ' -f1 /proc/uptime)
dd if=/dev/random of=/dev/null bs=1 count=1 2>/dev/null
note "bench: the kernel's random generator was ready at uptime $(cut -d' ' -f1 /proc/uptime) s (waited from $t s)"
note "bench: kernel $(uname -r); clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource);" \
	"peers: $(paste -sd, /etc/peer-versions); ntpd-host poll-interval $BENCH_POLL;" \
	"$BENCH_SECS s per run, RMS over the last $BENCH_WINDOW s"
note "bench: methods $BENCH_METHODS; tools $BENCH_TOOLS; start +$START_OFFSET ns, +$START_FREQ ppb"
[ -n "$ALT_CONFIG" ] && note "bench: ntpd-host-alt's plugin keys: $ALT_CONFIG"
[ -x "$ALT_BIN" ] && note "bench: ntpd-host-alt is another build of ntpd-host ($ALT_BIN)"
[ -n "$ALT_SOURCE" ] && note "bench: ntpd-host-alt's source lines: $(echo "$ALT_SOURCE" | tr '\n' ' ')"
[ -n "$ALT_SYNC" ] && note "bench: ntpd-host-alt's synchronization lines: $(echo "$ALT_SYNC" | tr '\n' ' ')"
for m in $BENCH_METHODS; do
	for tool in $BENCH_TOOLS; do
		note "run $tool $m (uptime $(cut -d' ' -f1 /proc/uptime) s)"
		run_one "$tool" "$m"
	done
done
echo "VM-SUITE-RESULT passed=1 failed=0"
