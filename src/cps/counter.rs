//! A sensor's reading counter (its nonce) that never repeats, even across a
//! crash or restart.
//!
//! The file holds one 8-byte big-endian mark: every value handed out so far,
//! by this process or an earlier one, is below it. Values are handed out from
//! the mark read at [`NonceCounter::open`], and the mark is moved [`RESERVE`]
//! ahead, written and synced, before the first value beyond the old one is
//! handed out. A crash at any point can skip values, never repeat one.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// How many values one write of the mark reserves.
pub const RESERVE: u64 = 1024;

/// Hands out strictly increasing values, all below `u64::MAX`.
#[derive(Debug)]
pub struct NonceCounter {
    file: File,
    /// The next value to hand out.
    next: u64,
    /// The mark on disk: values below it may be handed out.
    reserved: u64,
}

impl NonceCounter {
    /// Reads the mark from `file` (opened read-write by the caller; empty
    /// means 0) and reserves the first values.
    ///
    /// Fails with `InvalidData` if the file is neither empty nor 8 bytes long,
    /// and with an error if the counter is exhausted or the mark cannot be
    /// written and synced.
    pub fn open(file: File) -> io::Result<NonceCounter> {
        let mark = match file.metadata()?.len() {
            0 => 0,
            8 => {
                let mut b = [0u8; 8];
                file.read_exact_at(&mut b, 0)?;
                u64::from_be_bytes(b)
            }
            len => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("nonce counter file is {len} bytes, expected 0 or 8"),
                ));
            }
        };
        let mut counter = NonceCounter {
            file,
            next: mark,
            reserved: mark,
        };
        counter.reserve()?;
        Ok(counter)
    }

    /// The next value [`next`](Self::next) will hand out.
    pub fn peek(&self) -> u64 {
        self.next
    }

    /// Hands out the next value, first extending the reservation on disk if
    /// it is used up. Fails once `u64::MAX` is reached, or if the mark cannot
    /// be written and synced (the value is then not handed out).
    #[allow(clippy::should_implement_trait)] // fallible: not an Iterator
    pub fn next(&mut self) -> io::Result<u64> {
        if self.next == self.reserved {
            self.reserve()?;
        }
        let value = self.next;
        self.next += 1;
        Ok(value)
    }

    /// Moves the mark on disk up to [`RESERVE`] past the current one.
    fn reserve(&mut self) -> io::Result<()> {
        let mark = self.reserved.saturating_add(RESERVE);
        if mark == self.reserved {
            return Err(io::Error::other(
                "nonce counter exhausted: every value below u64::MAX is reserved",
            ));
        }
        self.file.write_all_at(&mark.to_be_bytes(), 0)?;
        self.file.sync_data()?;
        self.reserved = mark;
        Ok(())
    }
}
