# Shared helpers of the guest scripts (busybox sh), sourced as /lib.sh by
# suite.sh, bench.sh and demo.sh: the test clock, ground truth, numbers,
# ntpd-host configs and ntpd-host status.

TC=/sys/module/ptp_testclock/parameters
KO=/lib/modules/ptp_testclock.ko
HOST=${HOST:-/opt/ntpd-host/bin/ntpd-host}
PTP_SO=/opt/ntpd-host/lib/libntpd_ptp.so
SIM_SO=/opt/ntpd-host/lib/libntpd_sim.so
RUNTIME=/run/ntpd-host
WORKER_UID=990
READER_UID=991
GROUP_GID=990
NTP_TOML=/tmp/ntp.toml

# the observation socket of every config here lives in /run/ntpd-rs
mkdir -p /run/ntpd-rs

note() { echo "# $*"; }

# ---- the test clock ----

tc_unload() {
	grep -q '^ptp_testclock ' /proc/modules && rmmod ptp_testclock
	return 0
}

# tc_load [param=value ...]: (re)load the test clock; sets DEV once mdev
# has given it to the workers' group (as udev does on a real system)
tc_load() {
	local i
	tc_unload
	insmod "$KO" "$@" || return 1
	DEV=$(dev_by_name "$(cat $TC/name)")
	[ -n "$DEV" ] || return 1
	for i in $(seq 20); do
		[ "$(stat -c %G "$DEV" 2>/dev/null)" = ntpd-host ] && return 0
		sleep 0.05
	done
	return 0
}

# /dev/ptpN whose clock_name is $1
dev_by_name() {
	for p in /sys/class/ptp/ptp*; do
		[ "$(cat "$p/clock_name" 2>/dev/null)" = "$1" ] && echo "/dev/${p##*/}" && return 0
	done
	return 1
}

# the igb NIC's PHC, /dev/ptpN
igb_dev() {
	local p
	for p in /sys/bus/pci/drivers/igb/*/ptp/ptp*; do [ -d "$p" ] && echo "/dev/${p##*/}"; done
}

# ground truth: PHC - CLOCK_REALTIME now, ns
truth() { cat $TC/true_offset_ns; }

now_ms() { local c; c=$(phc_check clocks); c=${c#*monoraw_ns=}; echo $((c / 1000000)); }

# ---- numbers ----

# le A B: A <= B (numbers, may be floats)
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 <= b + 0) }'; }

# abs X
abs() { awk -v x="$1" 'BEGIN { print x < 0 ? -x : x }'; }

# stats TRUTH < phc_check output: n errs mean sd maxabs maxdelay (err = offset - TRUTH)
# (this busybox awk has no sqrt: Newton's method)
stats() {
	awk -v t="$1" '
	function sq(x, r, i) { if (x <= 0) return 0; r = x; for (i = 0; i < 100; i++) r = (r + x / r) / 2; return r }
	/^ok offset_ns=/ { split($2, a, "="); split($3, b, "="); e = a[2] - t
		n++; s += e; ss += e * e; if (e < 0) e = -e; if (e > m) m = e
		if (b[2] > md) md = b[2]; next }
	/^err / { errs++ }
	END { mean = n ? s / n : 0; sd = n > 1 ? sq((ss - n * mean * mean) / (n - 1)) : 0
		printf "%d %d %.0f %.0f %d %d\n", n, errs, mean, sd, m, md }'
}

# rms SUM_OF_SQUARES N
rms() {
	awk -v s="$1" -v n="$2" 'function sq(x, r, i) { if (x <= 0) return 0; r = x; for (i = 0; i < 100; i++) r = (r + x / r) / 2; return r } BEGIN { printf "%.0f", n > 0 ? sq(s / n) : 0 }'
}

# ---- ntpd-host configs ----

