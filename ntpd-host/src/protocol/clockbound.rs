//! A writer for the ClockBound shared-memory segment, layout version 2, as
//! read by AWS's `clock-bound-client` 2.x (and by ClockBound 3's clients of
//! `shm0`).
//!
//! The segment (aws/clock-bound `docs/PROTOCOL.md`, "Protocol Version 2") is
//! 80 bytes in the CPU's native byte order:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4+4 | magic: the `u32`s `0x414D5A4E`, `0x43420200` |
//! | 8 | 4 | segment size (80) |
//! | 12 | 2 | layout version (2) |
//! | 14 | 2 | generation (seqlock counter) |
//! | 16 | 16 | as-of, `CLOCK_MONOTONIC_COARSE`, `timespec` (`i64` s, `i64` ns) |
//! | 32 | 16 | void-after, same clock and encoding |
//! | 48 | 8 | bound on `CLOCK_REALTIME`'s error at as-of, ns (`i64`) |
//! | 56 | 8 | disruption marker (`u64`) |
//! | 64 | 4 | max drift, ppb (`u32`) |
//! | 68 | 4 | clock status (`i32`: 0 unknown, 1 synchronized, 2 free-running, 3 disrupted) |
//! | 72 | 1 | clock disruption support (0 or 1) |
//! | 73 | 7 | padding |
//!
//! Readers accept a segment only with the magic, version 2, a non-zero
//! generation and a size of at least 80. They read the generation, copy the
//! body and read the generation again, and keep the copy only if both reads
//! agree; an odd generation means "update in progress" (they keep their
//! previous copy). A reader computes `now ± (bound + max_drift ×
//! (mono_coarse_now − as_of))` from `CLOCK_REALTIME`, reports the written
//! status for 5 s after as-of, then free-running until void-after, then
//! unknown; it rejects a max drift of 10⁹ ppb or more. With the disruption
//! support flag set it also opens `/dev/vmclock0` and reports unknown while
//! its marker differs from the segment's.
//!
//! This module holds the layout codec and the write protocol as pure code
//! over `[AtomicU64]` (a `Vec` in tests, the mapped file in production, see
//! [`crate::shm`]), and the one I/O function that creates or reuses the
//! file. The bound itself is decided in [`crate::decide::bound`].

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use thiserror::Error;

use crate::shm::SharedWords;

/// Where ClockBound clients look by default.
pub const DEFAULT_PATH: &str = "/var/run/clockbound/shm0";

/// The segment's magic: two native-endian `u32`s (on little-endian hosts
/// the bytes are `4E 5A 4D 41 00 02 42 43`).
pub const MAGIC: [u32; 2] = [0x414D_5A4E, 0x4342_0200];

/// The layout version this module writes.
pub const LAYOUT_VERSION: u16 = 2;

/// Header bytes: magic, size, version, generation.
pub const HEADER_SIZE: usize = 16;

/// Body bytes: the error bound record.
pub const BODY_SIZE: usize = 64;

/// The whole segment.
pub const SEGMENT_SIZE: usize = HEADER_SIZE + BODY_SIZE;

/// The segment in 64-bit words.
pub const SEGMENT_WORDS: usize = SEGMENT_SIZE / 8;

/// Readers reject a max drift at or above this (one second per second).
pub const MAX_DRIFT_PPB_LIMIT: u32 = 1_000_000_000;

/// File mode of a segment the host creates: world-readable, so any
/// application can map it.
pub const DEFAULT_FILE_MODE: u32 = 0o644;

/// Mode of a directory the host has to create for the segment.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// A `struct timespec` value (seconds and nanoseconds, nanoseconds in
/// `0..1e9`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: i64,
}

impl Timespec {
    /// From nanoseconds (may be negative), saturating at the `i64` second
    /// range.
    pub fn from_nanos(ns: i128) -> Self {
        let nanos = i128::from(NANOS_PER_SEC);
        let sec = ns.div_euclid(nanos);
        let nsec = i64::try_from(ns.rem_euclid(nanos)).expect("below one second");
        match i64::try_from(sec) {
            Ok(sec) => Timespec { sec, nsec },
            Err(_) if sec > 0 => Timespec {
                sec: i64::MAX,
                nsec: NANOS_PER_SEC - 1,
            },
            Err(_) => Timespec {
                sec: i64::MIN,
                nsec: 0,
            },
        }
    }

    /// In nanoseconds.
    pub fn as_nanos(self) -> i128 {
        i128::from(self.sec) * i128::from(NANOS_PER_SEC) + i128::from(self.nsec)
    }

    /// This instant plus `ns` nanoseconds (saturating).
    pub fn add_nanos(self, ns: i128) -> Self {
        Timespec::from_nanos(self.as_nanos().saturating_add(ns))
    }

    /// Whether `nsec` is in range.
    pub fn is_normalized(self) -> bool {
        (0..NANOS_PER_SEC).contains(&self.nsec)
    }
}

