//! Heap-pinned per-socket states (docs/design.md §2, §3).
//!
//! States live in chunks of [`CHUNK`] slots that never move and are freed only when the reactor is
//! torn down with nothing in flight. A slot's address is its socket's completion key, and stays
//! dereferenceable for the reactor's whole life even after the slot is released and reused, so a
//! late packet can never touch freed memory; the 64-bit generation (which also encodes the slot
//! index) tells a packet for the current incarnation from one for a previous one.
//!
//! # Who owns what
//! Each slot is `repr(C)`: the [`PollBlock`] (status block + `AFD_POLL_INFO`) first, then the
//! reactor's bookkeeping ([`Meta`]). While the slot's poll is in flight
//! (`meta.machine.poll.in_flight()`), the block belongs to the kernel: the reactor takes only its
//! address, never a reference, and reads it only after the poll's packet has been dequeued. The
//! kernel never touches `meta`.

use crate::afd::PollEvents;
use crate::kernel::{PollBlock, PollVia, RawSock};
use crate::reactor::event::{Interest, Token};
use crate::state::{Machine, Mode};
use std::io;
use std::ptr::{self, NonNull};

/// Slots per chunk.
pub(crate) const CHUNK: usize = 256;
/// Bits of a generation that hold the slot index.
pub(crate) const INDEX_BITS: u32 = 24;
/// The most slots a reactor can have (registrations plus zombies).
pub(crate) const MAX_SLOTS: usize = 1 << INDEX_BITS;

/// The reactor's bookkeeping for one registration.
#[derive(Debug)]
pub(crate) struct Meta {
    /// `(counter << INDEX_BITS) | index`; 0 while the slot is vacant.
    pub generation: u64,
    /// The socket value the user registered (the key of the registration map). Polls name it and
    /// are issued on it — unless a layered provider stands above it: then they name its base
    /// socket, kept in the reactor's `bases` (rare, and the slot stays small without it).
    pub socket: RawSock,
    pub token: Token,
    pub interest: Interest,
    /// The helper handle its polls are issued on, or [`SOCKET_DIRECT`].
    pub helper: u32,
    /// True if registering called associate, so the socket's binding is known: with this port
    /// (`via` is `Socket`) or with another (`Helper`). False when the call was skipped because the
    /// value was associated before (the `bound` hint): then the socket may be unassociated, and a
    /// later successful association does not prove the value was recycled.
    pub binding_known: bool,
    /// True while the slot is in the reactor's update queue.
    pub queued: bool,
    /// True from `Pool::alloc` until `Pool::release`: the slot belongs to the reactor, filled or
    /// not. A slot that is not allocated is on the free list (or was never handed out).
    pub allocated: bool,
    /// An event of this registration waits in the stash: its re-arm waits until that event is
    /// delivered. So a registration never has two events outstanding (none is reported twice in
    /// one poll), and an always-ready socket cannot pile events into the stash.
    pub held: bool,
    pub machine: Machine,
}

/// `Meta::helper` of a registration polled on its own socket.
pub(crate) const SOCKET_DIRECT: u32 = u32::MAX;

impl Meta {
    /// Where its polls are issued.
    pub fn via(&self) -> PollVia {
        match self.helper {
            SOCKET_DIRECT => PollVia::Socket,
            n => PollVia::Helper(n),
        }
    }
}

impl Meta {
    const fn vacant() -> Self {
        Self {
            generation: 0,
            socket: 0,
            token: Token(0),
            interest: Interest::NONE,
            helper: SOCKET_DIRECT,
            binding_known: true,
            queued: false,
            allocated: false,
            held: false,
            machine: Machine::new(PollEvents::NONE, Mode::Level),
        }
    }
}

#[repr(C)]
pub(crate) struct Slot {
    /// Kernel-owned while a poll is in flight.
    block: PollBlock,
    meta: Meta,
}

/// The pool of pinned slots.
#[derive(Debug, Default)]
pub(crate) struct Pool {
    /// Each points at `CHUNK` slots from `Box<[Slot]>::into_raw`.
    chunks: Vec<NonNull<Slot>>,
    /// Slots ever created.
    len: usize,
    /// Released slot indices, reused last-in first-out.
    free: Vec<u32>,
}

impl Pool {
    /// Take a vacant slot (a released one first). Its meta is vacant but for `allocated`; the
    /// caller fills it.
    pub fn alloc(&mut self) -> io::Result<u32> {
        let index = self.take()?;
        self.meta_mut(index).expect("taken slot exists").allocated = true;
        Ok(index)
    }

