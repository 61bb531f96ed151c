#!/bin/sh
# The guest suite (busybox sh), run by /init inside the qemu guest.
#
# One function per check: check_NAME. Each sets DETAIL (measured values) and
# returns 0 for pass, non-zero for fail; run_check prints one line per check:
#   ok - NAME: DETAIL        or        FAIL - NAME: DETAIL
# and lines starting with "# " are notes the host passes through.
# Arguments: check names to run (default: all of CHECKS).
#
# Pass bounds are named B_* below; tests/vm/README.md says how each was
# measured. Offsets are PHC - CLOCK_REALTIME in ns, the sign of the
# module's true_offset_ns.

. /lib.sh

OFF=123456789          # the test clock's offset for the read-path checks, ns

# ---- bounds (measured under qemu TCG; see README) ----
B_PRECISE=2            # |measured - truth|, PRECISE via phc_check: exact (+ truth wobble)
B_EXTENDED=400         # |measured - truth|, EXTENDED 5 readings, ns
B_BASIC=400            # |measured - truth|, basic PTP_SYS_OFFSET 5 readings, ns
B_GETTIME=500          # |measured - truth|, clock_gettime bracket, ns
B_DRIFT_PPB=200        # |measured drift - set drift|, ppb
B_STEP=10              # |truth change - adjtime step|, ns
B_SETTIME=3000000      # the clock_settime window under TCG (first call on a path is slow), ns
B_JITTER_SD=100        # |sd of PRECISE errors - 1000/sqrt(3)| with jitter_ns=1000 over 100 reads, ns
B_IGB=1000000          # |igb PHC - guest clock| after link up, ns (driver sets it from CLOCK_REALTIME)
B_IGB_SD=1000          # sd of the igb offset over 20 readings, ns
B_TRUTH=2              # wobble of true_offset_ns itself (REALTIME vs RAW rounding), ns
B_PL_PRECISE=2         # plugin |offset - truth|, precise, ns
B_PL_EXTENDED=400      # plugin |offset - truth|, extended (25 readings, the default), ns
B_PL_STANDARD=400      # plugin |offset - truth|, standard (25 readings, the default, and 5), ns
B_PL_NOISY_READINGS=15  # median readings a sample averages on the noisy clock (jitter_ns=1000, 25 read), the widened band: seen 24 (the band held 5-9 on the clean clock, 18 on the noisy one before it was widened)
B_PL_NOISY_SD=400      # sd of the plugin's offsets on that clock, ns (seen 112-129 widened, 167 before)
B_PL_IGB=500           # |plugin - phc_check| on the igb PHC, ns (+ half its drift)
B_RESUME_MS=2000       # reload to first new sample under ntpd-host run: two 1 s poll intervals (the issue's bound; scaled with the poll interval)
B_3SRC_SAMPLES=5       # samples each of the three sources must have delivered
B_3SRC_READY_MS=30000  # start of ntpd-host run to all three delivering with a daemon view, ms
B_3SRC_AGREE=10000     # |daemon's offset - host's last sample| per source, ns (the clock is being steered meanwhile)
LOOP_SECS=90          # s each closed loop runs
LOOP_WINDOW=60         # s at the end of a closed loop over which RMS and max are taken
B_LOOP_CONVERGE_MS=15000  # start of ntpd-host run to the first |true offset| < 1 us, ms (seen 2-5 s with the 62.5 ms burst; 3-7 s with the first burst; 26-45 s before it)
B_LOOP_RMS_precise=40     # closed-loop RMS of the true offset over the window, ns (precise; tai too; seen 5-8 in the guest suite and 7-8 in the bench since 2026-12-03: 5x the worst)
B_LOOP_RMS_extended=300   # the same, extended (the read-path bias dominates, B_PL_EXTENDED; seen 97-98 in the guest suite and 58-107 in the bench since 2026-12-03: about 3x the worst)
B_LOOP_RMS_standard=500   # the same, standard (diagnostic only, never fails)
B_LOOP_MAX_X=3            # max |offset| in the window at most this many times the RMS bound (seen since 2026-12-03: 19-25 precise and tai, 122-149 extended)
OUTAGE_LONG=10         # s, the counted daemon_rmmod_reload outage (over the old backoff's 1+2+4 s retries)
B_PL_DROPS=3           # samples of 20 the plugin may drop as "disturbed" (transient)
B_DAEMON_RESUME_MS=2000   # daemon restart (new pid seen) to the next delivered sample: two 1 s poll intervals
B_CLOCK_UNTOUCHED_NS=1000000  # |change of CLOCK_REALTIME - CLOCK_MONOTONIC_RAW| over the set-clock attempt, ns (nobody steers it)
CB_SEGMENT=/var/run/clockbound/shm0  # `clockbound = true`: the protocol's default path
CB_PHASE_MS=60000      # each containment phase of check_clockbound_containment, ms
CB_EVERY_US=20000      # the client reads every 20 ms (50 a second)
B_CB_SYNC_MS=30000     # host start to the client's first synchronized reading, ms (the loop locks in 3-7 s)
B_CB_SYNC_SHARE=90     # % of a quiet phase's readings that must be synchronized
B_CB_WIDTH_MEDIAN=1000 # the issue's goal: median width [earliest, latest] under 1 us, quiet phase, ns
B_CB_VOID_MS=20000     # last sample to the client's first unknown reading: void-after (16 s) + 4 s, ms
B_CB_RECOVER_MS=15000  # source back to the first synchronized reading again, ms (reinit backoff included)

CHECKS="testclock_all_paths testclock_no_precise testclock_basic_only
testclock_drift testclock_adjfine_apart testclock_adjtime_step
testclock_settime testclock_jitter testclock_delay
testclock_eio_burst testclock_ebusy_burst testclock_fail_for_ms
testclock_rmmod_renumber igb_phc
plugin_all_callbacks plugin_no_crosstimestamp plugin_basic_only
plugin_method_forced plugin_method_forced_missing plugin_clock_name_renumber
plugin_noisy_clock
plugin_igb plugin_eio_burst plugin_ebusy_burst plugin_tai_and_offset
daemon_rmmod_reload daemon_rmmod_reload_short daemon_rmmod_reload_poll4 three_sources_status
worker_unprivileged worker_cannot_set_the_clock other_users daemon_kill9_restart
daemon_panic_exit startup_sigterm
closed_loop_precise closed_loop_extended closed_loop_tai
clockbound_containment clockbound_disruption"

PASS=0
FAIL=0
DETAIL=

run_check() {
	DETAIL=
	if "check_$1"; then
		PASS=$((PASS + 1))
		echo "ok - $1: $DETAIL"
	else
		FAIL=$((FAIL + 1))
		echo "FAIL - $1: $DETAIL"
	fi
	tc_unload
}

# ---- helpers ----

# measure METHOD BOUND [READINGS] [COUNT]: 20 measurements against the truth
# appends "METHOD n=.. mean=.. sd=.. max|err|=.. maxdelay=.." to DETAIL
measure() {
	local method=$1 bound=$2 n=${3:-5} count=${4:-20} t out st
	t=$(truth)
	out=$(phc_check "$DEV" "$method" "$n" "$count")
	set -- $(echo "$out" | stats "$t")
	DETAIL="$DETAIL $method: n=$1 err=$2 mean=$3 sd=$4 max|err|=$5 (bound $bound) maxdelay=$6;"
	[ "$1" = "$count" ] && [ "$2" = 0 ] && le "$5" "$bound"
}

# expect_errno METHOD ERRNO: one measurement fails with ERRNO
expect_errno() {
	local out
	out=$(phc_check "$DEV" "$1" 5 1)
	DETAIL="$DETAIL $1: ${out%% [A-Z]*};"
	case "$out" in "err errno=$2 "*) return 0 ;; esac
	return 1
}

# ---- checks: the test clock itself, read with phc_check ----

check_testclock_all_paths() {
	tc_load precise=1 extended=1 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	local ok=0
	measure precise $B_PRECISE 1 || ok=1
	measure extended $B_EXTENDED || ok=1
	measure basic $B_BASIC || ok=1
	measure gettime $B_GETTIME || ok=1
	return $ok
}

check_testclock_no_precise() {
	tc_load precise=0 extended=1 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	local ok=0
	expect_errno precise 95 || ok=1
	measure extended $B_EXTENDED || ok=1
	measure basic $B_BASIC || ok=1
	return $ok
}

