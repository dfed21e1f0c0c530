//! Anti-replay sliding window over reading counters (as in RFC 4303 §3.4.3
//! and RFC 6347 §4.1.2.6), [`WIDTH`] counters wide.
//!
//! Once a counter has been accepted the window covers
//! `highest - (WIDTH - 1) ..= highest` (from 0 while `highest < WIDTH - 1`).
//! A counter above the window is new; inside it, new unless already accepted;
//! below it, too old to tell. Before any accept the window covers nothing and
//! every counter is new.

/// Counters the window remembers.
pub const WIDTH: u64 = 128;

/// Why [`ReplayWindow::check`] rejects a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// Already accepted.
    #[error("counter already accepted, expected a new one")]
    Duplicate,
    /// Below the window: whether it was seen is forgotten.
    #[error("counter is below the replay window, expected one of the last {WIDTH}")]
    TooOld,
}

/// Which counters near the highest accepted one have been accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// The highest accepted counter; `None` until the first accept.
    highest: Option<u64>,
    /// Bit `i` is set when counter `low + i` was accepted, `low` being the
    /// window's lowest counter; no bit above `highest - low` is set.
    seen: u128,
}

impl ReplayWindow {
    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u64> {
        self.highest
    }

    /// Whether `counter` would be new. Changes nothing: verify the frame
    /// first, then [`accept`](Self::accept) it.
    pub fn check(&self, counter: u64) -> Result<(), Replay> {
        let Some(highest) = self.highest else {
            return Ok(());
        };
        let low = low(highest);
        if counter > highest {
            Ok(())
        } else if counter < low {
            Err(Replay::TooOld)
        } else if (self.seen >> (counter - low)) & 1 == 1 {
            Err(Replay::Duplicate)
        } else {
            Ok(())
        }
    }

    /// Records `counter` as accepted, sliding the window up if it is above
    /// the highest, and returns the counters that slid out never accepted.
    /// A counter that [`check`](Self::check) rejects changes nothing and
    /// reports nothing. The work is bounded by [`WIDTH`] whatever the jump.
    pub fn accept(&mut self, counter: u64) -> Missed {
        let Some(highest) = self.highest else {
            self.highest = Some(counter);
            self.seen = 1 << (counter - low(counter));
            return Missed::default();
        };
        let old_low = low(highest);
        if counter < old_low {
            return Missed::default();
        }
        if counter <= highest {
            self.seen |= 1 << (counter - old_low);
            return Missed::default();
        }
        let new_low = low(counter);
        let shift = new_low - old_low;
        // The old window's counters (positions 0..=highest - old_low) below
        // new_low (positions below shift) that were never accepted.
        let in_old_window = mask_below(highest - old_low + 1);
        let leaving = mask_below(shift);
        let missed = Missed {
            base: old_low,
            bits: !self.seen & in_old_window & leaving,
            skipped_beyond: new_low.saturating_sub(highest + 1),
        };
        self.seen = self.seen.checked_shr(bits_u32(shift)).unwrap_or(0);
        self.seen |= 1 << (counter - new_low);
        self.highest = Some(counter);
        missed
    }
}

/// The lowest counter of the window whose highest is `highest`.
fn low(highest: u64) -> u64 {
    highest.saturating_sub(WIDTH - 1)
}

/// Bits `0..n` set (all of them once `n >= 128`).
fn mask_below(n: u64) -> u128 {
    match 1u128.checked_shl(bits_u32(n)) {
        Some(bit) => bit - 1,
        None => u128::MAX,
    }
}

/// `n` as a shift amount; anything too large for `u32` is too large to shift.
fn bits_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Counters that slid out of the window in one [`ReplayWindow::accept`]
/// without ever being accepted: `[low before, low after)` minus the accepted.
///
/// Those that were inside the old window (at most [`WIDTH`]) are yielded in
/// increasing order; those above the old highest, which a jump of more than
/// `WIDTH` skips without them ever entering the window, are only counted in
/// [`skipped_beyond`](Self::skipped_beyond).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Missed {
    /// The counter of bit 0.
    base: u64,
    /// Bit `i` set: counter `base + i` is missed and not yet yielded.
    bits: u128,
    /// Missed counters above the old window.
    skipped_beyond: u64,
}

impl Missed {
    /// How many missed counters lay beyond the old window (not yielded).
    pub fn skipped_beyond(&self) -> u64 {
        self.skipped_beyond
    }

    /// All missed counters: those not yet yielded plus those skipped beyond.
    pub fn total(&self) -> u64 {
        u64::from(self.bits.count_ones()).saturating_add(self.skipped_beyond)
    }
}

impl Iterator for Missed {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.bits == 0 {
            return None;
        }
        let i = self.bits.trailing_zeros();
        self.bits &= self.bits - 1;
        Some(self.base + u64::from(i))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.bits.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Missed {}
