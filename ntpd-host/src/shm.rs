//! Every line of `unsafe` in ntpd-host: mapping a small file shared
//! read-write into memory and viewing it as 64-bit atomic words.
//!
//! The ClockBound segment ([`crate::protocol::clockbound`]) is a file that readers in
//! other processes map read-only; the host writes it through this mapping
//! with atomic stores only, so the seqlock protocol holds under the Rust
//! memory model inside this process and the readers see each store whole.

use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use rustix::mm::{MapFlags, ProtFlags, mmap, munmap};

/// A file mapped `MAP_SHARED`, read-write, seen as `[AtomicU64]`. Unmapped
/// on drop.
#[derive(Debug)]
pub struct SharedWords {
    ptr: NonNull<AtomicU64>,
    words: usize,
}

// SAFETY: the mapping is owned by this value and accessed only through
// `&[AtomicU64]`, which is `Send` and `Sync`; the raw pointer is what makes
// the auto traits opt out.
unsafe impl Send for SharedWords {}
// SAFETY: as above: shared access goes through atomics only.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    /// Maps the first `words * 8` bytes of `file`, which must be open
    /// read-write and at least that long (a store past the end of the file
    /// would raise SIGBUS). The file may be closed afterwards; the mapping
    /// keeps it alive.
    pub fn map(file: &File, words: usize) -> io::Result<Self> {
        let len = words
            .checked_mul(8)
            .filter(|&n| n > 0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"))?;
        let file_len = file.metadata()?.len();
        if file_len < len as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("file is {file_len} bytes, shorter than the {len} to map"),
            ));
        }
        // SAFETY: a new mapping chosen by the kernel (null hint), of a
        // length checked to lie within the file, so it overlaps no Rust
        // object and every byte in it is backed by the file.
        let ptr = unsafe {
            mmap(
                std::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                file,
                0,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<AtomicU64>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(SharedWords { ptr, words })
    }

    /// The mapped words.
    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is page-aligned (so 8-byte aligned), `words *
        // 8` bytes long and live until `self` drops; `AtomicU64` has the size
        // and alignment of `u64` and allows shared mutation, which other
        // processes may do too (the readers only read).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.words) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`words * 8` are exactly what `mmap` returned and no
        // reference from `words()` can outlive `self`.
        let result = unsafe { munmap(self.ptr.as_ptr().cast(), self.words * 8) };
        // munmap of a mapping we made cannot fail in a way we could act on.
        let _ = result;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::sync::atomic::Ordering;

    #[test]
    fn stores_reach_the_file_and_file_writes_reach_the_words() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[0u8; 24]).unwrap();
        let map = SharedWords::map(&file, 3).unwrap();
        assert_eq!(map.words().len(), 3);
        map.words()[1].store(0x0102_0304_0506_0708, Ordering::Release);
        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(&back[8..16], &0x0102_0304_0506_0708u64.to_ne_bytes());

        file.seek(io::SeekFrom::Start(16)).unwrap();
        file.write_all(&7u64.to_ne_bytes()).unwrap();
        assert_eq!(map.words()[2].load(Ordering::Acquire), 7);
    }

    #[test]
    fn short_files_and_empty_mappings_are_refused() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[0u8; 15]).unwrap();
        let e = SharedWords::map(&file, 2).unwrap_err();
        assert!(e.to_string().contains("shorter"), "{e}");
        assert!(SharedWords::map(&file, 0).is_err());
    }

    #[test]
    fn read_only_files_cannot_be_mapped_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        std::fs::write(&path, [0u8; 8]).unwrap();
        let ro = File::open(&path).unwrap();
        assert!(SharedWords::map(&ro, 1).is_err());
    }
}