check_testclock_basic_only() {
	tc_load precise=0 extended=0 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	local ok=0
	expect_errno precise 95 || ok=1
	expect_errno extended 95 || ok=1
	measure basic $B_BASIC || ok=1
	return $ok
}

# truth changes at the set rate: freq_ppb=20000 over ~2 s of CLOCK_REALTIME
drift_over() { # SECONDS -> ppb measured
	local t1 t2 r1 r2
	r1=$(phc_check clocks); t1=$(truth)
	sleep "$1"
	r2=$(phc_check clocks); t2=$(truth)
	r1=${r1#realtime_ns=}; r1=${r1%% *}
	r2=${r2#realtime_ns=}; r2=${r2%% *}
	awk -v a="$t1" -v b="$t2" -v x="$r1" -v y="$r2" 'BEGIN { printf "%.0f\n", (b - a) / (y - x) * 1e9 }'
}

check_testclock_drift() {
	tc_load offset_ns=200000000 freq_ppb=20000 || { DETAIL="insmod failed"; return 1; }
	local d
	d=$(drift_over 2)
	DETAIL="set 20000 ppb, measured $d ppb (bound +-$B_DRIFT_PPB)"
	le "$(awk -v d="$d" 'BEGIN { d -= 20000; print d < 0 ? -d : d }')" $B_DRIFT_PPB
}

# adjfine acts on top of the oscillator error and does not replace it
check_testclock_adjfine_apart() {
	tc_load freq_ppb=20000 || { DETAIL="insmod failed"; return 1; }
	local out d adj f
	out=$(phc_check "$DEV" adjfine -5000)
	adj=$(cat $TC/adj_ppb); f=$(cat $TC/freq_ppb)
	d=$(drift_over 2)
	DETAIL="$out; adj_ppb=$adj freq_ppb=$f; drift $d ppb (expect 15000 +-$B_DRIFT_PPB)"
	[ "$adj" -ge -5001 ] && [ "$adj" -le -4999 ] && [ "$f" = 20000 ] &&
		le "$(awk -v d="$d" 'BEGIN { d -= 15000; print d < 0 ? -d : d }')" $B_DRIFT_PPB
}

check_testclock_adjtime_step() {
	tc_load offset_ns=0 || { DETAIL="insmod failed"; return 1; }
	local t1 t2 out d
	t1=$(truth)
	out=$(phc_check "$DEV" adjtime 1500000)
	t2=$(truth)
	d=$((t2 - t1 - 1500000))
	DETAIL="$out; truth $t1 -> $t2, error ${d} ns (bound +-$B_STEP)"
	[ "${d#-}" -le $B_STEP ]
}

# settime: the PHC is set to CLOCK_REALTIME + 5 s. phc_check setrel reads
# CLOCK_REALTIME, calls clock_settime, reads it again: the truth must land in
# that window (-window..0 from 5 s), and the window must be short
check_testclock_settime() {
	tc_load offset_ns=0 || { DETAIL="insmod failed"; return 1; }
	local out t d w
	out=$(phc_check "$DEV" setrel 5000000000)
	t=$(truth)
	d=$((t - 5000000000))
	w=$(echo "$out" | sed -n 's/.*window_ns=//p')
	DETAIL="$out; truth $t: error $d ns, must be in -$w..$B_TRUTH; window bound $B_SETTIME"
	[ -n "$w" ] && [ "$d" -le $B_TRUTH ] && [ "$d" -ge $((-w - B_TRUTH)) ] && [ "$w" -le $B_SETTIME ]
}

# jitter_ns=1000: PRECISE errors spread uniformly in +-1000 ns (sd 577)
check_testclock_jitter() {
	tc_load offset_ns=$OFF jitter_ns=1000 || { DETAIL="insmod failed"; return 1; }
	local t
	t=$(truth)
	set -- $(phc_check "$DEV" precise 1 100 | stats "$t")
	DETAIL="100 PRECISE reads: n=$1 mean=$3 sd=$4 (want 577 +-$B_JITTER_SD) max|err|=$5 (bound $((1000 + B_TRUTH)))"
	[ "$1" = 100 ] && le "$5" $((1000 + B_TRUTH)) &&
		le "$(awk -v s="$4" 'BEGIN { d = s - 577; print d < 0 ? -d : d }')" $B_JITTER_SD
}

# delay_ns=5000: every EXTENDED/basic bracket is at least 5 us wide, and the
# estimate stays centred (the delay is split around the sampling instant)
check_testclock_delay() {
	tc_load offset_ns=$OFF precise=0 delay_ns=5000 || { DETAIL="insmod failed"; return 1; }
	local t ok=0 m
	t=$(truth)
	for m in extended basic; do
		set -- $(phc_check "$DEV" $m 5 20 | stats "$t")
		local mind
		mind=$(phc_check "$DEV" $m 5 1 | sed -n 's/.*delay_ns=//p')
		DETAIL="$DETAIL $m: n=$1 max|err|=$5 (bound $B_EXTENDED) maxdelay=$6 one best delay=$mind (want >= 5000);"
		[ "$1" = 20 ] && le "$5" $B_EXTENDED && [ "$mind" -ge 5000 ] || ok=1
	done
	return $ok
}

# count_lines PATTERN TEXT
count_lines() { echo "$2" | grep -c "$1"; }

# a burst of N failed read calls, then reads work again
burst() { # ERRNO
	tc_load fail_errno="$1" || { DETAIL="insmod failed"; return 1; }
	echo 3 > $TC/fail_reads
	local out e o
	out=$(phc_check "$DEV" extended 1 6)
	e=$(count_lines "^err errno=$1 " "$out"); o=$(count_lines '^ok ' "$out")
	DETAIL="extended x6 after fail_reads=3: $e failed with errno $1, $o ok; failed_reads=$(cat $TC/failed_reads)"
	[ "$e" = 3 ] && [ "$o" = 3 ] && [ "$(echo "$out" | tail -n 3 | grep -c '^ok ')" = 3 ]
}

check_testclock_eio_burst() { burst 5; }
check_testclock_ebusy_burst() { burst 16; }

check_testclock_fail_for_ms() {
	tc_load fail_errno=16 || { DETAIL="insmod failed"; return 1; }
	echo 500 > $TC/fail_ms
	local out e o
	out=$(phc_check "$DEV" precise 1 10 100)
	e=$(count_lines '^err errno=16 ' "$out"); o=$(count_lines '^ok ' "$out")
	DETAIL="fail_ms=500, 10 reads 100 ms apart: $e EBUSY then $o ok (expect 4-6 EBUSY)"
	[ "$e" -ge 4 ] && [ "$e" -le 6 ] && [ $((e + o)) = 10 ] &&
		[ "$(echo "$out" | tail -n 3 | grep -c '^ok ')" = 3 ]
}

# rmmod while a reader holds the device open: the stale fd gets ENODEV; the
# reloaded clock comes back under another /dev/ptpN and is found by name
check_testclock_rmmod_renumber() {
	tc_load name=tc_renumber || { DETAIL="insmod failed"; return 1; }
	local old=$DEV new out
	phc_check "$old" precise 1 30 100 > /tmp/stale.out &
	local pid=$!
	sleep 1
	rmmod ptp_testclock
	sleep 0.5
	tc_load name=tc_renumber || { DETAIL="reload failed"; kill $pid; return 1; }
	new=$DEV
	out=$(phc_check "$new" precise 1 1)
	wait $pid
	local ok enodev
	ok=$(grep -c '^ok ' /tmp/stale.out); enodev=$(grep -c '^err errno=19 ' /tmp/stale.out)
	DETAIL="first $old, stale fd: $ok ok then $enodev ENODEV; reloaded as $new (found by name), read: $out"
	[ "$new" != "$old" ] && [ "$ok" -ge 5 ] && [ "$enodev" -ge 10 ] &&
		[ $((ok + enodev)) = 30 ] && case "$out" in "ok "*) true ;; *) false ;; esac
}

# the igb NIC's PHC (a real driver): readable, near the guest clock, steady
check_igb_phc() {
	local p dev out
	for p in /sys/bus/pci/drivers/igb/*/ptp/ptp*; do [ -d "$p" ] && dev=/dev/${p##*/}; done
	[ -n "$dev" ] || { DETAIL="no igb PHC"; return 1; }
	ip link set eth0 up 2>/dev/null
	out=$(phc_check "$dev" extended 5 20 50)
	set -- $(echo "$out" | stats 0)
	local pr
	pr=$(phc_check "$dev" precise 1 1)
	DETAIL="$dev extended: n=$1 err=$2 mean offset=$3 sd=$4 max|off|=$5 (bound $B_IGB, sd bound $B_IGB_SD) maxdelay=$6; precise: ${pr%% [A-Z]*}"
	[ "$1" = 20 ] && le "$5" $B_IGB && le "$4" $B_IGB_SD
}

