#!/bin/sh
# The raw-reads dump (busybox sh), run by /init inside the qemu guest when
# tests/vm/run is called with NTPD_HOST_VM_SUITE=reads (tests/vm/reads does):
# the test clock without a cross-timestamp, loaded once per jitter_ns of
# READS_JITTERS, read by read_dump in batches of 25 (the PTP plugin's
# default), 4 a second; nothing steers any clock.
. /lib.sh
. /etc/reads.conf
rc=0
for j in $READS_JITTERS; do
	if tc_load precise=0 jitter_ns="$j"; then
		read_dump "$DEV" "j$j" 25 "$READS_BATCHES" 250 || rc=1
	else
		note "insmod jitter_ns=$j failed"
		rc=1
	fi
done
tc_unload
if [ $rc = 0 ]; then echo "VM-SUITE-RESULT passed=1 failed=0"; else echo "VM-SUITE-RESULT passed=0 failed=1"; fi