# plugin_source NAME POLL [KEY=VALUE ...]: one plugin source on the PTP
# plugin ($SO_PATH if set); KEY=VALUE pairs go to [source.config] (strings
# quoted, numbers not)
# (more keys of the [[source]] table may come in $SOURCE_EXTRA)
plugin_source() {
	local name=$1 poll=$2 kv k v
	shift 2
	printf '[[source]]\nmode = "plugin"\npath = "%s"\nname = "%s"\npoll-interval = %s\n%s[source.config]\n' \
		"${SO_PATH:-$PTP_SO}" "$name" "$poll" "${SOURCE_EXTRA:+$SOURCE_EXTRA
}"
	for kv in "$@"; do
		k=${kv%%=*}; v=${kv#*=}
		case $v in
		-[0-9]* | [0-9]*) printf '%s = %s\n' "$k" "$v" ;;
		*) printf '%s = "%s"\n' "$k" "$v" ;;
		esac
	done
	echo
}

# ntp_config [SOURCE_TEXT ...]: a whole config with these sources, the
# observation socket in /run/ntpd-rs and minimum-agreeing-sources = 1
# (settings of the synchronization section may follow in $SYNC_EXTRA)
ntp_config() {
	local source
	printf '[observability]\nlog-level = "info"\nobservation-path = "/run/ntpd-rs/observe"\n\n'
	# (command substitution dropped each source's trailing newlines)
	for source in "$@"; do printf '%s\n\n' "$source"; done
	printf '[synchronization]\nminimum-agreeing-sources = 1\n%s' "${SYNC_EXTRA:+$SYNC_EXTRA
}"
}

# wait_delivered NAME N [TRIES]: polls status (0.5 s apart) until source NAME
# delivered at least N samples; false if it did not
wait_delivered() {
	local i
	for i in $(seq "${3:-60}"); do
		sleep 0.5
		status_now
		[ "$(src "$1" delivered)" -ge "$2" ] 2>/dev/null && return 0
	done
	return 1
}

# host_processes: how many ntpd-host processes (host, workers, daemon) run
host_processes() {
	ps -o args | grep -c '^[n]tpd-host\|^[n]tp-daemon\|^/opt/ntpd-host/bin/[n]tpd-host'
}

# start_host [CONFIG]: ntpd-host run on CONFIG (default $NTP_TOML), log in
# /tmp/host.log; sets HOSTPID
start_host() {
	mkdir -p /run/ntpd-rs
	"$HOST" run -c "${1:-$NTP_TOML}" > /tmp/host.log 2>&1 &
	HOSTPID=$!
}

stop_host() {
	kill "$HOSTPID" 2>/dev/null
	wait "$HOSTPID" 2>/dev/null
}

# ---- ntpd-host status (JSON, read with jq once per snapshot) ----

# STATUS: the last `ntpd-host status --json` snapshot, flattened by one jq
# call into lines "NAME<TAB>FIELD<TAB>JSON" per plugin source (the daemon's
# view of it as FIELD "daemon.KEY") and "-<TAB>KEY<TAB>JSON" for the top
# level; the field helpers below read it with busybox applets (a jq process
# per field is slow under emulation).
STATUS=
# status_now [CONFIG]: takes a snapshot of `ntpd-host status --json`
status_now() {
	STATUS=$("$HOST" status -c "${1:-$NTP_TOML}" --json 2>/dev/null | jq -r '
		(to_entries[] | select(.key != "sources" and .key != "daemon") | "-\t\(.key)\t\(.value | tojson)"),
		(.sources[]? | . as $s | (
			(to_entries[] | select(.key != "daemon") | "\($s.name)\t\(.key)\t\(.value | tojson)"),
			((.daemon // {}) | to_entries[] | "\($s.name)\tdaemon.\(.key)\t\(.value | tojson)")))' 2>/dev/null)
}

# src NAME FIELD: a field of plugin source NAME (JSON text: strings keep
# their quotes, objects are compact, a missing field is empty)
src() { echo "$STATUS" | awk -F '\t' -v n="$1" -v f="$2" '$1 == n && $2 == f { print $3; exit }'; }

# src_raw NAME FIELD: the same, a string without its quotes
src_raw() { src "$1" "$2" | sed 's/^"\(.*\)"$/\1/'; }

# dsrc NAME FIELD: a field of the daemon's view of plugin source NAME (as src)
dsrc() { src "$1" "daemon.$2"; }

# status_field KEY: a top-level field of the snapshot (JSON text)
status_field() { src - "$1"; }
