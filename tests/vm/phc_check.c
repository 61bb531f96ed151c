/* SPDX-License-Identifier: GPL-2.0 */
/*
 * phc_check: read a PHC the three kernel ways, independent of the plugin.
 * Test equipment for tests/vm: it checks the test module itself, so that a
 * failure of the plugin checks can be told apart from a broken test clock.
 *
 *   phc_check DEV METHOD [READINGS [COUNT [INTERVAL_MS]]]
 *   phc_check DEV adjfine PPB | adjtime NS | settime NS | setrel NS
 *                          (setrel: set the PHC to CLOCK_REALTIME + NS; settime
 *                          and setrel print window_ns, the CLOCK_REALTIME time
 *                          the clock_settime call took)
 *   phc_check clocks       prints realtime_ns=R monoraw_ns=M (busybox date
 *                          has no nanoseconds)
 *   phc_check sendsock PATH OFFSET_NS
 *                          sends one SOCK datagram (40 bytes, the ntpd-rs sock
 *                          source's format) with that offset to the unix
 *                          datagram socket PATH; prints "ok" or "err errno=E"
 *   phc_check runas UID GID PROG [ARGS...]
 *                          runs PROG as UID:GID with no supplementary groups
 *                          (busybox has no setpriv)
 *
 * METHOD: precise (PTP_SYS_OFFSET_PRECISE), extended (PTP_SYS_OFFSET_EXTENDED),
 * basic (PTP_SYS_OFFSET), gettime (clock_gettime on the fd's clock id).
 * The device stays open across all COUNT measurements. One line each:
 *   ok offset_ns=O delay_ns=D     O = PHC - CLOCK_REALTIME at the reading
 *                                 with the smallest delay, D its bracket
 *   err errno=E name              the ioctl failed
 * Exit status: 0 if any measurement succeeded, 1 otherwise, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/ptp_clock.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/timex.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FD_TO_CLOCKID(fd) ((clockid_t)((((unsigned int)~(fd)) << 3) | 3))

static int64_t pct_ns(const struct ptp_clock_time *t)
{
	return (int64_t)t->sec * 1000000000LL + t->nsec;
}

static int64_t ts_ns(const struct timespec *t)
{
	return (int64_t)t->tv_sec * 1000000000LL + t->tv_nsec;
}

/* returns 0 and sets *off, *delay, or returns errno */
static int measure(int fd, const char *method, int n, int64_t *off, int64_t *delay)
{
	int64_t best = INT64_MAX, best_off = 0;
	int i;

	if (!strcmp(method, "precise")) {
		struct ptp_sys_offset_precise p;

		memset(&p, 0, sizeof(p));
		if (ioctl(fd, PTP_SYS_OFFSET_PRECISE, &p))
			return errno;
		*off = pct_ns(&p.device) - pct_ns(&p.sys_realtime);
		*delay = 0;
		return 0;
	}
	if (!strcmp(method, "extended")) {
		struct ptp_sys_offset_extended e;

		memset(&e, 0, sizeof(e));
		e.n_samples = n;
		if (ioctl(fd, PTP_SYS_OFFSET_EXTENDED, &e))
			return errno;
		for (i = 0; i < (int)e.n_samples; i++) {
			int64_t a = pct_ns(&e.ts[i][0]), p = pct_ns(&e.ts[i][1]),
				b = pct_ns(&e.ts[i][2]);

			if (b - a >= 0 && b - a < best) {
				best = b - a;
				best_off = p - a - (b - a) / 2;
			}
		}
	} else if (!strcmp(method, "basic")) {
		struct ptp_sys_offset s;

		memset(&s, 0, sizeof(s));
		s.n_samples = n;
		if (ioctl(fd, PTP_SYS_OFFSET, &s))
			return errno;
		for (i = 0; i < (int)s.n_samples; i++) {
			int64_t a = pct_ns(&s.ts[2 * i]), p = pct_ns(&s.ts[2 * i + 1]),
				b = pct_ns(&s.ts[2 * i + 2]);

			if (b - a >= 0 && b - a < best) {
				best = b - a;
				best_off = p - a - (b - a) / 2;
			}
		}
	} else if (!strcmp(method, "gettime")) {
		for (i = 0; i < n; i++) {
			struct timespec a, p, b;

			clock_gettime(CLOCK_REALTIME, &a);
			if (clock_gettime(FD_TO_CLOCKID(fd), &p))
				return errno;
			clock_gettime(CLOCK_REALTIME, &b);
			if (ts_ns(&b) - ts_ns(&a) >= 0 && ts_ns(&b) - ts_ns(&a) < best) {
				best = ts_ns(&b) - ts_ns(&a);
				best_off = ts_ns(&p) - ts_ns(&a) - best / 2;
			}
		}
	} else {
		return -1;
	}
	if (best == INT64_MAX)
		return EAGAIN;
	*off = best_off;
	*delay = best;
	return 0;
}