# ---- checks: the PTP plugin through `ntpd-host probe` ----

# probe CONFIG COUNT [INTERVAL]: JSON lines to /tmp/probe.out; returns probe's status
probe() {
	"$HOST" probe "$PTP_SO" --config "$1" --count "$2" --interval "${3:-0.1}" --json \
		>/tmp/probe.out 2>/tmp/probe.err
}

# the "method" of the capabilities line
probe_method() {
	grep '"type":"capabilities"' /tmp/probe.out | sed -n 's/.*"method":"\([a-z]*\)".*/\1/p'
}

# probe_stats TRUTH: over the sample lines, err = offset-ns - TRUTH:
# n errors mean sd max|err| max(|err| - error-ns) max-error-ns
probe_stats() {
	awk -v t="$1" '
	function sq(x, r, i) { if (x <= 0) return 0; r = x; for (i = 0; i < 100; i++) r = (r + x / r) / 2; return r }
	function num(k, v) { if (!match($0, "\"" k "\":-?[0-9]+")) return ""; v = substr($0, RSTART, RLENGTH); sub(/.*:/, "", v); return v + 0 }
	/"type":"sample"/ { e = num("offset-ns") - t; b = num("error-ns"); n++; s += e; ss += e * e
		if (e < 0) e = -e; if (e > m) m = e; if (n == 1 || e - b > x) x = e - b; if (b > mb) mb = b; next }
	/"type":"error"/ { errs++ }
	END { mean = n ? s / n : 0; sd = n > 1 ? sq((ss - n * mean * mean) / (n - 1)) : 0
		printf "%d %d %.0f %.0f %d %d %d\n", n, errs, mean, sd, m, x, mb }' /tmp/probe.out
}

# plugin_measure CONFIG METHOD BOUND [COUNT]: the plugin picks METHOD and every
# sample is within its own error bound (+ B_TRUTH) and within BOUND of the truth;
# at most B_PL_DROPS samples are dropped, each as a transient error (the
# plugin drops a batch whose best read delay is far over the recent typical)
plugin_measure() {
	local cfg=$1 want=$2 bound=$3 count=${4:-20} t1 t2 m
	t1=$(truth)
	probe "$cfg" "$count" 0.1
	local rc=$?
	t2=$(truth)
	m=$(probe_method)
	set -- $(probe_stats "$t1")
	DETAIL="$DETAIL $cfg: method=$m (want $want) n=$1 errors=$2 mean=$3 sd=$4 max|err|=$5 (bound $bound) max(|err|-error-ns)=$6 (bound $B_TRUTH) max error-ns=$7;"
	[ $rc = 0 ] || DETAIL="$DETAIL probe exit $rc: $(tail -n 1 /tmp/probe.err);"
	grep '"type":"error"' /tmp/probe.out | head -n 5 | sed 's/^/# probe error: /'
	local other
	other=$(grep '"type":"error"' /tmp/probe.out | grep -vc '"kind":"transient"')
	[ $rc = 0 ] && [ "$m" = "$want" ] && [ $(($1 + $2)) = "$count" ] && [ "$2" -le $B_PL_DROPS ] &&
		[ "$other" = 0 ] && le "$5" "$bound" && le "$6" $B_TRUTH && le "$((t2 - t1))" $B_TRUTH && le "$((t1 - t2))" $B_TRUTH
}

check_plugin_all_callbacks() {
	tc_load precise=1 extended=1 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	plugin_measure '{"clock-name": "ptp_testclock"}' precise $B_PL_PRECISE
}

check_plugin_no_crosstimestamp() {
	tc_load precise=0 extended=1 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	plugin_measure '{"clock-name": "ptp_testclock"}' extended $B_PL_EXTENDED
}

check_plugin_basic_only() {
	tc_load precise=0 extended=0 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	plugin_measure '{"clock-name": "ptp_testclock"}' standard $B_PL_STANDARD
}

check_plugin_method_forced() {
	tc_load precise=1 extended=1 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	local ok=0
	plugin_measure "{\"device\": \"$DEV\", \"method\": \"extended\"}" extended $B_PL_EXTENDED || ok=1
	plugin_measure "{\"device\": \"$DEV\", \"method\": \"standard\", \"readings\": 5}" standard $B_PL_STANDARD || ok=1
	return $ok
}

# a clock with timestamp noise of its own (jitter_ns=1000, uniform +-1 us on
# each read) is found noisy at start, and its samples average the widened
# band; the same clock without the noise is not
check_plugin_noisy_clock() {
	local ok=0 j readings
	for j in 0 1000; do
		tc_load precise=0 extended=1 offset_ns=$OFF jitter_ns=$j || { DETAIL="insmod failed"; return 1; }
		local t1
		t1=$(truth)
		probe '{"clock-name": "ptp_testclock"}' 20 0.05 || { DETAIL="$DETAIL jitter $j: probe failed: $(tail -n 1 /tmp/probe.err);"; ok=1; continue; }
		readings=$(sed -n 's/.*"type":"sample".*"readings":\([0-9]*\).*/\1/p' /tmp/probe.out | sort -n | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] + 0 }')
		set -- $(probe_stats "$t1")
		DETAIL="$DETAIL jitter $j: n=$1 mean=$3 sd=$4 median readings=$readings"
		if grep -q 'timestamp noise' /tmp/probe.out; then
			DETAIL="$DETAIL, $(grep -o 'timestamp noise [0-9]* ns' /tmp/probe.out | head -n 1);"
			[ $j != 0 ] || ok=1
		else
			DETAIL="$DETAIL, no timestamp noise found;"
			[ $j = 0 ] || ok=1
		fi
		if [ $j != 0 ]; then
			[ "$1" -ge 15 ] && [ "$readings" -ge $B_PL_NOISY_READINGS ] && le "$4" $B_PL_NOISY_SD &&
				le "${3#-}" $B_PL_EXTENDED || ok=1
		fi
	done
	DETAIL="$DETAIL (bounds: readings >= $B_PL_NOISY_READINGS, sd <= $B_PL_NOISY_SD, |mean| <= $B_PL_EXTENDED)"
	return $ok
}

# a forced method the clock lacks is refused at init, with the reason
check_plugin_method_forced_missing() {
	tc_load precise=0 extended=0 offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	local ok=0 m
	for m in precise extended; do
		if probe "{\"device\": \"$DEV\", \"method\": \"$m\"}" 1; then
			DETAIL="$DETAIL $m forced on a basic-only clock: accepted;"
			ok=1
		else
			DETAIL="$DETAIL $m forced: refused: $(tail -n 1 /tmp/probe.err | cut -c1-160);"
			grep -qi configuration /tmp/probe.err || ok=1
		fi
	done
	return $ok
}

# clock-name finds the clock after a reload gave it another /dev/ptpN (an old
# descriptor was still open)
check_plugin_clock_name_renumber() {
	tc_load name=tc_plugin offset_ns=$OFF || { DETAIL="insmod failed"; return 1; }
	local old=$DEV pid
	plugin_measure '{"clock-name": "tc_plugin"}' precise $B_PL_PRECISE 5 || return 1
	phc_check "$old" precise 1 40 100 >/dev/null &
	pid=$!
	sleep 0.5
	rmmod ptp_testclock
	tc_load name=tc_plugin offset_ns=$OFF || { DETAIL="$DETAIL reload failed"; kill $pid; return 1; }
	DETAIL="$DETAIL reloaded: $old -> $DEV;"
	plugin_measure '{"clock-name": "tc_plugin"}' precise $B_PL_PRECISE 5
	local rc=$?
	grep -q "\"device\":\"$DEV\"" /tmp/probe.out || { DETAIL="$DETAIL capabilities do not name $DEV;"; rc=1; }
	kill $pid 2>/dev/null; wait $pid 2>/dev/null
	[ "$DEV" != "$old" ] && [ $rc = 0 ]
}