/// The clock status values of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockStatus {
    /// 0: the error bound must not be trusted.
    Unknown,
    /// 1: the clock is kept synchronised.
    Synchronized,
    /// 2: the clock runs free; the bound (growing with the drift) holds.
    FreeRunning,
    /// 3: the clock was disrupted; the error cannot be bounded.
    Disrupted,
}

impl ClockStatus {
    /// The wire value.
    pub fn as_raw(self) -> i32 {
        match self {
            ClockStatus::Unknown => 0,
            ClockStatus::Synchronized => 1,
            ClockStatus::FreeRunning => 2,
            ClockStatus::Disrupted => 3,
        }
    }

    /// From the wire value.
    pub fn from_raw(v: i32) -> Option<Self> {
        match v {
            0 => Some(ClockStatus::Unknown),
            1 => Some(ClockStatus::Synchronized),
            2 => Some(ClockStatus::FreeRunning),
            3 => Some(ClockStatus::Disrupted),
            _ => None,
        }
    }

    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            ClockStatus::Unknown => "unknown",
            ClockStatus::Synchronized => "synchronized",
            ClockStatus::FreeRunning => "free-running",
            ClockStatus::Disrupted => "disrupted",
        }
    }
}

/// One record of the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorBound {
    /// When the bound was computed (`CLOCK_MONOTONIC_COARSE`).
    pub as_of: Timespec,
    /// After this (`CLOCK_MONOTONIC_COARSE`) the record is void.
    pub void_after: Timespec,
    /// Bound on `CLOCK_REALTIME`'s error at `as_of`, ns.
    pub bound_ns: i64,
    /// The vmclock disruption marker the bound was computed under.
    pub disruption_marker: u64,
    /// How fast the error may grow after `as_of`, ppb.
    pub max_drift_ppb: u32,
    /// The status.
    pub status: ClockStatus,
    /// Whether readers should compare `disruption_marker` with
    /// `/dev/vmclock0` (set it only when that device exists and the marker is
    /// the one read from it: a 2.x client fails to open without the device
    /// and reports unknown while the markers differ).
    pub disruption_support: bool,
}

impl ErrorBound {
    /// A record that tells readers not to trust the clock.
    pub fn unknown(as_of: Timespec) -> Self {
        ErrorBound {
            as_of,
            void_after: as_of,
            bound_ns: 0,
            disruption_marker: 0,
            max_drift_ppb: 0,
            status: ClockStatus::Unknown,
            disruption_support: false,
        }
    }

    /// Checks what readers would reject or misread.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if !self.as_of.is_normalized() || !self.void_after.is_normalized() {
            return Err(LayoutError::Timespec);
        }
        if self.bound_ns < 0 {
            return Err(LayoutError::NegativeBound(self.bound_ns));
        }
        if self.max_drift_ppb >= MAX_DRIFT_PPB_LIMIT {
            return Err(LayoutError::Drift(self.max_drift_ppb));
        }
        Ok(())
    }
}

/// What is wrong with a record or segment.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum LayoutError {
    /// A timestamp's nanoseconds are outside `0..1e9`.
    #[error("timestamp nanoseconds out of range")]
    Timespec,
    /// A negative bound.
    #[error("negative error bound {0} ns")]
    NegativeBound(i64),
    /// A max drift readers reject.
    #[error("max drift {0} ppb is not below {MAX_DRIFT_PPB_LIMIT}")]
    Drift(u32),
    /// A status value outside 0..=3.
    #[error("clock status {0} is not one of 0..=3")]
    Status(i32),
    /// A disruption-support byte other than 0 or 1.
    #[error("clock disruption support byte {0} is not 0 or 1")]
    SupportFlag(u8),
    /// Not enough words for a segment.
    #[error("segment needs {SEGMENT_WORDS} words, got {0}")]
    TooSmall(usize),
}

/// Encodes a record as the 64 body bytes (native byte order).
pub fn encode_body(b: &ErrorBound) -> [u8; BODY_SIZE] {
    let mut out = [0u8; BODY_SIZE];
    out[0..8].copy_from_slice(&b.as_of.sec.to_ne_bytes());
    out[8..16].copy_from_slice(&b.as_of.nsec.to_ne_bytes());
    out[16..24].copy_from_slice(&b.void_after.sec.to_ne_bytes());
    out[24..32].copy_from_slice(&b.void_after.nsec.to_ne_bytes());
    out[32..40].copy_from_slice(&b.bound_ns.to_ne_bytes());
    out[40..48].copy_from_slice(&b.disruption_marker.to_ne_bytes());
    out[48..52].copy_from_slice(&b.max_drift_ppb.to_ne_bytes());
    out[52..56].copy_from_slice(&b.status.as_raw().to_ne_bytes());
    out[56] = u8::from(b.disruption_support);
    out
}