/* clock_adjtime/clock_settime on the PHC */
static int control(int fd, const char *op, long long v)
{
	struct timex tx;
	struct timespec ts;
	long long window = -1;
	int r;

	memset(&tx, 0, sizeof(tx));
	if (!strcmp(op, "adjfine")) {
		tx.modes = ADJ_FREQUENCY;
		tx.freq = (long)(v * 65536 / 1000);	/* ppb to scaled ppm */
		r = clock_adjtime(FD_TO_CLOCKID(fd), &tx);
	} else if (!strcmp(op, "adjtime")) {
		tx.modes = ADJ_SETOFFSET | ADJ_NANO;
		tx.time.tv_sec = v / 1000000000LL;
		tx.time.tv_usec = v % 1000000000LL;
		if (tx.time.tv_usec < 0) {
			tx.time.tv_sec -= 1;
			tx.time.tv_usec += 1000000000LL;
		}
		r = clock_adjtime(FD_TO_CLOCKID(fd), &tx);
	} else {
		struct timespec a, b;

		clock_gettime(CLOCK_REALTIME, &a);
		if (!strcmp(op, "setrel"))
			v += ts_ns(&a);
		ts.tv_sec = v / 1000000000LL;
		ts.tv_nsec = v % 1000000000LL;
		r = clock_settime(FD_TO_CLOCKID(fd), &ts);
		clock_gettime(CLOCK_REALTIME, &b);
		window = ts_ns(&b) - ts_ns(&a);
	}
	if (r < 0) {
		printf("err errno=%d %s\n", errno, strerror(errno));
		return 1;
	}
	if (window >= 0)
		printf("ok %s %lld window_ns=%lld\n", op, v, window);
	else
		printf("ok %s %lld\n", op, v);
	return 0;
}

/* one SOCK datagram: tv_sec, tv_usec, offset (s), pulse, leap, pad, magic */
static int sendsock(const char *path, long long offset_ns)
{
	unsigned char buf[40];
	struct sockaddr_un sa;
	struct timespec now;
	int64_t sec, usec;
	double off = (double)offset_ns * 1e-9;
	int32_t zero = 0, magic = 0x534f434b;
	int fd;

	memset(buf, 0, sizeof(buf));
	clock_gettime(CLOCK_REALTIME, &now);
	sec = now.tv_sec;
	usec = now.tv_nsec / 1000;
	memcpy(buf, &sec, 8);
	memcpy(buf + 8, &usec, 8);
	memcpy(buf + 16, &off, 8);
	memcpy(buf + 24, &zero, 4);
	memcpy(buf + 28, &zero, 4);
	memcpy(buf + 36, &magic, 4);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "path too long\n");
		return 2;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (fd < 0 || sendto(fd, buf, sizeof(buf), 0, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		printf("err errno=%d %s\n", errno, strerror(errno));
		return 1;
	}
	printf("ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	int n = argc > 3 ? atoi(argv[3]) : 5;
	int count = argc > 4 ? atoi(argv[4]) : 1;
	int interval_ms = argc > 5 ? atoi(argv[5]) : 0;
	int fd, i, good = 0;

	if (argc == 2 && !strcmp(argv[1], "clocks")) {
		struct timespec r, m;

		clock_gettime(CLOCK_REALTIME, &r);
		clock_gettime(CLOCK_MONOTONIC_RAW, &m);
		printf("realtime_ns=%lld monoraw_ns=%lld\n", (long long)ts_ns(&r),
		       (long long)ts_ns(&m));
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "sendsock"))
		return sendsock(argv[2], strtoll(argv[3], NULL, 0));
	if (argc >= 5 && !strcmp(argv[1], "runas")) {
		uid_t uid = (uid_t)strtoul(argv[2], NULL, 0);
		gid_t gid = (gid_t)strtoul(argv[3], NULL, 0);

		if (setgroups(0, NULL) || setgid(gid) || setuid(uid)) {
			printf("err errno=%d %s (runas)\n", errno, strerror(errno));
			return 1;
		}
		execvp(argv[4], argv + 4);
		printf("err errno=%d %s (exec %s)\n", errno, strerror(errno), argv[4]);
		return 1;
	}
	if (argc == 4 && (!strcmp(argv[2], "adjfine") || !strcmp(argv[2], "adjtime") ||
			  !strcmp(argv[2], "settime") || !strcmp(argv[2], "setrel"))) {
		fd = open(argv[1], O_RDWR);
		if (fd < 0) {
			printf("err errno=%d %s (open)\n", errno, strerror(errno));
			return 1;
		}
		return control(fd, argv[2], strtoll(argv[3], NULL, 0));
	}
	if (argc < 3 || n < 1 || n > PTP_MAX_SAMPLES || count < 1) {
		fprintf(stderr, "usage: phc_check DEV precise|extended|basic|gettime [READINGS [COUNT [INTERVAL_MS]]]\n");
		return 2;
	}
	fd = open(argv[1], O_RDWR);
	if (fd < 0) {
		printf("err errno=%d %s (open)\n", errno, strerror(errno));
		return 1;
	}
	for (i = 0; i < count; i++) {
		int64_t off, delay;
		int e = measure(fd, argv[2], n, &off, &delay);

		if (e < 0) {
			fprintf(stderr, "unknown method %s\n", argv[2]);
			return 2;
		}
		if (e)
			printf("err errno=%d %s\n", e, strerror(e));
		else {
			printf("ok offset_ns=%lld delay_ns=%lld\n", (long long)off, (long long)delay);
			good++;
		}
		fflush(stdout);
		if (interval_ms && i + 1 < count)
			usleep(interval_ms * 1000);
	}
	close(fd);
	return good ? 0 : 1;
}
