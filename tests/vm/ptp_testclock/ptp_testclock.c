// SPDX-License-Identifier: GPL-2.0
/*
 * ptp_testclock: a PTP hardware clock for tests (test equipment only).
 *
 * The clock's time is the guest's CLOCK_MONOTONIC_RAW (which no time daemon
 * can steer) plus an offset that drifts at a settable rate:
 *
 *   phc(raw) = base_phc + (raw - base_raw) * (1 + rate)
 *   rate     = freq_ppb (simulated oscillator error) + adjfine state
 *
 * so the truth is known while a daemon steers CLOCK_REALTIME. The oscillator
 * error (freq_ppb) is kept apart from the adjfine state: a tool that writes a
 * PHC's frequency back (phc2sys does at start) cannot wipe it.
 *
 * Parameters (/sys/module/ptp_testclock/parameters/):
 *   precise       (load time) provide .getcrosststamp (PTP_SYS_OFFSET_PRECISE)
 *   extended      (load time) provide .gettimex64 (PTP_SYS_OFFSET_EXTENDED)
 *                 .gettime64 is always there (PTP_SYS_OFFSET, clock_gettime)
 *   name          (load time) clock_name shown in /sys/class/ptp/ptpN/
 *   name2         (load time) if set, a second PHC with this clock_name: the
 *                 same time, state and callbacks as the first (one module
 *                 instance can give a daemon two test clocks)
 *   offset_ns     write: step the PHC so that PHC - CLOCK_REALTIME = value
 *                 (a load-time value sets the start); read: last value written
 *   freq_ppb      simulated oscillator error, ppb (PHC runs fast if > 0)
 *   true_offset_ns  read only: PHC - CLOCK_REALTIME now, both from one
 *                 ktime_get_snapshot(); the ground truth for the checks
 *   adj_ppb       read only: the adjfine state, ppb (rounded)
 *   jitter_ns     each PHC reading gets uniform noise in [-jitter, +jitter]
 *   delay_ns      each PHC read takes this long, split evenly before and
 *                 after the moment the clock is sampled
 *   fail_errno    errno the injected failures return (5 EIO, 16 EBUSY)
 *   fail_reads    the next N read calls fail (counts down)
 *   fail_ms       write: every read fails for the next N ms
 *   reads, failed_reads  read only: read calls seen / failed by injection
 *
 * A "read call" is one driver callback: PTP_SYS_OFFSET with n samples makes
 * n calls, PTP_SYS_OFFSET_EXTENDED n calls, PTP_SYS_OFFSET_PRECISE one.
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/ptp_clock_kernel.h>
#include <linux/timekeeping.h>
#include <linux/spinlock.h>
#include <linux/delay.h>
#include <linux/jiffies.h>
#include <linux/math64.h>
#include <linux/atomic.h>

#define FS_PER_UNIT 1000000000000000ULL	/* rate unit: 1e-15 */

static bool precise = true;
module_param(precise, bool, 0444);
MODULE_PARM_DESC(precise, "provide getcrosststamp (PRECISE reads)");

static bool extended = true;
module_param(extended, bool, 0444);
MODULE_PARM_DESC(extended, "provide gettimex64 (EXTENDED reads)");

static char *name = "ptp_testclock";
module_param(name, charp, 0444);
MODULE_PARM_DESC(name, "clock name");

static char *name2 = "";
module_param(name2, charp, 0444);
MODULE_PARM_DESC(name2, "if set: register a second clock with this name (same time)");

static uint jitter_ns;
module_param(jitter_ns, uint, 0644);
MODULE_PARM_DESC(jitter_ns, "uniform jitter added to each reading, ns");

static uint delay_ns;
module_param(delay_ns, uint, 0644);
MODULE_PARM_DESC(delay_ns, "time each read takes, ns");

static int fail_errno = 5;
module_param(fail_errno, int, 0644);
MODULE_PARM_DESC(fail_errno, "errno of injected failures");

static atomic_t fail_reads = ATOMIC_INIT(0);
static atomic_t reads = ATOMIC_INIT(0);
static atomic_t failed_reads = ATOMIC_INIT(0);
static unsigned long fail_until;	/* jiffies */
static bool fail_until_set;