fn ne_i64(b: &[u8], at: usize) -> i64 {
    i64::from_ne_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decodes the 64 body bytes.
pub fn decode_body(body: &[u8; BODY_SIZE]) -> Result<ErrorBound, LayoutError> {
    let raw_status = i32::from_ne_bytes(body[52..56].try_into().expect("4 bytes"));
    let status = ClockStatus::from_raw(raw_status).ok_or(LayoutError::Status(raw_status))?;
    let disruption_support = match body[56] {
        0 => false,
        1 => true,
        other => return Err(LayoutError::SupportFlag(other)),
    };
    Ok(ErrorBound {
        as_of: Timespec {
            sec: ne_i64(body, 0),
            nsec: ne_i64(body, 8),
        },
        void_after: Timespec {
            sec: ne_i64(body, 16),
            nsec: ne_i64(body, 24),
        },
        bound_ns: ne_i64(body, 32),
        disruption_marker: u64::from_ne_bytes(body[40..48].try_into().expect("8 bytes")),
        max_drift_ppb: u32::from_ne_bytes(body[48..52].try_into().expect("4 bytes")),
        status,
        disruption_support,
    })
}

/// The header's second word: size, version and generation.
fn header_word(version: u16, generation: u16) -> u64 {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&u32::try_from(SEGMENT_SIZE).expect("80").to_ne_bytes());
    b[4..6].copy_from_slice(&version.to_ne_bytes());
    b[6..8].copy_from_slice(&generation.to_ne_bytes());
    u64::from_ne_bytes(b)
}

fn magic_word() -> u64 {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&MAGIC[0].to_ne_bytes());
    b[4..8].copy_from_slice(&MAGIC[1].to_ne_bytes());
    u64::from_ne_bytes(b)
}

/// The 16 header bytes.
pub fn encode_header(version: u16, generation: u16) -> [u8; HEADER_SIZE] {
    let mut out = [0u8; HEADER_SIZE];
    out[0..8].copy_from_slice(&magic_word().to_ne_bytes());
    out[8..16].copy_from_slice(&header_word(version, generation).to_ne_bytes());
    out
}

/// A decoded header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Whether the magic matches.
    pub magic_ok: bool,
    /// The declared segment size.
    pub segsize: u32,
    /// The layout version.
    pub version: u16,
    /// The generation.
    pub generation: u16,
}

/// Decodes the 16 header bytes.
pub fn decode_header(h: &[u8; HEADER_SIZE]) -> Header {
    Header {
        magic_ok: h[0..8] == magic_word().to_ne_bytes(),
        segsize: u32::from_ne_bytes(h[8..12].try_into().expect("4 bytes")),
        version: u16::from_ne_bytes(h[12..14].try_into().expect("2 bytes")),
        generation: u16::from_ne_bytes(h[14..16].try_into().expect("2 bytes")),
    }
}

/// The generations of one update: the odd value announcing it and the even
/// value completing it. An odd current value (a writer died mid-update) is
/// kept as the announcement. The completing value skips 0, which readers
/// take for "not initialised", going from 65535 to 2 as the protocol says.
pub fn next_generations(current: u16) -> (u16, u16) {
    let odd = if current & 1 == 0 {
        current.wrapping_add(1)
    } else {
        current
    };
    let even = match odd.wrapping_add(1) {
        0 => 2,
        n => n,
    };
    (odd, even)
}

/// The segment as words, written with the seqlock protocol. Generic over
/// the storage: `Vec<AtomicU64>` in tests, [`SharedWords`] in production.
#[derive(Debug)]
pub struct Segment<S> {
    storage: S,
}

/// Storage a [`Segment`] can live in.
pub trait Words {
    /// The words.
    fn words(&self) -> &[AtomicU64];
}

impl Words for Vec<AtomicU64> {
    fn words(&self) -> &[AtomicU64] {
        self
    }
}

impl Words for [AtomicU64; SEGMENT_WORDS] {
    fn words(&self) -> &[AtomicU64] {
        self
    }
}

impl Words for SharedWords {
    fn words(&self) -> &[AtomicU64] {
        SharedWords::words(self)
    }
}

impl<T: Words + ?Sized> Words for &T {
    fn words(&self) -> &[AtomicU64] {
        (**self).words()
    }
}

impl<T: Words + ?Sized> Words for std::sync::Arc<T> {
    fn words(&self) -> &[AtomicU64] {
        (**self).words()
    }
}

/// A fresh, zeroed segment in memory (for tests and previews).
pub fn memory_segment() -> Segment<Vec<AtomicU64>> {
    Segment::new((0..SEGMENT_WORDS).map(|_| AtomicU64::new(0)).collect())
        .expect("SEGMENT_WORDS words")
}

impl<S: Words> Segment<S> {
    /// Wraps storage of at least [`SEGMENT_WORDS`] words. Its content is
    /// left as is (a segment reused after a restart keeps serving readers).
    pub fn new(storage: S) -> Result<Self, LayoutError> {
        let n = storage.words().len();
        if n < SEGMENT_WORDS {
            return Err(LayoutError::TooSmall(n));
        }
        Ok(Segment { storage })
    }

    fn w(&self) -> &[AtomicU64] {
        &self.storage.words()[..SEGMENT_WORDS]
    }