# the igb PHC through the plugin, by interface, against phc_check before and
# after (the igb clock wanders against the guest clock by up to ~1 us when the
# host is busy: the bound widens by half of what phc_check saw it move)
check_plugin_igb() {
	ip link set eth0 up 2>/dev/null
	local p dev m r1 r2
	for p in /sys/bus/pci/drivers/igb/*/ptp/ptp*; do [ -d "$p" ] && dev=/dev/${p##*/}; done
	[ -n "$dev" ] || { DETAIL="no igb PHC"; return 1; }
	set -- $(phc_check "$dev" extended 10 5 50 | stats 0); r1=$3
	probe '{"interface": "eth0"}' 20 0.05 || { DETAIL="probe failed: $(tail -n 1 /tmp/probe.err)"; return 1; }
	set -- $(phc_check "$dev" extended 10 5 50 | stats 0); r2=$3
	m=$(probe_method)
	local got
	got=$(grep '"type":"capabilities"' /tmp/probe.out | sed -n 's/.*"device":"\([^"]*\)".*/\1/p')
	set -- $(probe_stats 0)
	local n=$1 errs=$2 mean=$3 sd=$4 maxerr=$7 d bound
	d=$(awk -v a="$mean" -v b="$r1" -v c="$r2" 'BEGIN { d = a - (b + c) / 2; print d < 0 ? -d : d }')
	bound=$(awk -v b="$r1" -v c="$r2" -v k=$B_PL_IGB 'BEGIN { d = (b - c) / 2; print k + (d < 0 ? -d : d) }')
	DETAIL="$got (want $dev) method=$m n=$n errors=$errs mean offset=$mean sd=$sd max error-ns=$maxerr; phc_check before $r1 after $r2; |plugin - phc_check|=$d (bound $bound)"
	[ "$got" = "$dev" ] && [ "$m" = extended ] && [ $((n + errs)) = 20 ] && [ "$errs" -le $B_PL_DROPS ] &&
		le "$d" "$bound" && le "$sd" $B_IGB_SD
}

# a burst of read failures while the probe samples: those samples fail with
# the documented kind, the rest stay right, and sampling resumes after
plugin_burst() { # ERRNO KIND
	local errno=$1 want=$2 t pid rc
	tc_load precise=0 extended=1 offset_ns=$OFF fail_errno="$errno" || { DETAIL="insmod failed"; return 1; }
	t=$(truth)
	"$HOST" probe "$PTP_SO" --config '{"clock-name": "ptp_testclock"}' --count 40 --interval 0.1 --json \
		>/tmp/probe.out 2>/tmp/probe.err &
	pid=$!
	sleep 1.5
	echo 1000 > $TC/fail_ms
	wait $pid
	rc=$?
	local kinds last
	kinds=$(grep '"type":"error"' /tmp/probe.out | sed -n 's/.*"kind":"\([a-z]*\)".*/\1/p' | sort | uniq -c | tr -s ' \n' ' ')
	last=$(grep -E '"type":"(sample|error)"' /tmp/probe.out | tail -n 5 | grep -c '"type":"sample"')
	set -- $(probe_stats "$t")
	DETAIL="errno $errno for 1000 ms during 40 samples 100 ms apart: $1 samples ok, $2 failed ($kinds, want $want); last 5 ok: $last; max|err|=$5 (bound $B_PL_EXTENDED); probe exit $rc"
	[ "$2" -ge 8 ] && [ "$2" -le 12 ] && [ $(($1 + $2)) = 40 ] && [ "$last" = 5 ] &&
		le "$5" $B_PL_EXTENDED && [ "$(echo "$kinds" | tr -d ' 0-9')" = "$want" ]
}

check_plugin_eio_burst() { plugin_burst 5 unavailable; }
check_plugin_ebusy_burst() { plugin_burst 16 transient; }

# a PHC running TAI (+37 s), and the fixed `offset` correction
check_plugin_tai_and_offset() {
	tc_load precise=1 extended=1 offset_ns=$((37000000000 + OFF)) || { DETAIL="insmod failed"; return 1; }
	local ok=0 t
	t=$(truth)
	probe '{"clock-name": "ptp_testclock", "timescale": "tai", "tai-offset": 37}' 10 || ok=1
	set -- $(probe_stats $((t - 37000000000)))
	DETAIL="tai: n=$1 errors=$2 max|err|=$5 (bound $B_PL_PRECISE);"
	[ "$1" = 10 ] && le "$5" $B_PL_PRECISE || ok=1
	probe '{"clock-name": "ptp_testclock", "timescale": "tai", "tai-offset": 37, "offset": 0.000002}' 10 || ok=1
	set -- $(probe_stats $((t - 37000000000 + 2000)))
	DETAIL="$DETAIL tai with offset=+2 us: n=$1 errors=$2 max|err|=$5 (bound $B_PL_PRECISE)"
	[ "$1" = 10 ] && le "$5" $B_PL_PRECISE || ok=1
	return $ok
}

# ---- diagnostics: run only when named (NTPD_HOST_VM_CHECKS), never counted as coverage ----

# how the igb PHC's offset from the guest clock wanders: 40 x 0.5 s
check_diag_igb_wander() {
	local p dev i
	for p in /sys/bus/pci/drivers/igb/*/ptp/ptp*; do [ -d "$p" ] && dev=/dev/${p##*/}; done
	ip link set eth0 up 2>/dev/null
	for i in $(seq 40); do
		note "igb $(phc_check clocks | cut -d' ' -f1) $(phc_check "$dev" extended 10 1)"
		sleep 0.5
	done
	DETAIL="diagnostic only"
}

# ntpd-host run with the test clock and igb: print what status shows
check_diag_daemon_status() {
	tc_load name=tc_daemon || { DETAIL="insmod failed"; return 1; }
	ip link set eth0 up 2>/dev/null
	daemon_config > /tmp/ntp.toml
	"$HOST" run -c /tmp/ntp.toml > /tmp/daemon.log 2>&1 &
	local pid=$! i
	for i in 1 2 3 4 5 6 7 8; do
		sleep 2
		note "t=$((i * 2)) s: $("$HOST" status -c /tmp/ntp.toml --json 2>&1 | head -c 3000)"
	done
	"$HOST" status -c /tmp/ntp.toml 2>&1 | sed 's/^/# /'
	kill $pid; sleep 1
	sed 's/^/# log: /' /tmp/daemon.log | head -40
	DETAIL="diagnostic only"
}

# the daemon config: the test clock (by name) and igb (by interface), 1 s
# polls (the test clock's poll-interval is $1, log2 s, if given)
daemon_config() {
	ntp_config "$(plugin_source testclock "${1:-0}" clock-name=tc_daemon)" \
		"$(plugin_source igb 0 interface=eth0)"
}

# ---- checks: ntpd-host run (the real ntpd-rs daemon, as root in the guest) ----

# the test clock removed under a running ntpd-host: its source becomes
# unavailable while igb keeps delivering and the daemon keeps running; after
# the reload, samples resume within two poll intervals. The long outage (10 s)
# is the one that matters: the host's re-init backoff doubles only up to the
# poll interval, so even after a long outage the returning clock is sampled
# within two poll intervals (before that cap: 5.7 s after a 10 s outage).
check_daemon_rmmod_reload() { daemon_rmmod_reload $OUTAGE_LONG; }
check_daemon_rmmod_reload_short() { daemon_rmmod_reload 3; }
# the cap at a longer poll interval: poll-interval = 2 (4 s), a 20 s outage
# (the backoff doubles 1, 2, 4 s and stays at 4 s): resume within 8 s
check_daemon_rmmod_reload_poll4() { daemon_rmmod_reload 20 2; }