static DEFINE_SPINLOCK(tc_lock);
static bool tc_ready;
static s64 base_raw;		/* ns, CLOCK_MONOTONIC_RAW */
static s64 base_phc;		/* ns, PHC time at base_raw */
static s64 osc_fs;		/* oscillator error, 1e-15 */
static s64 adj_fs;		/* adjfine state, 1e-15 */
static long offset_ns;		/* last value written to offset_ns */
static long freq_ppb;

static struct ptp_clock *tc_clock, *tc_clock2;
static struct ptp_clock_info tc_info, tc_info2;

/* (a * b) / c for signed a, b and positive c, without overflow */
static s64 mul_div_s64(s64 a, s64 b, u64 c)
{
	bool neg = (a < 0) != (b < 0);
	u64 r = mul_u64_u64_div_u64(a < 0 ? -(u64)a : a, b < 0 ? -(u64)b : b, c);

	return neg ? -(s64)r : (s64)r;
}

/* PHC time at raw time @raw; tc_lock held */
static s64 phc_at(s64 raw)
{
	s64 dt = raw - base_raw;

	return base_phc + dt + mul_div_s64(dt, osc_fs + adj_fs, FS_PER_UNIT);
}

/* make now the new base, so a rate change only acts from now on */
static void rebase(s64 raw)
{
	base_phc = phc_at(raw);
	base_raw = raw;
}

static void set_offset_locked(long off)
{
	struct system_time_snapshot snap;

	ktime_get_snapshot(&snap);
	base_raw = ktime_to_ns(snap.raw);
	base_phc = ktime_to_ns(snap.real) + off;
}

static int fail_check(void)
{
	int n;

	atomic_inc(&reads);
	if (READ_ONCE(fail_until_set) && time_before(jiffies, READ_ONCE(fail_until)))
		goto fail;
	n = atomic_read(&fail_reads);
	while (n > 0) {
		if (atomic_try_cmpxchg(&fail_reads, &n, n - 1))
			goto fail;
	}
	return 0;
fail:
	atomic_inc(&failed_reads);
	return -abs(fail_errno ? fail_errno : EIO);
}

/*
 * Uniform noise in [-jitter_ns, +jitter_ns]; tc_lock held. A xorshift64*
 * generator, a few instructions: the kernel's random source takes long
 * under emulation, and drawn inside a reader's bracket that time moves the
 * bracket's midpoint away from the clock's sample (a bias, not noise).
 */
static u64 jitter_state = 0x9e3779b97f4a7c15ULL;

static s64 jitter(void)
{
	u32 j = READ_ONCE(jitter_ns);
	u64 x;

	if (!j)
		return 0;
	x = jitter_state;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	jitter_state = x;
	return (s64)((x * 0x2545f4914f6cdd1dULL) >> 32) % (2 * (s64)j + 1) - j;
}

static void half_delay(void)
{
	u32 d = READ_ONCE(delay_ns) / 2;

	if (d)
		ndelay(d);
}

/* PHC time now, with its noise */
static s64 read_phc(void)
{
	unsigned long flags;
	s64 t;

	spin_lock_irqsave(&tc_lock, flags);
	t = phc_at(ktime_get_raw_ns()) + jitter();
	spin_unlock_irqrestore(&tc_lock, flags);
	return t;
}

static int tc_gettime64(struct ptp_clock_info *info, struct timespec64 *ts)
{
	int err = fail_check();

	if (err)
		return err;
	half_delay();
	*ts = ns_to_timespec64(read_phc());
	half_delay();
	return 0;
}

static int tc_gettimex64(struct ptp_clock_info *info, struct timespec64 *ts,
			 struct ptp_system_timestamp *sts)
{
	int err = fail_check();

	if (err)
		return err;
	ptp_read_system_prets(sts);
	half_delay();
	*ts = ns_to_timespec64(read_phc());
	half_delay();
	ptp_read_system_postts(sts);
	return 0;
}

static int tc_getcrosststamp(struct ptp_clock_info *info,
			     struct system_device_crosststamp *xts)
{
	struct system_time_snapshot snap;
	unsigned long flags;
	s64 t;
	int err = fail_check();

