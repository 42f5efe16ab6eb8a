//! Which helper handle each helper-path registration polls through.
//!
//! On Windows a cancel on a `\Device\Afd` handle costs more the more requests the handle holds
//! (docs/design.md §6; mio, polling and wepoll cap their groups at 32 too), so the reactor spreads
//! helper-path registrations over a group of handles, at most [`HELPER_GROUP`] on each. A
//! registration keeps its handle until its slot is released (a zombie's poll stays on it until its
//! packet is dequeued), so the count bounds the polls a handle holds.

use crate::kernel::HELPER_GROUP;

#[derive(Debug, Default)]
pub(crate) struct HelperGroups {
    /// Registrations per helper handle.
    load: Vec<u32>,
    /// No handle below this one has room.
    first_open: usize,
}

impl HelperGroups {
    /// A helper handle with room for one more registration (a new one when all are full).
    pub fn acquire(&mut self) -> u32 {
        let found = self.load[self.first_open..]
            .iter()
            .position(|&n| (n as usize) < HELPER_GROUP)
            .map(|i| i + self.first_open);
        let n = found.unwrap_or_else(|| {
            self.load.push(0);
            self.load.len() - 1
        });
        self.load[n] += 1;
        self.first_open = n;
        n as u32
    }

    /// A registration on handle `n` is gone.
    pub fn release(&mut self, n: u32) {
        let n = n as usize;
        if let Some(load) = self.load.get_mut(n) {
            *load = load.saturating_sub(1);
            self.first_open = self.first_open.min(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_fill_to_the_cap_and_reuse_freed_places() {
        let mut g = HelperGroups::default();
        let ids: Vec<u32> = (0..HELPER_GROUP * 2 + 1).map(|_| g.acquire()).collect();
        assert!(ids[..HELPER_GROUP].iter().all(|&n| n == 0));
        assert!(ids[HELPER_GROUP..2 * HELPER_GROUP].iter().all(|&n| n == 1));
        assert_eq!(ids[2 * HELPER_GROUP], 2);
        g.release(0);
        assert_eq!(g.acquire(), 0, "a freed place on the first handle");
        assert_eq!(g.acquire(), 2);
    }
}