daemon_rmmod_reload() { # OUTAGE_SECONDS [POLL_LOG2]
	local outage=$1 poll=${2:-0} bound
	bound=$((B_RESUME_MS << poll))   # two poll intervals
	tc_load name=tc_daemon || { DETAIL="insmod failed"; return 1; }
	ip link set eth0 up 2>/dev/null
	mkdir -p /run/ntpd-rs
	daemon_config "$poll" > /tmp/ntp.toml
	"$HOST" run -c /tmp/ntp.toml > /tmp/daemon.log 2>&1 &
	local host=$! i ok=0 tc0 igb0 igb1 st err dpid t0 t1 tc1
	for i in $(seq 80); do
		sleep 0.5
		status_now
		[ "$(src testclock samples)" -ge 3 ] 2>/dev/null && [ "$(src igb samples)" -ge 3 ] 2>/dev/null && break
	done
	tc0=$(src testclock samples); igb0=$(src igb delivered)
	dpid=$(status_field daemon-pid)
	DETAIL="before: testclock $tc0 samples, igb $igb0 delivered, daemon pid $dpid;"
	rmmod ptp_testclock || { DETAIL="$DETAIL rmmod failed;"; ok=1; }
	sleep "$outage"
	status_now
	st=$(src testclock state); err=$(src testclock errors); igb1=$(src igb delivered)
	DETAIL="$DETAIL $outage s after rmmod: testclock $st, errors $err; igb delivered $igb0 -> $igb1;"
	[ "$st" != '"running"' ] && case "$err" in *unavailable*) true ;; *) false ;; esac || ok=1
	[ "$((igb1 - igb0))" -ge 2 ] 2>/dev/null || ok=1
	kill -0 "$host" 2>/dev/null && kill -0 "$dpid" 2>/dev/null || { DETAIL="$DETAIL daemon gone;"; ok=1; }
	tc1=$(src testclock samples)
	t0=$(now_ms)
	insmod "$KO" name=tc_daemon || { DETAIL="$DETAIL reload failed;"; ok=1; }
	t1=
	for i in $(seq 200); do
		status_now
		if [ "$(src testclock samples)" -gt "$tc1" ] 2>/dev/null; then t1=$(now_ms); break; fi
		sleep 0.1
	done
	st=$(src testclock state)
	if [ -n "$t1" ]; then
		DETAIL="$DETAIL reloaded as $(dev_by_name tc_daemon): first sample after $((t1 - t0)) ms (bound $bound: two $((1000 << poll)) ms poll intervals), state $st;"
		[ $((t1 - t0)) -le $bound ] || ok=1
	else
		DETAIL="$DETAIL reloaded: no sample within 20 s, state $st, last error $(src testclock last-error);"
		ok=1
	fi
	kill -0 "$host" 2>/dev/null && kill -0 "$dpid" 2>/dev/null || { DETAIL="$DETAIL daemon gone at the end;"; ok=1; }
	kill "$host"; wait "$host" 2>/dev/null
	[ $ok = 0 ] || grep -v kalman /tmp/daemon.log | tail -n 15 | sed 's/^/# log: /'
	return $ok
}

# two test PHCs (one module instance, name and name2: same time) and igb as
# three plugin sources under ntpd-host run: `status --json` shows all three
# running with samples delivered, each on its own device with the expected
# method, and each joined (by its socket path) to the daemon's view of it, in
# which the daemon has measurements (finite uncertainty, an offset near the
# host's own last sample); the text `status` shows the same three sources
three_config() {
	ntp_config "$(plugin_source tc_a 0 clock-name=tc_a)" \
		"$(plugin_source tc_b 0 clock-name=tc_b method=extended)" \
		"$(plugin_source igb 0 interface=eth0)"
}

check_three_sources_status() {
	tc_load name=tc_a name2=tc_b || { DETAIL="insmod failed"; return 1; }
	local dev_b
	dev_b=$(dev_by_name tc_b) || { DETAIL="no second clock tc_b"; return 1; }
	ip link set eth0 up 2>/dev/null
	mkdir -p /run/ntpd-rs
	three_config > /tmp/ntp.toml
	adjtimex -f 0 >/dev/null
	"$HOST" run -c /tmp/ntp.toml > /tmp/daemon.log 2>&1 &
	local host=$! i ok=0 n want devs= t0 t1 waited
	t0=$(now_ms)
	for i in $(seq 80); do
		sleep 0.5
		status_now
		n=0
		for s in tc_a tc_b igb; do
			[ "$(src $s delivered)" -ge $B_3SRC_SAMPLES ] 2>/dev/null &&
				[ "$(dsrc $s uncertainty | awk '{ print ($1 + 0 < 1e-3) }')" = 1 ] && n=$((n + 1))
		done
		[ $n = 3 ] && break
	done
	t1=$(now_ms)
	waited=$((t1 - t0))
	DETAIL="three sources ready after $waited ms (bound $B_3SRC_READY_MS):"
	[ $waited -le $B_3SRC_READY_MS ] || ok=1
	for s in tc_a tc_b igb; do
		local st sm dl m dev off dadr doff dunc sock d
		st=$(src $s state); sm=$(src $s samples); dl=$(src $s delivered)
		m=$(src $s method); dev=$(src $s device); off=$(src $s last-offset-ns)
		sock=$(src $s socket)
		dadr=$(dsrc $s address); doff=$(dsrc $s offset); dunc=$(dsrc $s uncertainty)
		case $s in igb) want='"extended"' ;; tc_b) want='"extended"' ;; *) want='"precise"' ;; esac
		# |daemon's offset - host's last sample|, ns
		d=$(awk -v a="$doff" -v b="$off" 'BEGIN { d = a * 1e9 - b; printf "%.0f", d < 0 ? -d : d }')
		DETAIL="$DETAIL $s: $st $dev method $m (want $want) samples $sm delivered $dl last offset $off ns; daemon: address $dadr, offset $doff s, uncertainty $dunc s, |daemon - last| $d ns (bound $B_3SRC_AGREE);"
		[ "$st" = '"running"' ] && [ "$m" = "$want" ] && [ "$dl" -ge $B_3SRC_SAMPLES ] 2>/dev/null &&
			[ -n "$dadr" ] && [ "$dadr" = "$sock" ] && [ -n "$doff" ] && [ -n "$dunc" ] &&
			le "$dunc" 1e-3 && le "$d" $B_3SRC_AGREE || ok=1
		case " $devs " in *" $dev "*) DETAIL="$DETAIL device $dev used twice;"; ok=1 ;; esac
		devs="$devs $dev"
	done
	case "$devs" in *"\"$DEV\""*) ;; *) DETAIL="$DETAIL $DEV missing;"; ok=1 ;; esac
	case "$devs" in *"\"$dev_b\""*) ;; *) DETAIL="$DETAIL $dev_b missing;"; ok=1 ;; esac
	# the text form: three sources, each running, each with a daemon line
	"$HOST" status -c /tmp/ntp.toml > /tmp/status.txt 2>&1
	local nrun ndaemon
	nrun=$(grep -c '^source #[0-9]* [a-z_]*: running$' /tmp/status.txt)
	ndaemon=$(grep -c '^  daemon     offset [-+]' /tmp/status.txt)
	DETAIL="$DETAIL text status: $nrun sources running, $ndaemon daemon lines (want 3, 3)"
	[ "$nrun" = 3 ] && [ "$ndaemon" = 3 ] || ok=1
	kill -0 "$host" 2>/dev/null || { DETAIL="$DETAIL host gone;"; ok=1; }
	kill "$host"; wait "$host" 2>/dev/null
	adjtimex -f 0 >/dev/null
	[ $ok = 0 ] || { sed 's/^/# status: /' /tmp/status.txt; echo "$STATUS" | head -n 60 | sed "s/^/# status: /"; grep -v kalman /tmp/daemon.log | tail -n 15 | sed 's/^/# log: /'; }
	return $ok
}

# ---- checks: privileges, other users, the daemon supervised ----

# the worker of a PTP source runs as the ntpd-host user with no capability,
# no new privileges and the seccomp filter, and still reads the test PHC
# (mdev gives /dev/ptpN to group ntpd-host, 0640, as the udev rule does)
check_worker_unprivileged() {
	tc_load name=tc_priv || { DETAIL="insmod failed"; return 1; }
	local mode pid st uid gid groups caps nnp sec dl ok=0
	mode=$(stat -c '%A %U %G' "$DEV")
	ntp_config "$(plugin_source phc 0 clock-name=tc_priv)" > $NTP_TOML
	start_host
	wait_delivered phc 3 || ok=1
	pid=$(src phc pid)
	st=/proc/$pid/status
	uid=$(awk '/^Uid:/ { print $2, $3, $4, $5 }' "$st")
	gid=$(awk '/^Gid:/ { print $2, $3, $4, $5 }' "$st")
	groups=$(awk '/^Groups:/ { print $2 }' "$st")
	caps=$(awk '/^Cap(Inh|Prm|Eff|Bnd|Amb):/ { printf "%s%s ", $1, $2 }' "$st")
	local capvalues
	capvalues=$(awk '/^Cap(Inh|Prm|Eff|Bnd|Amb):/ { printf "%s", $2 }' "$st")
	nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "$st")
	sec=$(awk '/^Seccomp:/ { print $2 }' "$st")
	dl=$(src phc delivered)
	DETAIL="$DEV: $mode; worker $pid: Uid $uid, Gid $gid, groups [$groups], $caps NoNewPrivs $nnp, Seccomp $sec; $dl samples delivered"
	stop_host
	[ "$mode" = "crw-r----- root ntpd-host" ] && [ "$uid" = "990 990 990 990" ] && [ "$gid" = "990 990 990 990" ] &&
		[ -z "$groups" ] && [ "$nnp" = 1 ] && [ "$sec" = 2 ] && [ "$dl" -ge 3 ] 2>/dev/null || ok=1
	case "$capvalues" in *[1-9a-f]* | "") ok=1 ;; esac
	return $ok
}