	if (err)
		return err;
	half_delay();
	ktime_get_snapshot(&snap);
	spin_lock_irqsave(&tc_lock, flags);
	t = phc_at(ktime_to_ns(snap.raw)) + jitter();
	spin_unlock_irqrestore(&tc_lock, flags);
	half_delay();
	xts->device = ns_to_ktime(t);
	xts->sys_realtime = snap.real;
	xts->sys_monoraw = snap.raw;
	return 0;
}

static int tc_settime64(struct ptp_clock_info *info, const struct timespec64 *ts)
{
	unsigned long flags;

	spin_lock_irqsave(&tc_lock, flags);
	base_raw = ktime_get_raw_ns();
	base_phc = timespec64_to_ns(ts);
	spin_unlock_irqrestore(&tc_lock, flags);
	return 0;
}

static int tc_adjtime(struct ptp_clock_info *info, s64 delta)
{
	unsigned long flags;

	spin_lock_irqsave(&tc_lock, flags);
	base_phc += delta;
	spin_unlock_irqrestore(&tc_lock, flags);
	return 0;
}

static int tc_adjfine(struct ptp_clock_info *info, long scaled_ppm)
{
	unsigned long flags;

	spin_lock_irqsave(&tc_lock, flags);
	rebase(ktime_get_raw_ns());
	/* scaled_ppm is ppm with a 16-bit fraction: 1e-6/65536 = 1e9/65536 fs */
	adj_fs = div_s64((s64)scaled_ppm * 1000000000LL, 65536);
	spin_unlock_irqrestore(&tc_lock, flags);
	return 0;
}

/* ---- parameters with behaviour ---- */

static int offset_set(const char *val, const struct kernel_param *kp)
{
	unsigned long flags;
	long v;
	int err = kstrtol(val, 0, &v);

	if (err)
		return err;
	spin_lock_irqsave(&tc_lock, flags);
	offset_ns = v;
	if (tc_ready)
		set_offset_locked(v);
	spin_unlock_irqrestore(&tc_lock, flags);
	return 0;
}

static int offset_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", READ_ONCE(offset_ns));
}

static const struct kernel_param_ops offset_ops = {
	.set = offset_set,
	.get = offset_get,
};
module_param_cb(offset_ns, &offset_ops, NULL, 0644);
MODULE_PARM_DESC(offset_ns, "write: step so that PHC - CLOCK_REALTIME = value, ns");

static int freq_set(const char *val, const struct kernel_param *kp)
{
	unsigned long flags;
	long v;
	int err = kstrtol(val, 0, &v);

	if (err)
		return err;
	if (v > 100000000 || v < -100000000)
		return -ERANGE;
	spin_lock_irqsave(&tc_lock, flags);
	if (tc_ready)
		rebase(ktime_get_raw_ns());
	freq_ppb = v;
	osc_fs = (s64)v * 1000000;
	spin_unlock_irqrestore(&tc_lock, flags);
	return 0;
}

static int freq_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", READ_ONCE(freq_ppb));
}

static const struct kernel_param_ops freq_ops = {
	.set = freq_set,
	.get = freq_get,
};
module_param_cb(freq_ppb, &freq_ops, NULL, 0644);
MODULE_PARM_DESC(freq_ppb, "simulated oscillator error, ppb");

static int true_offset_get(char *buf, const struct kernel_param *kp)
{
	struct system_time_snapshot snap;
	unsigned long flags;
	s64 t;

	ktime_get_snapshot(&snap);
	spin_lock_irqsave(&tc_lock, flags);
	t = phc_at(ktime_to_ns(snap.raw));
	spin_unlock_irqrestore(&tc_lock, flags);
	return sysfs_emit(buf, "%lld\n", t - ktime_to_ns(snap.real));
}

static const struct kernel_param_ops true_offset_ops = {
	.get = true_offset_get,
};
module_param_cb(true_offset_ns, &true_offset_ops, NULL, 0444);
MODULE_PARM_DESC(true_offset_ns, "PHC - CLOCK_REALTIME now, ns (ground truth)");

static int adj_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%lld\n", div_s64(READ_ONCE(adj_fs), 1000000));
}

