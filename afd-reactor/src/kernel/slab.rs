//! The table each kernel keeps its waits in: a [`WaitId`] is an index into it, and a freed index
//! is reused by the next wait.

use super::WaitId;
use std::io;

/// Waits by [`WaitId`].
#[derive(Debug)]
pub(crate) struct WaitSlab<T> {
    slots: Vec<Option<T>>,
    /// Indices of free slots.
    free: Vec<u32>,
}

impl<T> Default for WaitSlab<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> WaitSlab<T> {
    /// Keep `wait`; returns its id.
    ///
    /// # Errors
    /// `OutOfMemory` past 2^32 waits at once.
    pub(crate) fn insert(&mut self, wait: T) -> io::Result<WaitId> {
        if let Some(index) = self.free.pop() {
            self.slots[index as usize] = Some(wait);
            return Ok(WaitId(index));
        }
        let index = u32::try_from(self.slots.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::OutOfMemory, "afd-reactor: too many waits")
        })?;
        self.slots.push(Some(wait));
        Ok(WaitId(index))
    }

    /// The wait at `index`, if one is open there.
    pub(crate) fn slot_mut(&mut self, index: u32) -> Option<&mut T> {
        self.slots.get_mut(index as usize)?.as_mut()
    }

    /// The open wait `id`.
    ///
    /// # Panics
    /// If `id` is not open: a bug of the caller.
    #[track_caller]
    pub(crate) fn get_mut(&mut self, id: WaitId) -> &mut T {
        match self.slot_mut(id.0) {
            Some(wait) => wait,
            None => panic!("afd-reactor bug: {id:?} is not an open wait"),
        }
    }

    /// Take the open wait `id` out; its index is free again.
    ///
    /// # Panics
    /// If `id` is not open: a bug of the caller.
    #[track_caller]
    pub(crate) fn remove(&mut self, id: WaitId) -> T {
        let wait = self
            .slots
            .get_mut(id.0 as usize)
            .and_then(Option::take)
            .unwrap_or_else(|| panic!("afd-reactor bug: {id:?} is not an open wait"));
        self.free.push(id.0);
        wait
    }

    /// The open waits, with their indices, in index order.
    #[cfg(feature = "test-rig")]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, w)| w.as_ref().map(|w| (i as u32, w)))
    }
}