# the sim plugin's attempt to set the system clock (clock_settime to its
# own reading; adjtimex ADJ_FREQUENCY to the current frequency) gets EPERM
# from a worker, and the clock is untouched (bridge: no daemon steers it)
check_worker_cannot_set_the_clock() {
	local f0 f1 r0 r1 d0 d1 i last ok=0
	cat > /tmp/bridge.toml <<-EOT
	[[source]]
	mode = "plugin"
	path = "$SIM_SO"
	name = "setter"
	poll-interval = -1
	socket = "/tmp/nowhere.sock"
	[source.config]
	set-clock-at = 2
	EOT
	adjtimex -f 0 > /dev/null
	f0=$(adjtimex | sed -n 's/.*freq.adjust: *\(-\{0,1\}[0-9]*\).*/\1/p')
	r0=$(phc_check clocks)
	"$HOST" bridge -c /tmp/bridge.toml --runtime-dir /run/ntpd-host-bridge > /tmp/bridge.log 2>&1 &
	local bpid=$!
	for i in $(seq 40); do
		sleep 0.25
		last=$("$HOST" status --runtime-dir /run/ntpd-host-bridge --json 2>/dev/null | jq -r '.sources[0]["last-error"] // empty')
		case "$last" in *set-clock-at*) break ;; esac
	done
	r1=$(phc_check clocks)
	f1=$(adjtimex | sed -n 's/.*freq.adjust: *\(-\{0,1\}[0-9]*\).*/\1/p')
	kill $bpid; wait $bpid 2>/dev/null
	# realtime - monoraw before and after: the same unless the clock was set
	d0=$(echo "$r0" | awk '{ split($1, a, "="); split($2, b, "="); print a[2] - b[2] }')
	d1=$(echo "$r1" | awk '{ split($1, a, "="); split($2, b, "="); print a[2] - b[2] }')
	local moved
	moved=$(awk -v a="$d0" -v b="$d1" 'BEGIN { d = b - a; print d < 0 ? -d : d }')
	DETAIL="what the plugin got: ${last:-nothing}; kernel frequency $f0 -> $f1; CLOCK_REALTIME - MONOTONIC_RAW moved $moved ns (bound $B_CLOCK_UNTOUCHED_NS)"
	case "$last" in *"clock_settime: EPERM; adjtimex(ADJ_FREQUENCY): EPERM"*) ;; *) ok=1 ;; esac
	[ "$f0" = "$f1" ] && le "$moved" $B_CLOCK_UNTOUCHED_NS || ok=1
	return $ok
}

# modes of the runtime directory; another user (nobody) can neither read
# the status nor send a sample; a member of the workers' group (reader) can
# read the status but cannot send a sample; the daemon gets none of the
# forged samples (+0.5 s)
check_other_users() {
	tc_load name=tc_users || { DETAIL="insmod failed"; return 1; }
	local sock modes n1 n2 s1 s2 off ok=0
	ntp_config "$(plugin_source phc 0 clock-name=tc_users)" > $NTP_TOML
	start_host
	wait_delivered phc 9 || ok=1
	sock=$RUNTIME/sources/source-1.sock
	modes=$(for f in $RUNTIME $RUNTIME/sources $RUNTIME/status.sock $RUNTIME/ntp.toml "$sock"; do stat -c '%a %U %G' "$f"; done | paste -sd, -)
	n1=$(phc_check runas 65534 65534 phc_check sendsock "$sock" 500000000)
	n2=$(phc_check runas $READER_UID $GROUP_GID phc_check sendsock "$sock" 500000000)
	s1=$(phc_check runas 65534 65534 "$HOST" status -c $NTP_TOML 2>&1 | head -n 1)
	s2=$(phc_check runas $READER_UID $GROUP_GID "$HOST" status -c $NTP_TOML --json 2>&1 | jq -r '.sources[0].state' 2>&1)
	sleep 2
	status_now
	off=$(dsrc phc offset)
	DETAIL="modes $modes (want 750 root ntpd-host,2700 ntpd-host ntpd-host,660 root ntpd-host,600 root root,770 root ntpd-host); nobody sends: $n1; reader sends: $n2; nobody status: $s1; reader status: $s2; daemon's offset of the source $off s"
	stop_host
	[ "$modes" = "750 root ntpd-host,2700 ntpd-host ntpd-host,660 root ntpd-host,600 root root,770 root ntpd-host" ] || ok=1
	case "$n1" in "err errno=13 "*) ;; *) ok=1 ;; esac
	case "$n2" in "err errno=13 "*) ;; *) ok=1 ;; esac
	case "$s1" in *"Permission denied"*) ;; *) ok=1 ;; esac
	[ "$s2" = running ] || ok=1
	le "$(abs "$off")" 0.001 || ok=1
	return $ok
}

# kill -9 of the ntpd-rs daemon: the host restarts it (1 s backoff) while the
# worker keeps running; samples reach the new daemon within two poll
# intervals of its start; status counts the restart
check_daemon_kill9_restart() {
	tc_load name=tc_kill || { DETAIL="insmod failed"; return 1; }
	local dpid wpid np t0 t1= dl0 i restarts ok=0
	ntp_config "$(plugin_source phc 0 clock-name=tc_kill)" > $NTP_TOML
	start_host
	wait_delivered phc 3 || ok=1
	dpid=$(status_field daemon-pid); wpid=$(src phc pid)
	kill -9 "$dpid"
	for i in $(seq 100); do
		sleep 0.1
		status_now
		np=$(status_field daemon-pid)
		[ -n "$np" ] && [ "$np" != null ] && [ "$np" != "$dpid" ] && break
	done
	t0=$(now_ms)
	dl0=$(src phc delivered)
	for i in $(seq 60); do
		status_now
		if [ "$(src phc delivered)" -gt "$dl0" ] 2>/dev/null; then t1=$(now_ms); break; fi
		sleep 0.1
	done
	restarts=$(status_field daemon-restarts)
	DETAIL="daemon $dpid killed; new daemon $np; status: $restarts restart(s), last $(status_field daemon-last-end); worker $wpid -> $(src phc pid); first sample delivered ${t1:+$((t1 - t0)) ms }after the new daemon was seen (bound $B_DAEMON_RESUME_MS)"
	kill -0 "$HOSTPID" 2>/dev/null || { DETAIL="$DETAIL; host gone"; ok=1; }
	stop_host
	[ "$restarts" = 1 ] && [ "$(src phc pid)" = "$wpid" ] && [ -n "$t1" ] && [ $((t1 - t0)) -le $B_DAEMON_RESUME_MS ] || ok=1
	return $ok
}

# a deliberate exit of ntpd-rs (its start-up panic threshold, 1 s, on the
# 10 s step it would make): the host stops everything and exits with
# ntpd-rs's status, 70, and a log line that says why
check_daemon_panic_exit() {
	tc_load name=tc_panic offset_ns=10000000000 || { DETAIL="insmod failed"; return 1; }
	local i rc= left socks ok=0
	SYNC_EXTRA='startup-step-panic-threshold = 1' ntp_config "$(plugin_source phc 0 clock-name=tc_panic)" > $NTP_TOML
	adjtimex -f 0 > /dev/null
	start_host
	for i in $(seq 120); do
		sleep 0.5
		kill -0 "$HOSTPID" 2>/dev/null || break
	done
	wait "$HOSTPID"; rc=$?
	sleep 0.3
	left=$(host_processes)
	socks=$(find $RUNTIME -type s 2>/dev/null | wc -l)
	DETAIL="host exit status $rc (want 70) after about $((i / 2)) s; $left ntpd-host processes and $socks sockets left; log: $(grep -o 'the ntpd-rs daemon exited with status [0-9]* on its own[^;]*' /tmp/host.log | head -n 1)"
	adjtimex -f 0 > /dev/null
	[ "$rc" = 70 ] && [ "$left" = 0 ] && [ "$socks" = 0 ] && grep -q 'on its own' /tmp/host.log || ok=1
	[ $ok = 0 ] || tail -n 5 /tmp/host.log | sed 's/^/# log: /'
	return $ok
}

