//! The registration map: socket value → slot index.
//!
//! Socket values are kernel handle values, which in practice fit in 32 bits. Those are kept as
//! `u32` keys, so an entry takes 8 bytes instead of 16 (at 10,000 registrations that is about
//! 13 bytes per socket less). A value that does not fit goes, unchanged, into a second map that
//! otherwise stays empty and allocates nothing. Nothing is truncated: every value is stored
//! exactly.

use crate::kernel::RawSock;
use std::collections::HashMap;

#[derive(Debug, Default)]
pub(crate) struct SockMap {
    narrow: HashMap<u32, u32>,
    wide: HashMap<RawSock, u32>,
}

impl SockMap {
    pub fn get(&self, socket: RawSock) -> Option<u32> {
        match u32::try_from(socket) {
            Ok(k) => self.narrow.get(&k).copied(),
            Err(_) => self.wide.get(&socket).copied(),
        }
    }

    pub fn contains(&self, socket: RawSock) -> bool {
        self.get(socket).is_some()
    }

    pub fn insert(&mut self, socket: RawSock, index: u32) {
        match u32::try_from(socket) {
            Ok(k) => self.narrow.insert(k, index),
            Err(_) => self.wide.insert(socket, index),
        };
    }

    pub fn remove(&mut self, socket: RawSock) -> Option<u32> {
        match u32::try_from(socket) {
            Ok(k) => self.narrow.remove(&k),
            Err(_) => self.wide.remove(&socket),
        }
    }

    pub fn len(&self) -> usize {
        self.narrow.len() + self.wide.len()
    }

    /// Empties the map, returning the slot indices.
    pub fn drain_indices(&mut self) -> Vec<u32> {
        let narrow = self.narrow.drain().map(|(_, i)| i);
        narrow.chain(self.wide.drain().map(|(_, i)| i)).collect()
    }

    /// Heap bytes of the two tables (entries plus one control byte per bucket).
    pub fn heap_bytes(&self) -> usize {
        self.narrow.capacity() * (size_of::<(u32, u32)>() + 1)
            + self.wide.capacity() * (size_of::<(RawSock, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_and_wide_values_are_kept_apart_and_exact() {
        let mut m = SockMap::default();
        let wide = (1u64 << 32) | 8;
        m.insert(8, 1);
        m.insert(wide, 2);
        assert_eq!((m.get(8), m.get(wide), m.len()), (Some(1), Some(2), 2));
        assert!(!m.contains(12));
        assert_eq!(m.remove(wide), Some(2));
        assert_eq!(
            m.get(8),
            Some(1),
            "removing the wide value leaves its low bits' twin alone"
        );
        m.insert(wide, 3);
        let mut all = m.drain_indices();
        all.sort_unstable();
        assert_eq!((all, m.len()), (vec![1, 3], 0));
    }
}
