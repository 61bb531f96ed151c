#!/bin/sh
# The live demo (busybox sh), run by /init inside the qemu guest when
# tests/vm/run is called with NTPD_HOST_VM_SUITE=demo (examples/vm-demo/run
# does). A test PHC starts 200 ms ahead of the guest's clock and runs 20 ppm
# fast; `ntpd-host run` (the real ntpd-rs daemon with the PTP plugin as its
# only source) steers the guest clock onto it. Once a second it prints the
# true offset (from the test clock module, not from ntpd-host) next to what
# `ntpd-host status` reports. Lines starting with "# " are shown on the host.

. /lib.sh
. /etc/demo.conf

say() { echo "# $*"; }
fmt() { # ns -> human
	awk -v x="$1" 'BEGIN { a = x < 0 ? -x : x
		if (a >= 1000000) printf "%+.3f ms", x / 1e6
		else if (a >= 1000) printf "%+.3f us", x / 1e3
		else printf "%+d ns", x }'
}

clockctl reset "$(clockctl base)" > /dev/null
insmod /lib/modules/ptp_testclock.ko name=demo_phc offset_ns=200000000 freq_ppb=20000 || {
	say "insmod failed"; echo "VM-SUITE-RESULT passed=0 failed=1"; exit 1; }
for p in /sys/class/ptp/ptp*; do
	[ "$(cat "$p/clock_name")" = demo_phc ] && DEV=/dev/${p##*/}
done
mkdir -p /etc/ntpd-rs
SYNC_EXTRA= ntp_config "$(plugin_source phc 0 clock-name=demo_phc)" |
	sed 's/^log-level = "info"/log-level = "warn"/' > /etc/ntpd-rs/ntp.toml
say ""
say "=== ntpd-host demo: a PTP hardware clock steering a Linux clock, live ==="
say "guest: Linux $(uname -r) under qemu; PHC $DEV \"demo_phc\" (test module):"
say "  200 ms ahead of the guest clock, and 20 ppm fast"
say "config /etc/ntpd-rs/ntp.toml:"
grep -v '^\[observability\]\|^log-level\|^observation-path' /etc/ntpd-rs/ntp.toml | grep . | sed 's/^/#     /'
say "starting: ntpd-host run -c /etc/ntpd-rs/ntp.toml"
say ""
"$HOST" run -c /etc/ntpd-rs/ntp.toml > /tmp/demo.log 2>&1 &
HOSTPID=$!

t0=$(clockctl now)
i=0 first= ss=0 n=0
say "  time | PHC - guest clock | ntpd-host status of the plugin source"
say "       | (truth, from the   | (state, read method, last offset it measured, samples)"
say "       |  test clock)       |"
while [ "$i" -lt "$DEMO_SECS" ]; do
	i=$((i + 1))
	t=$(clockctl now)
	sleep "$(awk -v d=$((i * 1000 - (t - t0))) 'BEGIN { if (d < 0) d = 0; printf "%.3f", d / 1000 }')"
	off=$(cat $TC/true_offset_ns)
	st=$("$HOST" status -c /etc/ntpd-rs/ntp.toml 2>/dev/null)
	state=$(echo "$st" | sed -n 's/^source #[0-9]* phc: //p')
	method=$(echo "$st" | sed -n 's/^  reference .* via \([a-z-]*\) method.*/\1/p')
	last=$(echo "$st" | sed -n 's/^  last       offset \([-+0-9]*\) ns,.*/\1/p')
	[ -n "$last" ] && last="last offset $(fmt "$last")"
	samples=$(echo "$st" | sed -n 's/^  counts     \([0-9]*\) samples.*/\1/p')
	printf '#  %3d s | %14s | %s, %s, %s, %s samples\n' "$i" "$(fmt "$off")" \
		"${state:-starting}" "${method:--}" "${last:--}" "${samples:-0}"
	a=${off#-}
	[ -z "$first" ] && [ "$a" -lt 1000 ] && first=$i
	[ "$a" -ge 1000 ] && first=
	if [ "$i" -gt $((DEMO_SECS - 20)) ]; then
		n=$((n + 1)); ss=$(awk -v s="$ss" -v x="$off" 'BEGIN { printf "%.0f", s + x * x }')
	fi
	if [ "$i" = 20 ]; then
		say ""
		say "--- ntpd-host status (t = 20 s) ---"
		echo "$st" | sed 's/^/#   /'
		say ""
	fi
done
say ""
say "--- ntpd-host status (t = $DEMO_SECS s) ---"
"$HOST" status -c /etc/ntpd-rs/ntp.toml 2>&1 | sed 's/^/#   /'
kill "$HOSTPID"; wait "$HOSTPID" 2>/dev/null
# (this busybox awk has no sqrt: Newton's method)
rms=$(awk -v s="$ss" -v n="$n" 'BEGIN { x = n > 0 ? s / n : 0; r = x; if (r > 0) for (k = 0; k < 100; k++) r = (r + x / r) / 2; printf "%.0f", r }')
say ""
if [ -n "$first" ]; then
	say "result: the guest clock is within 1 us of the PHC since t = $first s; RMS of the true offset over the last $n s: $rms ns"
	echo "VM-SUITE-RESULT passed=1 failed=0"
else
	say "result: not within 1 us at the end (RMS over the last $n s: $rms ns); daemon log:"
	tail -n 20 /tmp/demo.log | sed 's/^/#   /'
	echo "VM-SUITE-RESULT passed=0 failed=1"
fi