# SIGTERM at moments of start-up (loading, init, the precision wait, the
# daemon's start, running): exit 0, no process and no socket left
check_startup_sigterm() {
	tc_load name=tc_term || { DETAIL="insmod failed"; return 1; }
	local d rc left socks ok=0
	ntp_config "$(plugin_source phc 0 clock-name=tc_term)" \
		"$(SO_PATH=$SIM_SO plugin_source slow 0 init-failures=1)" > $NTP_TOML
	for d in 0.05 0.3 1 2 4 7; do
		start_host
		sleep "$d"
		kill -TERM "$HOSTPID"
		wait "$HOSTPID"; rc=$?
		sleep 0.3
		left=$(host_processes)
		socks=$(find $RUNTIME -type s 2>/dev/null | wc -l)
		DETAIL="$DETAIL ${d} s: exit $rc, $left processes, $socks sockets;"
		[ "$rc" = 0 ] && [ "$left" = 0 ] && [ "$socks" = 0 ] || ok=1
	done
	return $ok
}

# ---- checks: closed loop ----

# ntpd-host run (the real ntpd-rs daemon) steers the guest's CLOCK_REALTIME to
# the test clock, which starts at +200 ms and +20 ppm (for tai: +37 s more,
# the clock running TAI, the plugin told timescale = "tai", tai-offset = 37).
# The truth (true_offset_ns, less 37 s for tai) is read every second; every
# line goes to the console log ("loop ..."), every 10th is a note. Measured:
# the time to the first |offset| < 1 us, and over the last LOOP_WINDOW
# seconds the RMS, mean and max |offset|. At the end `status --json` must
# show the source running with the method and time scale asked for.
closed_loop() { # METHOD SECONDS [tai]
	local method=$1 secs=$2 tai=${3:-} i t first= n=0 ss=0 sum=0 mx=0 base=0 win lo pn=0 pe=0
	win=$LOOP_WINDOW
	[ "$tai" = tai ] && base=37000000000
	case $method in
	precise) tc_load name=tc_loop offset_ns=$((base + 200000000)) ;;
	extended) tc_load name=tc_loop offset_ns=$((base + 200000000)) precise=0 ;;
	standard) tc_load name=tc_loop offset_ns=$((base + 200000000)) precise=0 extended=0 ;;
	esac || { DETAIL="insmod failed"; return 1; }
	adjtimex -f 0 >/dev/null   # a previous daemon's frequency stays in the kernel
	if [ "$tai" = tai ]; then
		ntp_config "$(plugin_source phc 0 clock-name=tc_loop timescale=tai tai-offset=37)"
	else
		ntp_config "$(plugin_source phc 0 clock-name=tc_loop)"
	fi > /tmp/ntp.toml
	# the read path's own bias (measured - truth), before the loop: the loop
	# drives the plugin's offset to 0, so the true offset settles near -bias
	local rb=
	if [ "$method" != precise ]; then
		local pm=$method
		[ "$pm" = standard ] && pm=basic
		set -- $(phc_check "$DEV" "$pm" 10 20 | stats "$(truth)")
		rb="; phc_check's read-path bias before the loop $3 ns (sd $4, $pm x10, 20 batches)"
	fi
	echo 20000 > $TC/freq_ppb   # the oscillator error from now on (measured above without it)
	local t0 el
	t0=$(now_ms)
	"$HOST" run -c /tmp/ntp.toml > /tmp/loop.log 2>&1 &
	local host=$!
	for i in $(seq "$secs"); do
		sleep 1
		t=$(($(truth) - base))
		el=$(($(now_ms) - t0))
		status_now
		lo=$(src phc last-offset-ns)
		echo "loop $method${tai:+ tai} t=$el ms true_offset_ns=$t plugin_offset_ns=$lo samples=$(src phc samples) delivered=$(src phc delivered) errors=$(src phc errors)"
		[ $((i % 10)) = 0 ] && note "loop $method${tai:+ tai} t=$((el / 1000)) s true offset $t ns"
		if [ -z "$first" ] && [ "${t#-}" -lt 1000 ]; then first=$el; fi
		if [ "$i" -gt $((secs - win)) ]; then
			n=$((n + 1)); sum=$((sum + t))
			ss=$(awk -v a="$ss" -v t="$t" 'BEGIN { printf "%.0f", a + t * t }')
			[ "${t#-}" -gt "$mx" ] && mx=${t#-}
			# the plugin's own error: its last offset minus the truth
			[ -n "$lo" ] && [ "$lo" != null ] && { pn=$((pn + 1)); pe=$((pe + lo - t)); }
		fi
	done
	status_now
	local st m ts
	st=$(src phc state); m=$(src phc method); ts=$(src phc timescale)
	kill -0 $host 2>/dev/null || DETAIL="host gone before the end;"
	kill $host; wait $host 2>/dev/null
	adjtimex -f 0 >/dev/null
	local rms mean ok=0
	rms=$(awk -v s="$ss" -v n="$n" 'function sq(x, r, i) { if (x <= 0) return 0; r = x; for (i = 0; i < 100; i++) r = (r + x / r) / 2; return r } BEGIN { printf "%.0f", sq(s / n) }')
	mean=$((sum / n))
	local pmean=none
	[ $pn -gt 0 ] && pmean=$((pe / pn))
	local brms
	brms=$(eval echo "\$B_LOOP_RMS_$method")
	DETAIL="$DETAIL $method${tai:+ (tai)}: first |offset| < 1 us after ${first:-never} ms (bound $B_LOOP_CONVERGE_MS); over the last $n s: RMS $rms ns (bound $brms), mean $mean ns (the plugin's error meanwhile: mean $pmean ns over $pn samples), max |offset| $mx ns (bound $((brms * B_LOOP_MAX_X))); status: $st, method $m, timescale $ts$rb"
	[ -n "$first" ] && [ "$first" -le $B_LOOP_CONVERGE_MS ] && [ "$rms" -le "$brms" ] &&
		[ "$mx" -le $((brms * B_LOOP_MAX_X)) ] && [ "$st" = '"running"' ] && [ "$m" = "\"$method\"" ] &&
		[ "$ts" = "\"${tai:-utc}\"" ] || ok=1
	[ $ok = 0 ] || grep -v kalman /tmp/loop.log | tail -n 8 | sed 's/^/# log: /'
	# the whole log (with the daemon's per-update offset and frequency
	# estimates) into the console log only, to explain a convergence path
	sed 's/^/loop log: /' /tmp/loop.log
	return $ok
}
check_closed_loop_precise() { closed_loop precise $LOOP_SECS; }
check_closed_loop_extended() { closed_loop extended $LOOP_SECS; }
check_closed_loop_tai() { closed_loop precise $LOOP_SECS tai; }
check_diag_closed_loop_standard() { closed_loop standard $LOOP_SECS; DETAIL="$DETAIL (diagnostic)"; return 0; }

# ---- checks: the ClockBound error bound, read by AWS's client ----

