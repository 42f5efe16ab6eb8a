//! Which socket values have already been tried for association with the port.
//!
//! A file object's completion port is set once in its life: associating a socket that was
//! registered before (or that another runtime bound) always fails, and costs a kernel call (a
//! wineserver round trip under Wine) to learn it. This set remembers every registered socket value
//! whose association was attempted, so the next registration of that value goes straight to the
//! helper handle. It also skips proving that the value's base is a socket (two more round trips
//! under Wine): the helper poll refuses a non-socket, and the proof is made only then, to word the
//! error.
//!
//! The set is only a hint, and it is safe to be wrong in one direction: when the value is closed
//! and reused by a new socket, that socket is polled through the helper (which works for every
//! socket, whatever its layered providers) instead of directly. It is never used to *skip* to a
//! socket-direct poll, which would be wrong for a socket that is not associated with this port. (The reactor also ignores it when the value is
//! still registered, since there a successful association is how a recycled handle is detected.)
//! Because it cannot tell the old socket from a new one on the same value, the reactor caps how
//! many live registrations may rest on it (`HINT_LIMIT`), so recycled values cannot pile new
//! sockets onto the helper handle.
//!
//! Values are small in practice: Windows handle values are multiples of 4, Linux descriptors are
//! consecutive. One bit per possible value below `LIMIT` keeps 10,000 sockets in a few
//! kilobytes. Larger values (and, on Windows, values that are not multiples of 4) are not
//! remembered: their registration just makes the association call. Each remembered value has a
//! bit of its own: a neighbour never reads as associated.

use crate::kernel::RawSock;

/// Values at or above this are not remembered (the set then tops out at 128 KiB on Windows,
/// 512 KiB on Linux).
const LIMIT: RawSock = 1 << 22;

/// The step between handle values: 4 on Windows, 1 for Linux's descriptors.
const GRANULE: RawSock = if cfg!(windows) { 4 } else { 1 };

#[derive(Debug, Default)]
pub(crate) struct Bound {
    bits: Vec<u64>,
}

impl Bound {
    fn position(value: RawSock) -> Option<(usize, u64)> {
        if value >= LIMIT || !value.is_multiple_of(GRANULE) {
            return None;
        }
        let slot = (value / GRANULE) as usize; // fits: value < LIMIT
        Some((slot / 64, 1 << (slot % 64)))
    }

    /// True if an association of `value` was attempted before.
    pub fn contains(&self, value: RawSock) -> bool {
        Self::position(value)
            .and_then(|(word, bit)| self.bits.get(word).map(|w| w & bit != 0))
            .unwrap_or(false)
    }

    /// Remember that `value` was associated (or found bound elsewhere).
    pub fn insert(&mut self, value: RawSock) {
        if let Some((word, bit)) = Self::position(value) {
            if self.bits.len() <= word {
                self.bits.resize(word + 1, 0);
            }
            self.bits[word] |= bit;
        }
    }

    /// Heap bytes of the bit set.
    pub fn heap_bytes(&self) -> usize {
        self.bits.capacity() * size_of::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_small_values_only_and_exactly() {
        let mut b = Bound::default();
        assert!(!b.contains(0x104));
        b.insert(0x104);
        assert!(b.contains(0x104));
        assert!(
            !b.contains(0x100) && !b.contains(0x108),
            "neighbours untouched"
        );
        b.insert(LIMIT + 4);
        assert!(!b.contains(LIMIT + 4), "large values are not remembered");
        assert!(
            b.heap_bytes() < 64,
            "{} bytes for one small value",
            b.heap_bytes()
        );
        b.insert(LIMIT - 4);
        assert!(b.contains(LIMIT - 4));
        assert!(b.heap_bytes() <= (LIMIT / GRANULE / 8) as usize);
    }

    /// Consecutive values (Linux descriptors) each have a bit of their own: remembering 9 says
    /// nothing of 8 or 10 (it once did, with a step of 4 for every platform).
    #[test]
    fn neighbours_are_never_taken_for_each_other() {
        let mut b = Bound::default();
        b.insert(9 * GRANULE);
        assert!(b.contains(9 * GRANULE));
        assert!(!b.contains(8 * GRANULE) && !b.contains(10 * GRANULE));
        if GRANULE > 1 {
            assert!(
                !b.contains(9 * GRANULE + 1),
                "not a handle value: not remembered"
            );
        }
    }
}