    /// The current header.
    pub fn header(&self) -> Header {
        let w = self.w();
        let mut h = [0u8; HEADER_SIZE];
        h[0..8].copy_from_slice(&w[0].load(Ordering::Acquire).to_ne_bytes());
        h[8..16].copy_from_slice(&w[1].load(Ordering::Acquire).to_ne_bytes());
        decode_header(&h)
    }

    /// Writes an empty segment that readers refuse (generation 0) but that
    /// already has the right magic, size and version. Only for storage no
    /// reader has mapped yet.
    pub fn format(&self) {
        let w = self.w();
        w[0].store(magic_word(), Ordering::Relaxed);
        for word in &w[2..] {
            word.store(0, Ordering::Relaxed);
        }
        w[1].store(header_word(LAYOUT_VERSION, 0), Ordering::Release);
    }

    /// Publishes a record: generation to odd, body, generation to even.
    /// Returns the new (even) generation. The magic and version are
    /// (re)written with the header word, so this also completes a
    /// [`Self::format`]ted segment.
    pub fn write(&self, record: &ErrorBound) -> u16 {
        let w = self.w();
        let body = encode_body(record);
        let current = self.header().generation;
        let (odd, even) = next_generations(current);

        w[0].store(magic_word(), Ordering::Relaxed);
        w[1].store(header_word(LAYOUT_VERSION, odd), Ordering::Relaxed);
        // No body store may become visible before the odd generation.
        fence(Ordering::Release);
        for (i, chunk) in body.chunks_exact(8).enumerate() {
            let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes"));
            w[2 + i].store(v, Ordering::Relaxed);
        }
        // Every body store is visible before the even generation.
        w[1].store(header_word(LAYOUT_VERSION, even), Ordering::Release);
        even
    }

    /// The whole segment's bytes, as a reader mapping it would see them now
    /// (not necessarily consistent; see [`Self::read`]).
    pub fn bytes(&self) -> [u8; SEGMENT_SIZE] {
        let mut out = [0u8; SEGMENT_SIZE];
        for (i, word) in self.w().iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Acquire).to_ne_bytes());
        }
        out
    }

    /// Reads a consistent record the way the protocol's readers do: `None`
    /// when the segment is not initialised or stays mid-update for
    /// `attempts` tries. For status output and tests; applications use
    /// `clock-bound-client`.
    pub fn read(&self, attempts: usize) -> Option<(u16, Result<ErrorBound, LayoutError>)> {
        let w = self.w();
        for _ in 0..attempts {
            let before = self.header();
            if !before.magic_ok || before.version != LAYOUT_VERSION || before.generation == 0 {
                return None;
            }
            if before.generation & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut body = [0u8; BODY_SIZE];
            for (i, word) in w[2..].iter().enumerate() {
                body[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
            }
            // The body loads complete before the generation is read again.
            fence(Ordering::Acquire);
            if self.header().generation == before.generation {
                return Some((before.generation, decode_body(&body)));
            }
        }
        None
    }
}

/// How an existing file at the segment's path looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Existing {
    /// A version-2 segment of the right size: reuse it in place, so readers
    /// that have it mapped keep getting updates.
    Reusable,
    /// Anything else: replace it with a fresh file.
    Replace(String),
}

/// Judges the first bytes of an existing file.
pub fn classify_existing(bytes: &[u8]) -> Existing {
    let Some(h) = bytes.get(..HEADER_SIZE) else {
        return Existing::Replace(format!("{} bytes, shorter than a header", bytes.len()));
    };
    let h = decode_header(h.try_into().expect("header bytes"));
    if !h.magic_ok {
        return Existing::Replace("not a ClockBound segment (magic)".to_owned());
    }
    if h.version != LAYOUT_VERSION {
        return Existing::Replace(format!("layout version {}", h.version));
    }
    if h.segsize as usize != SEGMENT_SIZE {
        return Existing::Replace(format!("segment size {}", h.segsize));
    }
    if bytes.len() < SEGMENT_SIZE {
        return Existing::Replace(format!("file is only {} bytes", bytes.len()));
    }
    Existing::Reusable
}

/// Why the segment file could not be set up.
#[derive(Debug, Error)]
pub enum SegmentError {
    /// A filesystem call failed.
    #[error("ClockBound segment {path}: {op}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The path exists but is not a regular file (or is a symlink).
    #[error(
        "ClockBound segment {path}: exists and is not a regular file; remove it or set another path"
    )]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// The path has no file name or parent directory.
    #[error("ClockBound segment path {path}: must name a file in a directory, e.g. {DEFAULT_PATH}")]
    BadPath {
        /// The path.
        path: PathBuf,
    },
}

fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> SegmentError + use<> {
    let path = path.to_owned();
    move |source| SegmentError::Io { path, op, source }
}

/// The segment file, mapped.
#[derive(Debug)]
pub struct SegmentFile {
    /// Where it is.
    pub path: PathBuf,
    /// Whether an existing segment was reused (readers may have it mapped).
    pub reused: bool,
    /// The mapped segment.
    pub segment: Segment<SharedWords>,
}