# cb_phase NAME: one `cb-client truth` run of CB_PHASE_MS against the test
# clock's ground truth; appends to DETAIL; false if a reading that claims a
# bound (synchronized, free-running) missed the true time, or the client
# failed. Sets CB_SYNC_PCT, CB_MEDIAN.
CB_IN=0 CB_ALL=0
cb_phase() {
	local out
	out=$(cb-client truth $CB_SEGMENT $CB_PHASE_MS $CB_EVERY_US $TC/true_offset_ns)
	echo "clockbound phase $1: $out"
	set -- "$1" $(echo "$out" | jq -r '[.reads, .synchronized, .free_running, .unknown, .inside, .outside, .errors, .width_median_ns, .width_p99_ns, .width_max_ns, .worst_margin_ns, .max_abs_true_offset_ns] | map(tostring) | join(" ")')
	[ $# = 13 ] || { DETAIL="$DETAIL $1: no summary ($out);"; return 1; }
	local name=$1 reads=$2 sync=$3 fr=$4 unk=$5 in=$6 outside=$7 errs=$8
	CB_MEDIAN=$9
	shift 9
	DETAIL="$DETAIL $name: $in of $((sync + fr)) claimed readings inside (of $reads; $unk unknown), width median $CB_MEDIAN p99 $1 max $2 ns, worst margin $3 ns, max |true offset| $4 ns;"
	CB_IN=$((CB_IN + in)); CB_ALL=$((CB_ALL + sync + fr))
	CB_SYNC_PCT=$((reads > 0 ? 100 * sync / reads : 0))
	[ "$outside" = 0 ] && [ "$errs" = 0 ] && [ "$sync" -gt 0 ] || {
		echo "$out" | sed 's/^/# phase: /'; return 1; }
}

# Under the closed loop on the test PHC (poll 2^-1 s, accuracy 100 ns), the
# client's [earliest, latest] holds the true time at every reading: quiet,
# with 100 ns of reading jitter, and across a +0.5 ppm frequency step.
# Then the PHC fails every read for 22 s: the bound grows, the segment goes
# void; when reads work again the client sees synchronized again.
check_clockbound_containment() {
	tc_load name=tc_cb offset_ns=200000000 || { DETAIL="insmod failed"; return 1; }
	adjtimex -f 0 >/dev/null
	rm -rf /var/run/clockbound
	{
		printf '[observability]\nlog-level = "info"\nobservation-path = "/run/ntpd-rs/observe"\n\n'
		printf '[[source]]\nmode = "plugin"\npath = "%s"\nname = "phc"\npoll-interval = -1\naccuracy = 1e-7\n' "$PTP_SO"
		printf '[source.config]\nclock-name = "tc_cb"\n\n'
		printf '[synchronization]\nminimum-agreeing-sources = 1\n\n[ntpd-host]\nclockbound = true\n'
	} > $NTP_TOML
	echo 20000 > $TC/freq_ppb
	local t0 i r st synced= ok=0
	t0=$(now_ms)
	start_host
	for i in $(seq 240); do
		sleep 0.5
		r=$(cb-client now $CB_SEGMENT 2>/dev/null)
		case "$r" in *'"status":"synchronized"'*) synced=$(($(now_ms) - t0)); break ;; esac
	done
	DETAIL="first synchronized reading ${synced:-never} ms after start (bound $B_CB_SYNC_MS);"
	if [ -z "$synced" ] || [ "$synced" -gt $B_CB_SYNC_MS ]; then
		ok=1
	else
		# from the first synchronized reading on: the lock-in counts too
		cb_phase quiet || ok=1
		[ "$CB_SYNC_PCT" -ge $B_CB_SYNC_SHARE ] || { DETAIL="$DETAIL only $CB_SYNC_PCT% synchronized (want $B_CB_SYNC_SHARE);"; ok=1; }
		[ "$CB_MEDIAN" -le $B_CB_WIDTH_MEDIAN ] 2>/dev/null || { DETAIL="$DETAIL median width over $B_CB_WIDTH_MEDIAN ns;"; ok=1; }
		echo 100 > $TC/jitter_ns
		cb_phase jitter-100ns || ok=1
		echo 0 > $TC/jitter_ns
		echo 20500 > $TC/freq_ppb
		cb_phase freq-step-0.5ppm || ok=1
		status_now
		DETAIL="$DETAIL status: $(status_field clockbound | jq -r '"\(.status), bound \(.["bound-ns"]) ns = offset \(.["offset-ns"]) + sample \(.["sample-ns"]) + reference \(.["reference-ns"]) + drift \(.["drift-ns"]), max drift \(.["max-drift-ppb"]) ppb, \(.writes) writes"');"
		clockbound_outage || ok=1
	fi
	DETAIL="$DETAIL containment: $CB_IN/$CB_ALL"
	"$HOST" status -c $NTP_TOML | grep -A3 '^clockbound' | sed 's/^/# status: /'
	stop_host
	adjtimex -f 0 >/dev/null
	[ $ok = 0 ] || grep -v kalman /tmp/host.log | tail -n 15 | sed 's/^/# log: /'
	return $ok
}

# A disruption the plugin reports (the sim plugin's DISRUPTED error every
# 10th sample, as the PTP plugin reports a vmclock marker change) makes the
# segment say disrupted until the next sample; status counts it.
check_clockbound_disruption() {
	rm -rf /var/run/clockbound
	{
		printf '[observability]\nlog-level = "info"\nobservation-path = "/run/ntpd-rs/observe"\n\n'
		printf '[[source]]\nmode = "plugin"\npath = "%s"\nname = "sim"\npoll-interval = -1\n' "$SIM_SO"
		printf '[source.config]\nerror-every = 10\nerror-kind = 6\n\n'
		printf '[synchronization]\nminimum-agreeing-sources = 1\n\n[ntpd-host]\nclockbound = true\n'
	} > $NTP_TOML
	adjtimex -f 0 >/dev/null
	local i r synced= w nd ns after ok=0
	start_host
	for i in $(seq 120); do
		sleep 0.5
		r=$(cb-client now $CB_SEGMENT 2>/dev/null)
		case "$r" in *'"status":"synchronized"'*) synced=$i; break ;; esac
	done
	w=$(cb-client watch $CB_SEGMENT 16000 100)
	echo "$w" | sed 's/^/clockbound disruption: /'
	nd=$(echo "$w" | grep -c ' disrupted ')
	ns=$(echo "$w" | grep -c ' synchronized ')
	# synchronized again after a disrupted reading
	after=$(echo "$w" | awk '$2 == "disrupted" { d = 1 } d && $2 == "synchronized" { print "yes"; exit }')
	status_now
	DETAIL="synchronized after ${synced:-never} half-seconds; 16 s of readings: $nd disrupted, $ns synchronized, synchronized again after a disruption: ${after:-no}; status: $(src sim disruptions) disruptions, errors $(src sim errors)"
	stop_host
	adjtimex -f 0 >/dev/null
	[ -n "$synced" ] && [ "$nd" -ge 2 ] && [ "$ns" -ge 50 ] && [ "$after" = yes ] &&
		[ "$(src sim disruptions)" -ge 2 ] 2>/dev/null || ok=1
	[ $ok = 0 ] || grep -v kalman /tmp/host.log | tail -n 15 | sed 's/^/# log: /'
	return $ok
}

# the source stops (every PHC read fails for 22 s) and comes back
clockbound_outage() {
	local last t0 w first_half last_half grew void back ok=0
	status_now
	last=$(src phc samples)
	echo 22000 > $TC/fail_ms
	t0=$(now_ms)
	# 40 s of readings, 4 a second: `<ms> <status> <half width ns>`
	w=$(cb-client watch $CB_SEGMENT 40000 250)
	echo "$w" | sed 's/^/clockbound outage: /'
	first_half=$(echo "$w" | awk '$2 == "synchronized" || $2 == "free-running" { print $3; exit }')
	last_half=$(echo "$w" | awk '$2 == "unknown" { exit } $2 == "synchronized" || $2 == "free-running" { h = $3 } END { print h }')
	# a claimed reading never shrinks while nothing is written (until void)
	grew=$(echo "$w" | awk '$2 == "unknown" { exit } $2 == "synchronized" || $2 == "free-running" { if (p != "" && $3 < p) bad = 1; p = $3 } END { print bad ? "no" : "yes" }')
	void=$(echo "$w" | awk '$2 == "unknown" { print $1; exit }')
	back=$(echo "$w" | awk -v v="${void:-0}" '$1 > v && $2 == "synchronized" && v > 0 { print $1; exit }')
	DETAIL="$DETAIL outage: half width $first_half -> $last_half ns (never shrinking: $grew), unknown after ${void:-never} ms (bound $B_CB_VOID_MS), synchronized again at ${back:-never} ms (reads fail until 22000, bound +$B_CB_RECOVER_MS);"
	[ -n "$first_half" ] && [ "$last_half" -gt "$first_half" ] && [ "$grew" = yes ] || ok=1
	[ -n "$void" ] && [ "$void" -le $B_CB_VOID_MS ] || ok=1
	[ -n "$back" ] && [ "$back" -le $((22000 + B_CB_RECOVER_MS)) ] || ok=1
	return $ok
}

# ---- main ----
[ $# -gt 0 ] || set -- $CHECKS
note "suite: $# checks; kernel $(uname -r); clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
for c in "$@"; do
	run_check "$c"
done
echo "VM-SUITE-RESULT passed=$PASS failed=$FAIL"
[ "$FAIL" = 0 ]