static const struct kernel_param_ops adj_ops = {
	.get = adj_get,
};
module_param_cb(adj_ppb, &adj_ops, NULL, 0444);
MODULE_PARM_DESC(adj_ppb, "adjfine state, ppb");

static int fail_reads_set(const char *val, const struct kernel_param *kp)
{
	int v, err = kstrtoint(val, 0, &v);

	if (err)
		return err;
	atomic_set(&fail_reads, v < 0 ? 0 : v);
	return 0;
}

static int atomic_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", atomic_read((atomic_t *)kp->arg));
}

static const struct kernel_param_ops fail_reads_ops = {
	.set = fail_reads_set,
	.get = atomic_get,
};
module_param_cb(fail_reads, &fail_reads_ops, &fail_reads, 0644);
MODULE_PARM_DESC(fail_reads, "the next N read calls fail");

static const struct kernel_param_ops counter_ops = {
	.get = atomic_get,
};
module_param_cb(reads, &counter_ops, &reads, 0444);
MODULE_PARM_DESC(reads, "read calls seen");
module_param_cb(failed_reads, &counter_ops, &failed_reads, 0444);
MODULE_PARM_DESC(failed_reads, "read calls failed by injection");

static int fail_ms_set(const char *val, const struct kernel_param *kp)
{
	unsigned int v;
	int err = kstrtouint(val, 0, &v);

	if (err)
		return err;
	WRITE_ONCE(fail_until, jiffies + msecs_to_jiffies(v));
	WRITE_ONCE(fail_until_set, v > 0);
	return 0;
}

static int fail_ms_get(char *buf, const struct kernel_param *kp)
{
	long left = 0;

	if (READ_ONCE(fail_until_set) && time_before(jiffies, READ_ONCE(fail_until)))
		left = jiffies_to_msecs(READ_ONCE(fail_until) - jiffies);
	return sysfs_emit(buf, "%ld\n", left);
}

static const struct kernel_param_ops fail_ms_ops = {
	.set = fail_ms_set,
	.get = fail_ms_get,
};
module_param_cb(fail_ms, &fail_ms_ops, NULL, 0644);
MODULE_PARM_DESC(fail_ms, "every read fails for the next N ms (read: ms left)");

static int __init tc_init(void)
{
	unsigned long flags;

	spin_lock_irqsave(&tc_lock, flags);
	set_offset_locked(offset_ns);
	tc_ready = true;
	spin_unlock_irqrestore(&tc_lock, flags);

	tc_info.owner = THIS_MODULE;
	strscpy(tc_info.name, name, sizeof(tc_info.name));
	tc_info.max_adj = 100000000;	/* ppb */
	tc_info.adjfine = tc_adjfine;
	tc_info.adjtime = tc_adjtime;
	tc_info.settime64 = tc_settime64;
	tc_info.gettime64 = tc_gettime64;
	if (extended)
		tc_info.gettimex64 = tc_gettimex64;
	if (precise)
		tc_info.getcrosststamp = tc_getcrosststamp;

	tc_clock = ptp_clock_register(&tc_info, NULL);
	if (IS_ERR(tc_clock))
		return PTR_ERR(tc_clock);
	pr_info("ptp_testclock: ptp%d \"%s\" precise=%d extended=%d offset=%ld ns freq=%ld ppb\n",
		ptp_clock_index(tc_clock), tc_info.name, precise, extended,
		offset_ns, freq_ppb);
	if (name2 && *name2) {
		tc_info2 = tc_info;
		strscpy(tc_info2.name, name2, sizeof(tc_info2.name));
		tc_clock2 = ptp_clock_register(&tc_info2, NULL);
		if (IS_ERR(tc_clock2)) {
			ptp_clock_unregister(tc_clock);
			return PTR_ERR(tc_clock2);
		}
		pr_info("ptp_testclock: ptp%d \"%s\" (second clock, same time)\n",
			ptp_clock_index(tc_clock2), tc_info2.name);
	}
	return 0;
}

static void __exit tc_exit(void)
{
	if (tc_clock2)
		ptp_clock_unregister(tc_clock2);
	ptp_clock_unregister(tc_clock);
}

module_init(tc_init);
module_exit(tc_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("PTP test clock: CLOCK_MONOTONIC_RAW plus a known offset and drift");
