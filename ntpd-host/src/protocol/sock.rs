//! The ntpd-rs `sock` source wire format (the gpsd/chrony SOCK convention).
//!
//! One datagram of exactly 40 bytes, little-endian:
//! `tv_sec i64 | tv_usec i64 | offset f64 (s) | pulse i32 = 0 | leap i32 |
//! padding i32 | magic i32 = 0x534f434b`. ntpd-rs ignores the timestamp and
//! reads its own clock on receipt; the offset is reference minus system.

use ntpd_plugin_api::{Leap, Sample};

/// Size of one datagram.
pub const DATAGRAM_LEN: usize = 40;
/// The protocol's magic number ("SOCK").
pub const MAGIC: i32 = 0x534f_434b;

/// A decoded datagram, as ntpd-rs sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Datagram {
    /// Seconds part of the measurement's system time.
    pub tv_sec: i64,
    /// Microseconds part of the measurement's system time.
    pub tv_usec: i64,
    /// Reference minus system, seconds.
    pub offset: f64,
    /// Always 0 for a non-PPS sample.
    pub pulse: i32,
    /// Leap indicator: 0 none, 1 insert, 2 delete, 3 unknown.
    pub leap: i32,
}

/// Why bytes are not a valid datagram (the same checks ntpd-rs makes).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not 40 bytes.
    #[error("datagram has {0} bytes, expected 40")]
    Size(usize),
    /// Wrong magic number.
    #[error("bad magic {0:#x}")]
    Magic(i32),
    /// Non-zero pulse field.
    #[error("pulse field is {0}, expected 0")]
    Pulse(i32),
}

/// Encodes a plugin sample. The offset goes from integer nanoseconds to
/// seconds only here, at the edge: ntpd-rs takes an f64 offset, whose
/// precision is ample for offsets (unlike absolute times).
pub fn encode(sample: &Sample) -> [u8; DATAGRAM_LEN] {
    let mut buf = [0u8; DATAGRAM_LEN];
    let sec = sample.system_time_ns.div_euclid(1_000_000_000);
    let usec = sample.system_time_ns.rem_euclid(1_000_000_000) / 1000;
    buf[0..8].copy_from_slice(&sec.to_le_bytes());
    buf[8..16].copy_from_slice(&usec.to_le_bytes());
    buf[16..24].copy_from_slice(&offset_seconds(sample.offset_ns).to_le_bytes());
    buf[24..28].copy_from_slice(&0i32.to_le_bytes());
    buf[28..32].copy_from_slice(&leap_code(sample.leap).to_le_bytes());
    buf[36..40].copy_from_slice(&MAGIC.to_le_bytes());
    buf
}

/// An offset in seconds, for the wire, correctly rounded: exact to the
/// nanosecond (within 0.5 ns) for offsets below 2^23 s (97 days), where an
/// f64 of seconds has an ulp of at most 2^-30 s; beyond that f64 rounds,
/// which no clock cares about. (Dividing by 1e9 rounds once; multiplying
/// by 1e-9, which f64 cannot hold exactly, was off by more than 0.5 ns
/// from 2^22 s on.)
#[allow(clippy::cast_precision_loss)]
pub fn offset_seconds(offset_ns: i64) -> f64 {
    offset_ns as f64 / 1e9
}

/// The wire code of a leap indicator; values the protocol does not know
/// become "unknown" (3).
pub fn leap_code(leap: Leap) -> i32 {
    match leap {
        Leap::NONE => 0,
        Leap::INSERT => 1,
        Leap::DELETE => 2,
        _ => 3,
    }
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes[at..at + N].try_into().expect("length checked")
}

/// Decodes a datagram with ntpd-rs's checks (size, magic, pulse).
pub fn decode(bytes: &[u8]) -> Result<Datagram, DecodeError> {
    if bytes.len() != DATAGRAM_LEN {
        return Err(DecodeError::Size(bytes.len()));
    }
    let magic = i32::from_le_bytes(field(bytes, 36));
    if magic != MAGIC {
        return Err(DecodeError::Magic(magic));
    }
    let pulse = i32::from_le_bytes(field(bytes, 24));
    if pulse != 0 {
        return Err(DecodeError::Pulse(pulse));
    }
    Ok(Datagram {
        tv_sec: i64::from_le_bytes(field(bytes, 0)),
        tv_usec: i64::from_le_bytes(field(bytes, 8)),
        offset: f64::from_le_bytes(field(bytes, 16)),
        pulse,
        leap: i32::from_le_bytes(field(bytes, 28)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut s = Sample::new(1_700_000_000_123_456_789, -37_000_000_250, 10);
        s.leap = Leap::DELETE;
        let d = decode(&encode(&s)).unwrap();
        assert_eq!(d.tv_sec, 1_700_000_000);
        assert_eq!(d.tv_usec, 123_456);
        assert!((d.offset - -37.000_000_25).abs() < 1e-12);
        assert_eq!(d.leap, 2);
        assert_eq!(d.pulse, 0);
    }

    #[test]
    fn layout_is_the_documented_one() {
        let bytes = encode(&Sample::new(0, 1_000_000_000, 1));
        assert_eq!(&bytes[36..40], &[0x4b, 0x43, 0x4f, 0x53]);
        assert_eq!(f64::from_le_bytes(bytes[16..24].try_into().unwrap()), 1.0);
    }

    #[test]
    fn negative_system_time_splits_euclidean() {
        let d = decode(&encode(&Sample::new(-1, 0, 1))).unwrap();
        assert_eq!((d.tv_sec, d.tv_usec), (-1, 999_999));
    }

    #[test]
    fn unknown_leap_values_become_unknown() {
        let mut s = Sample::new(0, 0, 1);
        s.leap = Leap(9);
        assert_eq!(decode(&encode(&s)).unwrap().leap, 3);
    }

    #[test]
    fn rejects_what_ntpd_rejects() {
        assert_eq!(decode(&[0; 39]), Err(DecodeError::Size(39)));
        let mut b = encode(&Sample::new(0, 0, 1));
        b[36] = 0;
        assert!(matches!(decode(&b), Err(DecodeError::Magic(_))));
        let mut b = encode(&Sample::new(0, 0, 1));
        b[24] = 1;
        assert_eq!(decode(&b), Err(DecodeError::Pulse(1)));
    }
}