/// Opens the segment at `path` for writing: reuses a valid existing
/// version-2 segment in place (readers that mapped it keep working),
/// otherwise writes a fresh one to a temporary file in the same directory
/// and renames it over `path` (never truncating a file a reader may have
/// mapped). A missing directory is created with `dir_mode`; the file gets
/// `file_mode` (readers need read access only). Symlinks are not followed.
///
/// A fresh segment has generation 0, which readers refuse, until the first
/// [`Segment::write`]; a reused one still shows its last record, so the
/// caller should write an [`ErrorBound::unknown`] record right away.
pub fn open_segment(
    path: &Path,
    file_mode: u32,
    dir_mode: u32,
) -> Result<SegmentFile, SegmentError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(SegmentError::BadPath {
            path: path.to_owned(),
        });
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if !dir.exists() {
        DirBuilder::new()
            .recursive(true)
            .mode(dir_mode)
            .create(dir)
            .map_err(io_err(dir, "create directory"))?;
    }

    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits().cast_signed();
    let existing = match OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nofollow)
        .open(path)
    {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => {
            return Err(SegmentError::NotAFile {
                path: path.to_owned(),
            });
        }
        Err(e) => return Err(io_err(path, "open")(e)),
    };

    let (file, reused) = match existing {
        Some(mut f) => {
            let meta = f.metadata().map_err(io_err(path, "stat"))?;
            if !meta.is_file() {
                return Err(SegmentError::NotAFile {
                    path: path.to_owned(),
                });
            }
            let mut head = Vec::with_capacity(SEGMENT_SIZE);
            (&mut f)
                .take(SEGMENT_SIZE as u64)
                .read_to_end(&mut head)
                .map_err(io_err(path, "read"))?;
            match classify_existing(&head) {
                Existing::Reusable => {
                    f.set_permissions(fs::Permissions::from_mode(file_mode))
                        .map_err(io_err(path, "chmod"))?;
                    (f, true)
                }
                Existing::Replace(_) => (replace_with_fresh(dir, name, path, file_mode)?, false),
            }
        }
        None => (replace_with_fresh(dir, name, path, file_mode)?, false),
    };

    let words = SharedWords::map(&file, SEGMENT_WORDS).map_err(io_err(path, "mmap"))?;
    let segment = Segment::new(words).expect("SEGMENT_WORDS words mapped");
    Ok(SegmentFile {
        path: path.to_owned(),
        reused,
        segment,
    })
}

/// Writes a formatted segment to a new private temporary file next to
/// `path` (tempfile: a random name, `O_EXCL`) and renames it into place;
/// returns the file, open read-write.
fn replace_with_fresh(
    dir: &Path,
    name: &std::ffi::OsStr,
    path: &Path,
    mode: u32,
) -> Result<File, SegmentError> {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(name);
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io_err(dir, "create a temporary file"))?;
    let fresh = memory_segment();
    fresh.format();
    tmp.write_all(&fresh.bytes())
        // The umask may have narrowed the mode given at creation.
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(fs::Permissions::from_mode(mode))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err(path, "write a fresh segment"))?;
    tmp.persist(path)
        .map_err(|e| io_err(path, "write a fresh segment")(e.error))
}

/// Reads `CLOCK_MONOTONIC_COARSE`, the clock of `as_of` and `void_after`.
pub fn monotonic_coarse_now() -> Timespec {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Timespec {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    }
}

/// The resolution of `CLOCK_MONOTONIC_COARSE` (one timer tick).
pub fn monotonic_coarse_resolution() -> Timespec {
    let t = rustix::time::clock_getres(rustix::time::ClockId::MonotonicCoarse);
    Timespec {
        sec: t.tv_sec,
        nsec: t.tv_nsec,
    }
}

/// The `as_of` to publish for a bound computed at coarse time `now`: one
/// clock tick earlier. Readers measure the time since `as_of` with the same
/// coarse clock, whose readings lag true time by up to a tick; dating the
/// bound a tick early makes the drift they add never too small.
pub fn conservative_as_of(now: Timespec, resolution: Timespec) -> Timespec {
    now.add_nanos(-resolution.as_nanos().max(0))
}

/// The vmclock page's magic ("VCLK", little-endian `u32` at offset 0).
pub const VMCLOCK_MAGIC: u32 = 0x4b4c_4356;

/// The bytes of a vmclock page up to and including its disruption marker.
pub const VMCLOCK_MARKER_END: usize = 24;

