/* SPDX-License-Identifier: GPL-2.0 */
/*
 * read_dump: every reading of PTP_SYS_OFFSET_EXTENDED batches, raw. Test
 * equipment for tests/vm (NTPD_HOST_VM_SUITE=reads): how a PHC's offsets
 * scatter within one batch, by bracket width.
 *
 *   read_dump DEV TAG READINGS COUNT INTERVAL_MS
 *
 * One line per reading: "R TAG BATCH DELAY_NS OFFSET2_NS", where DELAY_NS =
 * after - before and OFFSET2_NS = 2 * phc - before - after (twice the
 * offset from the bracket's midpoint, so that odd delays lose nothing).
 * A failed request prints "R TAG BATCH err ERRNO". Exit status 0 if any
 * request succeeded, 1 otherwise, 2 on bad usage.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/ptp_clock.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int64_t stamp_ns(const struct ptp_clock_time *t)
{
	return (int64_t)t->sec * 1000000000LL + t->nsec;
}

int main(int argc, char **argv)
{
	int fd, n, count, interval_ms, batch, i, any = 0;

	if (argc != 6) {
		fprintf(stderr, "usage: read_dump DEV TAG READINGS COUNT INTERVAL_MS\n");
		return 2;
	}
	n = atoi(argv[3]);
	count = atoi(argv[4]);
	interval_ms = atoi(argv[5]);
	if (n < 1 || n > PTP_MAX_SAMPLES || count < 1 || interval_ms < 0) {
		fprintf(stderr, "read_dump: READINGS 1-%d, COUNT >= 1, INTERVAL_MS >= 0\n",
			PTP_MAX_SAMPLES);
		return 2;
	}
	fd = open(argv[1], O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "read_dump: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	for (batch = 0; batch < count; batch++) {
		struct ptp_sys_offset_extended e;

		memset(&e, 0, sizeof(e));
		e.n_samples = n;
		if (ioctl(fd, PTP_SYS_OFFSET_EXTENDED, &e)) {
			printf("R %s %d err %d\n", argv[2], batch, errno);
		} else {
			any = 1;
			for (i = 0; i < (int)e.n_samples; i++) {
				int64_t before = stamp_ns(&e.ts[i][0]), phc = stamp_ns(&e.ts[i][1]),
					after = stamp_ns(&e.ts[i][2]);

				printf("R %s %d %lld %lld\n", argv[2], batch, (long long)(after - before),
				       (long long)(2 * phc - before - after));
			}
		}
		if (interval_ms)
			usleep((useconds_t)interval_ms * 1000);
	}
	close(fd);
	return any ? 0 : 1;
}
