/* SPDX-License-Identifier: GPL-2.0 */
/*
 * clockctl: put the guest's system clock back to a known state between
 * closed-loop runs (test equipment for tests/vm/bench and examples/vm-demo).
 *
 *   clockctl base          prints CLOCK_REALTIME - CLOCK_MONOTONIC_RAW, ns
 *   clockctl reset BASE    steps CLOCK_REALTIME to CLOCK_MONOTONIC_RAW + BASE
 *                          and clears the kernel's NTP state: frequency 0,
 *                          no pending offset, no PLL/FLL/PPS mode, STA_UNSYNC,
 *                          default tick, time constant 2
 *   clockctl show          prints the kernel's NTP state (adjtimex)
 *   clockctl now           prints CLOCK_MONOTONIC_RAW in ms (elapsed times in sh)
 *
 * A daemon that steered the clock leaves its frequency in the kernel (and
 * chronyd or ntpd-rs may leave a PLL mode or a pending offset); every run
 * must start from the same clock, so bench.sh resets it before each one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>

static int64_t now(clockid_t id)
{
	struct timespec t;

	clock_gettime(id, &t);
	return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int show(void)
{
	struct timex tx;
	int state;

	memset(&tx, 0, sizeof(tx));
	state = adjtimex(&tx);
	if (state < 0) {
		perror("adjtimex");
		return 1;
	}
	printf("state=%d freq_ppb=%.0f offset=%ld status=0x%x tick=%ld constant=%ld maxerror=%ld esterror=%ld\n",
	       state, tx.freq * 1000.0 / 65536.0, tx.offset, tx.status, tx.tick,
	       tx.constant, tx.maxerror, tx.esterror);
	return 0;
}

static int reset(int64_t base)
{
	struct timex tx;
	struct timespec ts;
	int64_t t;
	long hz = sysconf(_SC_CLK_TCK);

	/* 1. drop a pending phase offset: ADJ_OFFSET is taken only in PLL mode */
	memset(&tx, 0, sizeof(tx));
	tx.modes = ADJ_STATUS | ADJ_OFFSET;
	tx.status = STA_PLL;
	tx.offset = 0;
	if (adjtimex(&tx) < 0) {
		perror("adjtimex (offset)");
		return 1;
	}
	/* 2. frequency, tick, mode and errors back to the boot state */
	memset(&tx, 0, sizeof(tx));
	tx.modes = ADJ_STATUS | ADJ_FREQUENCY | ADJ_TICK | ADJ_TIMECONST |
		   ADJ_MAXERROR | ADJ_ESTERROR;
	tx.status = STA_UNSYNC;
	tx.freq = 0;
	tx.tick = 1000000 / (hz > 0 ? hz : 100);
	tx.constant = 2;
	tx.maxerror = 16000000;
	tx.esterror = 16000000;
	if (adjtimex(&tx) < 0) {
		perror("adjtimex (reset)");
		return 1;
	}
	/* 3. the clock itself (settime also clears the kernel's NTP offset) */
	t = now(CLOCK_MONOTONIC_RAW) + base;
	ts.tv_sec = t / 1000000000LL;
	ts.tv_nsec = t % 1000000000LL;
	if (clock_settime(CLOCK_REALTIME, &ts)) {
		perror("clock_settime");
		return 1;
	}
	return show();
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "base")) {
		int64_t a = now(CLOCK_MONOTONIC_RAW), r = now(CLOCK_REALTIME),
			b = now(CLOCK_MONOTONIC_RAW);

		printf("%lld\n", (long long)(r - a - (b - a) / 2));
		return 0;
	}
	if (argc == 3 && !strcmp(argv[1], "reset"))
		return reset(strtoll(argv[2], NULL, 10));
	if (argc == 2 && !strcmp(argv[1], "show"))
		return show();
	if (argc == 2 && !strcmp(argv[1], "now")) {
		printf("%lld\n", (long long)(now(CLOCK_MONOTONIC_RAW) / 1000000));
		return 0;
	}
	fprintf(stderr, "usage: clockctl base | reset BASE_NS | show | now\n");
	return 2;
}