/// The disruption marker of a vmclock page (`struct vmclock_abi`, all
/// little-endian: magic at 0, size at 4, the marker at 16), if `page` is
/// one and covers it.
pub fn vmclock_marker(page: &[u8]) -> Option<u64> {
    let word = |at: usize| -> Option<[u8; 4]> { page.get(at..at + 4)?.try_into().ok() };
    if u32::from_le_bytes(word(0)?) != VMCLOCK_MAGIC {
        return None;
    }
    let size = u32::from_le_bytes(word(4)?);
    if (size as usize) < VMCLOCK_MARKER_END {
        return None;
    }
    Some(u64::from_le_bytes(page.get(16..24)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn vmclock_marker_is_read_from_a_page() {
        let mut page = vec![0u8; 32];
        page[0..4].copy_from_slice(&VMCLOCK_MAGIC.to_le_bytes());
        page[4..8].copy_from_slice(&32u32.to_le_bytes());
        page[16..24].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(vmclock_marker(&page), Some(0x0102_0304_0506_0708));
        assert_eq!(vmclock_marker(&page[..20]), None, "too short");
        let mut small = page.clone();
        small[4..8].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(vmclock_marker(&small), None, "size does not cover it");
        page[0] ^= 1;
        assert_eq!(vmclock_marker(&page), None, "not a vmclock page");
    }

    fn sample_record() -> ErrorBound {
        ErrorBound {
            as_of: Timespec { sec: 1, nsec: 2 },
            void_after: Timespec { sec: 3, nsec: 4 },
            bound_ns: 123,
            disruption_marker: 10,
            max_drift_ppb: 100,
            status: ClockStatus::Synchronized,
            disruption_support: true,
        }
    }

    #[test]
    fn layout_matches_the_protocol_offsets() {
        let rec = ErrorBound {
            as_of: Timespec {
                sec: 0x1111,
                nsec: 0x2222,
            },
            void_after: Timespec {
                sec: 0x3333,
                nsec: 0x4444,
            },
            bound_ns: 0x5555,
            disruption_marker: 0x6666,
            max_drift_ppb: 0x7777,
            status: ClockStatus::Disrupted,
            disruption_support: true,
        };
        let seg = memory_segment();
        seg.write(&rec);
        let b = seg.bytes();
        let at = |o: usize| i64::from_ne_bytes(b[o..o + 8].try_into().unwrap());
        assert_eq!(&b[0..4], &0x414D_5A4Eu32.to_ne_bytes());
        assert_eq!(&b[4..8], &0x4342_0200u32.to_ne_bytes());
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 80);
        assert_eq!(u16::from_ne_bytes(b[12..14].try_into().unwrap()), 2);
        assert_eq!(u16::from_ne_bytes(b[14..16].try_into().unwrap()), 2);
        assert_eq!(at(16), 0x1111);
        assert_eq!(at(24), 0x2222);
        assert_eq!(at(32), 0x3333);
        assert_eq!(at(40), 0x4444);
        assert_eq!(at(48), 0x5555);
        assert_eq!(at(56), 0x6666);
        assert_eq!(u32::from_ne_bytes(b[64..68].try_into().unwrap()), 0x7777);
        assert_eq!(i32::from_ne_bytes(b[68..72].try_into().unwrap()), 3);
        assert_eq!(b[72], 1);
        assert_eq!(&b[73..80], &[0; 7]);
        if cfg!(target_endian = "little") {
            assert_eq!(&b[0..8], &[0x4E, 0x5A, 0x4D, 0x41, 0x00, 0x02, 0x42, 0x43]);
        }
    }

    #[test]
    fn body_round_trips_and_rejects_bad_enums() {
        let rec = sample_record();
        assert_eq!(decode_body(&encode_body(&rec)), Ok(rec));
        for status in [
            ClockStatus::Unknown,
            ClockStatus::Synchronized,
            ClockStatus::FreeRunning,
            ClockStatus::Disrupted,
        ] {
            let r = ErrorBound { status, ..rec };
            assert_eq!(decode_body(&encode_body(&r)).unwrap().status, status);
            assert_eq!(ClockStatus::from_raw(status.as_raw()), Some(status));
        }
        let mut body = encode_body(&rec);
        body[52..56].copy_from_slice(&7i32.to_ne_bytes());
        assert_eq!(decode_body(&body), Err(LayoutError::Status(7)));
        let mut body = encode_body(&rec);
        body[56] = 2;
        assert_eq!(decode_body(&body), Err(LayoutError::SupportFlag(2)));
    }

    #[test]
    fn generations_skip_zero_and_recover_from_odd() {
        assert_eq!(next_generations(0), (1, 2));
        assert_eq!(next_generations(2), (3, 4));
        assert_eq!(next_generations(65534), (65535, 2));
        // A writer that died mid-update left 7: announce with 7, end at 8.
        assert_eq!(next_generations(7), (7, 8));
        assert_eq!(next_generations(65535), (65535, 2));
        // Every completed generation is even and non-zero over a full wrap.
        let mut g = 0u16;
        for _ in 0..70_000 {
            let (odd, even) = next_generations(g);
            assert_eq!(odd & 1, 1);
            assert!(even != 0 && even & 1 == 0);
            g = even;
        }
    }

    #[test]
    fn formatted_segment_is_refused_until_the_first_write() {
        let seg = memory_segment();
        assert_eq!(seg.read(3), None, "all zeroes");
        seg.format();
        let h = seg.header();
        assert!(h.magic_ok);
        assert_eq!((h.segsize, h.version, h.generation), (80, 2, 0));
        assert_eq!(seg.read(3), None, "generation 0");
        assert_eq!(seg.write(&sample_record()), 2);
        assert_eq!(seg.read(3), Some((2, Ok(sample_record()))));
        assert_eq!(seg.write(&sample_record()), 4);
    }

    #[test]
    fn write_completes_a_zeroed_segment_too() {
        let seg = memory_segment();
        seg.write(&sample_record());
        let h = seg.header();
        assert!(h.magic_ok && h.version == 2 && h.generation == 2);
    }

    #[test]
    fn reader_skips_an_update_in_progress() {
        let seg = memory_segment();
        seg.write(&sample_record());
        // Simulate a writer stopped after announcing an update.
        seg.w()[1].store(header_word(LAYOUT_VERSION, 3), Ordering::Release);
        assert_eq!(seg.read(5), None);
        // The next write recovers from the odd value.
        assert_eq!(seg.write(&sample_record()), 4);
        assert!(seg.read(1).is_some());
    }

    #[test]
    fn segment_needs_enough_words() {
        let short: Vec<AtomicU64> = (0..9).map(|_| AtomicU64::new(0)).collect();
        assert_eq!(Segment::new(short).unwrap_err(), LayoutError::TooSmall(9));
    }

    /// A record whose fields all derive from `n`: a torn read mixes two
    /// numbers and fails `rec == derived(rec.disruption_marker)`.
    fn derived(n: u64) -> ErrorBound {
        ErrorBound {
            as_of: Timespec {
                sec: n as i64,
                nsec: (n % 1_000_000_000) as i64,
            },
            void_after: Timespec {
                sec: n as i64 + 1,
                nsec: 0,
            },
            bound_ns: n as i64 * 3,
            disruption_marker: n,
            max_drift_ppb: (n % 1_000_000) as u32,
            status: if n.is_multiple_of(2) {
                ClockStatus::Synchronized
            } else {
                ClockStatus::FreeRunning
            },
            disruption_support: n.is_multiple_of(3),
        }
    }

    #[test]
    fn a_write_without_the_seqlock_is_caught_by_the_check() {
        // The check the stress test relies on detects a mixed record: store
        // half of record 6 over record 5 without touching the generation.
        let seg = memory_segment();
        seg.write(&derived(5));
        let six = encode_body(&derived(6));
        for (i, chunk) in six.chunks_exact(8).take(3).enumerate() {
            seg.w()[2 + i].store(
                u64::from_ne_bytes(chunk.try_into().unwrap()),
                Ordering::Relaxed,
            );
        }
        let (_, rec) = seg.read(1).unwrap();
        let rec = rec.unwrap();
        assert_ne!(rec, derived(rec.disruption_marker));
    }

    #[test]
    fn concurrent_reader_never_sees_a_mixed_record() {
        let seg = Arc::new(memory_segment());
        seg.write(&derived(1));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (seg, stop) = (Arc::clone(&seg), Arc::clone(&stop));
            std::thread::spawn(move || {
                let (mut reads, mut last) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    if let Some((_, rec)) = seg.read(1_000) {
                        let rec = rec.expect("valid enums");
                        let n = rec.disruption_marker;
                        assert_eq!(rec, derived(n), "torn read");
                        assert!(n >= last, "went back from {last} to {n}");
                        last = n;
                        reads += 1;
                    }
                }
                reads
            })
        };
        for n in 2..200_000u64 {
            seg.write(&derived(n));
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0);
    }

    #[test]
    fn validate_catches_what_readers_reject() {
        assert!(sample_record().validate().is_ok());
        let r = ErrorBound {
            max_drift_ppb: MAX_DRIFT_PPB_LIMIT,
            ..sample_record()
        };
        assert_eq!(r.validate(), Err(LayoutError::Drift(MAX_DRIFT_PPB_LIMIT)));
        let r = ErrorBound {
            bound_ns: -1,
            ..sample_record()
        };
        assert!(r.validate().is_err());
        let r = ErrorBound {
            as_of: Timespec {
                sec: 1,
                nsec: 1_000_000_000,
            },
            ..sample_record()
        };
        assert_eq!(r.validate(), Err(LayoutError::Timespec));
    }

    #[test]
    fn timespec_arithmetic() {
        assert_eq!(
            Timespec::from_nanos(-1),
            Timespec {
                sec: -1,
                nsec: 999_999_999
            }
        );
        assert_eq!(
            Timespec::from_nanos(2_500_000_000),
            Timespec {
                sec: 2,
                nsec: 500_000_000
            }
        );
        let t = Timespec { sec: 10, nsec: 100 };
        assert_eq!(t.add_nanos(-200).as_nanos(), 9_999_999_900);
        assert_eq!(Timespec::from_nanos(i128::MAX).sec, i64::MAX, "saturates");
        assert_eq!(
            conservative_as_of(
                t,
                Timespec {
                    sec: 0,
                    nsec: 4_000_000
                }
            ),
            Timespec {
                sec: 9,
                nsec: 996_000_100
            }
        );
    }

    #[test]
    fn coarse_clock_reads_and_has_a_resolution() {
        let a = monotonic_coarse_now();
        let r = monotonic_coarse_resolution();
        assert!(a.is_normalized() && a.sec >= 0);
        assert!(r.as_nanos() > 0 && r.as_nanos() <= 100_000_000, "{r:?}");
        std::thread::sleep(std::time::Duration::from_millis(
            2 * (r.as_nanos() as u64 / 1_000_000 + 1),
        ));
        assert!(monotonic_coarse_now() > a);
    }

    #[test]
    fn classify_existing_files() {
        let seg = memory_segment();
        seg.write(&sample_record());
        assert_eq!(classify_existing(&seg.bytes()), Existing::Reusable);
        assert!(matches!(classify_existing(&[]), Existing::Replace(_)));
        assert!(matches!(
            classify_existing(&seg.bytes()[..40]),
            Existing::Replace(r) if r.contains("40 bytes")
        ));
        let mut b = seg.bytes();
        b[12..14].copy_from_slice(&3u16.to_ne_bytes());
        assert!(matches!(classify_existing(&b), Existing::Replace(r) if r.contains("version 3")));
        let mut b = seg.bytes();
        b[8..12].copy_from_slice(&400u32.to_ne_bytes());
        assert!(matches!(classify_existing(&b), Existing::Replace(r) if r.contains("size 400")));
        let mut b = seg.bytes();
        b[0] ^= 1;
        assert!(matches!(classify_existing(&b), Existing::Replace(r) if r.contains("magic")));
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn open_creates_directory_and_file_with_modes() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("run/clockbound/shm0");
        let f = open_segment(&path, DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap();
        assert!(!f.reused);
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(mode_of(path.parent().unwrap()), 0o755);
        assert_eq!(fs::metadata(&path).unwrap().len(), SEGMENT_SIZE as u64);
        // Fresh: valid header, generation 0 (readers refuse it yet).
        let h = f.segment.header();
        assert!(h.magic_ok && h.version == 2 && h.generation == 0);
        f.segment.write(&sample_record());
        // The bytes reach the file.
        let on_disk = fs::read(&path).unwrap();
        assert_eq!(on_disk, f.segment.bytes().to_vec());
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("shm0")]);
    }

    #[test]
    fn open_reuses_a_valid_segment_in_place() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("shm0");
        let first = open_segment(&path, 0o600, DEFAULT_DIR_MODE).unwrap();
        first.segment.write(&sample_record());
        first.segment.write(&sample_record());
        let inode = fs::metadata(&path).unwrap().ino();
        // A "reader" mapping of the old file.
        let reader_file = File::open(&path).unwrap();
        drop(first);

        let second = open_segment(&path, 0o644, DEFAULT_DIR_MODE).unwrap();
        assert!(second.reused);
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "same file");
        assert_eq!(mode_of(&path), 0o644, "mode updated");
        // The previous record and generation are still there.
        assert_eq!(second.segment.read(3), Some((4, Ok(sample_record()))));
        second
            .segment
            .write(&ErrorBound::unknown(Timespec::default()));
        // The reader's open file sees the new record.
        let mut bytes = Vec::new();
        (&reader_file).read_to_end(&mut bytes).unwrap();
        let body: [u8; BODY_SIZE] = bytes[HEADER_SIZE..SEGMENT_SIZE].try_into().unwrap();
        assert_eq!(decode_body(&body).unwrap().status, ClockStatus::Unknown);
    }

    use std::os::unix::fs::MetadataExt;

    #[test]
    fn open_replaces_a_foreign_file_without_truncating_it() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join("shm0");
        fs::write(&path, b"foobarbaz").unwrap();
        let old_inode = fs::metadata(&path).unwrap().ino();
        let old = File::open(&path).unwrap();
        let f = open_segment(&path, DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap();
        assert!(!f.reused);
        assert_ne!(
            fs::metadata(&path).unwrap().ino(),
            old_inode,
            "renamed over"
        );
        // Whoever had the old file open still has its old content.
        let mut content = String::new();
        (&old).read_to_string(&mut content).unwrap();
        assert_eq!(content, "foobarbaz");
    }

    #[test]
    fn open_refuses_symlinks_and_directories() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("elsewhere");
        fs::write(&target, [0u8; 80]).unwrap();
        let link = root.path().join("shm0");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_segment(&link, DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap_err();
        assert!(matches!(e, SegmentError::NotAFile { .. }), "{e}");
        assert_eq!(
            fs::read(&target).unwrap(),
            vec![0u8; 80],
            "target untouched"
        );

        let dir = root.path().join("adir");
        fs::create_dir(&dir).unwrap();
        let e = open_segment(&dir, DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap_err();
        assert!(e.to_string().contains("adir"), "{e}");

        let e = open_segment(Path::new("/"), DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap_err();
        assert!(matches!(e, SegmentError::BadPath { .. }), "{e}");
    }

    #[test]
    fn open_reports_an_unwritable_directory() {
        let root = tempfile::tempdir().unwrap();
        let blocker = root.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        // A path whose "directory" is a regular file.
        let e =
            open_segment(&blocker.join("shm0"), DEFAULT_FILE_MODE, DEFAULT_DIR_MODE).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("file/shm0") || msg.contains("file"), "{msg}");
    }
}