    fn take(&mut self) -> io::Result<u32> {
        if let Some(index) = self.free.pop() {
            return Ok(index);
        }
        if self.len == MAX_SLOTS {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "afd-reactor: 16,777,216 registrations (with zombies) is the most one reactor holds",
            ));
        }
        if self.len == self.chunks.len() * CHUNK {
            let chunk: Box<[Slot]> = (0..CHUNK)
                .map(|_| Slot {
                    block: PollBlock::default(),
                    meta: Meta::vacant(),
                })
                .collect();
            let raw = Box::into_raw(chunk).cast::<Slot>();
            // SAFETY: Box::into_raw never returns null.
            self.chunks.push(unsafe { NonNull::new_unchecked(raw) });
        }
        self.len += 1;
        Ok((self.len - 1) as u32)
    }

    /// Return an allocated slot: it becomes vacant (generation 0) and reusable.
    ///
    /// Refuses — in every build, since a violation would hand one block to two registrations —
    /// a slot that is not allocated (released twice) or whose poll is in flight (the kernel holds
    /// its block): then nothing changes and it returns false.
    #[must_use = "a refused release is a reactor bug to report"]
    pub fn release(&mut self, index: u32) -> bool {
        let Some(meta) = self.meta_mut(index) else {
            return false;
        };
        if !meta.allocated || meta.machine.poll.in_flight() {
            return false;
        }
        *meta = Meta::vacant();
        self.free.push(index);
        true
    }

    fn slot(&self, index: u32) -> Option<NonNull<Slot>> {
        let i = index as usize;
        if i >= self.len {
            return None;
        }
        // SAFETY: i < len, so chunk i / CHUNK exists and holds CHUNK slots; the offset is in bounds.
        Some(unsafe { self.chunks[i / CHUNK].add(i % CHUNK) })
    }

    /// The bookkeeping of slot `index` (vacant or not), if the slot exists.
    pub fn meta(&self, index: u32) -> Option<&Meta> {
        // SAFETY: the chunk lives as long as the pool; the kernel never writes `meta`, and this
        // shared borrow is tied to `&self`, so no `&mut` to it can exist at the same time.
        self.slot(index).map(|s| unsafe { &(*s.as_ptr()).meta })
    }

    /// Mutable bookkeeping of slot `index`.
    pub fn meta_mut(&mut self, index: u32) -> Option<&mut Meta> {
        // SAFETY: as in `meta`; `&mut self` makes this the only reference into the pool's metas.
        self.slot(index).map(|s| unsafe { &mut (*s.as_ptr()).meta })
    }

    /// The address of slot `index`'s poll block (its completion key for socket-direct polls). Only
    /// the address is taken; no reference to the block is created.
    pub fn block(&self, index: u32) -> Option<NonNull<PollBlock>> {
        // SAFETY: `slot` returned an in-bounds slot pointer; `&raw mut` takes the field address
        // without creating a reference.
        self.slot(index)
            .map(|s| unsafe { NonNull::new_unchecked(&raw mut (*s.as_ptr()).block) })
    }

    /// Number of slots created so far (live, zombie or vacant).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held by the pool's chunks and free list.
    pub fn heap_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * size_of::<Slot>() + self.free.capacity() * 4
    }

    /// Forget every chunk without freeing it: for when the kernel may still write some block.
    pub fn leak(&mut self) {
        self.chunks.clear();
        self.len = 0;
        self.free.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for chunk in self.chunks.drain(..) {
            // SAFETY: each chunk came from Box::<[Slot]>::into_raw with CHUNK elements and is freed
            // once, here. The reactor calls `leak` instead whenever a poll may still be in flight.
            drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(chunk.as_ptr(), CHUNK)) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_slots_are_reused_last_in_first_out() {
        let mut pool = Pool::default();
        let a = pool.alloc().unwrap();
        let b = pool.alloc().unwrap();
        assert_eq!((a, b), (0, 1));
        pool.meta_mut(a).unwrap().generation = 7;
        assert!(pool.release(a));
        assert_eq!(pool.meta(a).unwrap().generation, 0, "vacant after release");
        assert_eq!(pool.alloc().unwrap(), a);
    }

    #[test]
    fn a_vacant_slot_or_one_the_kernel_holds_is_never_released() {
        let mut pool = Pool::default();
        let a = pool.alloc().unwrap();
        assert!(pool.release(a));
        assert!(!pool.release(a), "released twice");
        assert!(!pool.release(99), "never allocated");
        let b = pool.alloc().unwrap();
        assert_eq!(b, a);
        let m = pool.meta_mut(b).unwrap();
        m.machine.poll = crate::state::PollState::Pending {
            mask: PollEvents::RECEIVE,
        };
        assert!(!pool.release(b), "the kernel holds its block");
        let (c, d) = (pool.alloc().unwrap(), pool.alloc().unwrap());
        assert!(c != b && d != b && c != d, "one slot handed out twice");
    }

    #[test]
    fn a_slot_stays_within_the_heap_budget() {
        // 128 heap bytes per registered socket in all, with the registration map's share.
        assert!(
            size_of::<Slot>() <= 104,
            "a slot takes {} bytes",
            size_of::<Slot>()
        );
    }

    #[test]
    fn slots_never_move_as_the_pool_grows() {
        let mut pool = Pool::default();
        let first = pool.alloc().unwrap();
        let addr = pool.block(first).unwrap();
        for _ in 0..CHUNK * 2 {
            pool.alloc().unwrap();
        }
        assert_eq!(pool.block(first).unwrap(), addr);
        assert!(pool.block(pool.len() as u32).is_none());
    }
}
