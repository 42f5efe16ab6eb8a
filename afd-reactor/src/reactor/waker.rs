//! The cross-thread wake-up (docs/design.md §4): `NtSetIoCompletion` under [`WAKE_KEY`], coalesced.
//!
//! [`WAKE_KEY`]: crate::kernel::WAKE_KEY

use crate::kernel::Post;
use crate::reactor::event::Token;
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// A wake packet is queued (set just before it is posted): further wakes are absorbed by it.
const QUEUED: u8 = 1;
/// The reactor is gone: wakes fail and post nothing.
const CLOSED: u8 = 2;
/// A post failed: a wake is owed, and the loop delivers it without a packet.
const OWED: u8 = 4;
/// A thread is posting: other wakes wait for the outcome before they return (a wake returns
/// `Ok` only once a packet is known to be queued).
const POSTING: u8 = 8;

/// What every waker of one reactor shares with it, beyond its own state.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Slots whose last user handle was dropped, for the reactor to release.
    dropped: Mutex<Vec<u32>>,
    /// Some waker has [`OWED`] set.
    owed: AtomicBool,
}

pub(crate) struct WakerShared {
    poster: Box<dyn Post>,
    registry: Arc<Registry>,
    /// `QUEUED | CLOSED | OWED | POSTING` bits. Every wake that returns `Ok` and every packet is a
    /// read-modify-write of this one location, so a wake absorbed by a queued packet is ordered
    /// before the reactor's clearing of `QUEUED`: what the waking thread wrote before `wake` is
    /// visible once that packet's event is returned, and a wake that comes after the clearing
    /// posts a new packet.
    state: AtomicU8,
    /// Live [`Waker`] handles. The reactor releases the slot only at 0, and only the reactor's
    /// thread can make a handle from 0 (by `Reactor::waker`), so 0 seen there stays 0.
    handles: AtomicUsize,
    token: Token,
    /// The packet's ApcContext: `generation << 32 | slot`, the generation kept to 31 bits so the
    /// id never carries [`POLL_TAG`](crate::kernel::POLL_TAG), which only polls may carry.
    id: usize,
    calls: AtomicU64,
    posts: AtomicU64,
}

impl WakerShared {
    fn slot(&self) -> u32 {
        self.id as u32
    }
}

/// Wakes a [`Reactor`](crate::Reactor) blocked in `poll` from any thread. `Send + Sync + Clone`.
///
/// The wake is an `NtSetIoCompletion` packet under a key no socket state can have. Wakes are
/// coalesced: however many threads call [`Waker::wake`], at most one wake packet is queued until
/// the reactor dequeues it; the poll that dequeues it returns an event with
/// [`Event::is_wake`](crate::Event::is_wake) and this waker's token. A wake is never lost: after
/// `wake` returns `Ok`, a wake packet is queued, and some poll returns a wake event — the one in
/// progress, or the next. (A wake made while another thread is posting waits for that post; if
/// the kernel refuses it, the waiting wake posts itself. The `wake` whose post was refused
/// returns the error, and its wake is owed: the reactor delivers it the next time its loop
/// runs.)
///
/// The reactor keeps a waker while any handle to it lives, and frees it once the last one is
/// dropped; asking [`Reactor::waker`](crate::Reactor::waker) for the same token while a handle
/// lives returns the same waker.
///
/// A `Waker` that outlives its reactor is harmless: `wake` then fails with
/// [`io::ErrorKind::NotConnected`] and makes no call (the port it would post to is kept open by
/// the waker, so no call can ever reach a closed or reused handle).
///
/// # Examples
/// ```
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Events, Reactor, Token};
/// use std::time::Duration;
///
/// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
/// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
/// let waker = reactor.waker(Token(99))?;
/// std::thread::spawn(move || waker.wake().unwrap());
/// let mut events = Events::with_capacity(8);
/// reactor.poll(&mut events, None)?; // returns once woken
/// assert!(events.iter().any(|e| e.is_wake() && e.token() == Token(99)));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Waker {
    shared: Arc<WakerShared>,
}

impl Waker {
    fn new(shared: &Arc<WakerShared>) -> Self {
        shared.handles.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: Arc::clone(shared),
        }
    }

    /// Wake the reactor: the `poll` in progress (or the next one) returns an event with this
    /// waker's token and [`Event::is_wake`](crate::Event::is_wake).
    ///
    /// # Errors
    /// [`io::ErrorKind::NotConnected`] if the reactor has shut down; the kernel's error if the
    /// packet could not be posted (out of quota). The wake is not lost then: it is owed, and the
    /// reactor delivers it the next time its loop runs (a poll already waiting is not ended by
    /// it); the next `wake` tries to post again.
    pub fn wake(&self) -> io::Result<()> {
        let s = &self.shared;
        s.calls.fetch_add(1, Ordering::Relaxed);
        let mut cur = s.state.load(Ordering::Acquire);
        loop {
            if cur & CLOSED != 0 {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "afd-reactor: the reactor of this waker has shut down",
                ));
            }
            if cur & POSTING != 0 {
                // Another thread is posting: its outcome decides whether this wake is covered.
                std::thread::yield_now();
                cur = s.state.load(Ordering::Acquire);
                continue;
            }
            let next = if cur & QUEUED != 0 {
                cur // coalesced into the packet queued: a read-modify-write that changes nothing
            } else {
                cur | QUEUED | POSTING
            };
            match s
                .state
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if next == cur => return Ok(()),
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        // `QUEUED` is set before the post: the reactor may dequeue the packet (and clear it)
        // before this thread gets here again.
        match s.poster.post_wake(s.id) {
            Ok(()) => {
                s.state.fetch_and(!POSTING, Ordering::AcqRel);
                s.posts.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // No packet: wakes waiting on this post try again themselves; this one is owed,
                // and the loop delivers it the next time it runs.
                let mut v = s.state.load(Ordering::Acquire);
                loop {
                    let owed = (v & !(QUEUED | POSTING)) | OWED;
                    match s.state.compare_exchange_weak(
                        v,
                        owed,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => break,
                        Err(now) => v = now,
                    }
                }
                s.registry.owed.store(true, Ordering::Release);
                Err(e)
            }
        }
    }
}

impl Clone for Waker {
    fn clone(&self) -> Self {
        Self::new(&self.shared)
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        let s = &self.shared;
        if s.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            s.registry
                .dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(s.slot());
        }
    }
}

impl fmt::Debug for Waker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Waker")
            .field("token", &self.shared.token)
            .field("state", &self.shared.state.load(Ordering::Relaxed))
            .finish()
    }
}

/// A waker slot's generation stays below bit 31, so `generation << 32` never reaches bit 63.
const GENERATION_MASK: u32 = u32::MAX >> 1;

/// A slot of the waker table.
struct Slot {
    shared: Option<Arc<WakerShared>>,
    /// Bumped on each release, so a packet of a released waker is recognised (31 bits: see
    /// `WakerShared::id`).
    generation: u32,
    /// The poll (the reactor's poll counter) in which this waker last put an event in the user's
    /// `Events`: wakes are reported once per poll.
    reported_in: u64,
    /// A wake event of this waker waits in the reactor's stash.
    stashed: bool,
}

/// The reactor's wakers, by slot and by token.
#[derive(Default)]
pub(crate) struct WakerTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_token: HashMap<Token, u32>,
    registry: Arc<Registry>,
    /// Dropped wakers whose packet (or owed wake) was still pending at the last sweep.
    deferred: Vec<u32>,
    /// Calls and posts of wakers already released.
    retired_calls: u64,
    retired_posts: u64,
}

impl fmt::Debug for WakerTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WakerTable")
            .field("live", &self.by_token.len())
            .finish_non_exhaustive()
    }
}

impl WakerTable {
    /// A handle to the waker for `token`, made with `poster()` if there is none.
    pub fn get(&mut self, token: Token, poster: impl FnOnce() -> Box<dyn Post>) -> Waker {
        if let Some(&slot) = self.by_token.get(&token) {
            let shared = self.slots[slot as usize]
                .shared
                .as_ref()
                .expect("live slot");
            return Waker::new(shared);
        }
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(Slot {
                shared: None,
                generation: 0,
                reported_in: 0,
                stashed: false,
            });
            (self.slots.len() - 1) as u32
        });
        let entry = &mut self.slots[slot as usize];
        let shared = Arc::new(WakerShared {
            poster: poster(),
            registry: Arc::clone(&self.registry),
            state: AtomicU8::new(0),
            handles: AtomicUsize::new(0),
            token,
            id: ((entry.generation as usize) << 32) | slot as usize,
            calls: AtomicU64::new(0),
            posts: AtomicU64::new(0),
        });
        let waker = Waker::new(&shared);
        entry.shared = Some(shared);
        self.by_token.insert(token, slot);
        waker
    }

    fn live(&self, id: usize) -> Option<&Arc<WakerShared>> {
        let slot = self.slots.get(id as u32 as usize)?;
        let shared = slot.shared.as_ref()?;
        (shared.id == id).then_some(shared)
    }

    /// The reactor dequeued a wake packet with ApcContext `id`: the waker's id again, if the
    /// waker still lives and the reactor is running; the next wake posts again.
    pub fn on_packet(&self, id: usize) -> Option<usize> {
        let shared = self.live(id)?;
        let before = shared.state.fetch_and(!QUEUED, Ordering::AcqRel);
        (before & CLOSED == 0).then_some(id)
    }

    /// Ids of wakers with a wake owed after a failed post (clearing it), if any post failed.
    pub fn take_owed(&self) -> Vec<usize> {
        if !self.registry.owed.swap(false, Ordering::AcqRel) {
            return Vec::new();
        }
        self.slots
            .iter()
            .filter_map(|slot| slot.shared.as_ref())
            .filter(|s| s.state.fetch_and(!OWED, Ordering::AcqRel) & (OWED | CLOSED) == OWED)
            .map(|s| s.id)
            .collect()
    }

    /// Release the wakers whose last handle was dropped (and whose wake, if any, was delivered).
    pub fn sweep(&mut self) {
        let mut candidates = std::mem::take(&mut self.deferred);
        candidates.append(
            &mut self
                .registry
                .dropped
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for slot in candidates {
            let Some(entry) = self.slots.get_mut(slot as usize) else {
                continue;
            };
            let Some(shared) = entry.shared.as_ref() else {
                continue; // released already (dropped twice in a row: listed twice)
            };
            if shared.handles.load(Ordering::Acquire) != 0 {
                continue; // a new handle was made since (Reactor::waker)
            }
            let busy = shared.state.load(Ordering::Acquire) & (QUEUED | OWED | POSTING) != 0;
            if busy || entry.stashed {
                if !self.deferred.contains(&slot) {
                    self.deferred.push(slot); // its wake is still to be delivered
                }
                continue;
            }
            self.retired_calls += shared.calls.load(Ordering::Relaxed);
            self.retired_posts += shared.posts.load(Ordering::Relaxed);
            self.by_token.remove(&shared.token);
            entry.shared = None;
            entry.generation = entry.generation.wrapping_add(1) & GENERATION_MASK;
            entry.stashed = false;
            self.free.push(slot);
        }
    }

    /// The token of waker `id` and its per-poll report stamp, if it still lives.
    pub fn report(&mut self, id: usize) -> Option<(Token, &mut u64)> {
        let entry = self.slots.get_mut(id as u32 as usize)?;
        let shared = entry.shared.as_ref().filter(|s| s.id == id)?;
        Some((shared.token, &mut entry.reported_in))
    }

    /// Mark whether a wake event of waker `id` waits in the stash (a waker is not released while
    /// one does); false if that was already so, or the waker is gone.
    pub fn set_stashed(&mut self, id: usize, stashed: bool) -> bool {
        self.slots
            .get_mut(id as u32 as usize)
            .filter(|s| s.shared.as_ref().is_some_and(|w| w.id == id))
            .is_some_and(|s| std::mem::replace(&mut s.stashed, stashed) != stashed)
    }

    /// Wakes fail from now on and post nothing.
    pub fn close_all(&self) {
        for shared in self.slots.iter().filter_map(|s| s.shared.as_ref()) {
            shared.state.fetch_or(CLOSED, Ordering::AcqRel);
        }
    }

    /// Wakers with at least one handle alive (what the user holds): a waker stops counting the
    /// moment its last handle is dropped, though its slot is released only by the next sweep.
    pub fn len(&self) -> usize {
        let live = self.slots.iter().filter_map(|s| s.shared.as_ref());
        live.filter(|s| s.handles.load(Ordering::Acquire) > 0)
            .count()
    }

    /// Wakers whose slot is still held (a handle lives, or it waits for the next sweep).
    #[cfg(any(test, feature = "test-rig"))]
    pub fn retained(&self) -> usize {
        self.by_token.len()
    }

    /// `(wake calls, packets posted)` over every waker, released ones included.
    pub fn counts(&self) -> (u64, u64) {
        let live = self.slots.iter().filter_map(|s| s.shared.as_ref());
        live.fold((self.retired_calls, self.retired_posts), |(c, p), s| {
            (
                c + s.calls.load(Ordering::Relaxed),
                p + s.posts.load(Ordering::Relaxed),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoPost;
    impl Post for NoPost {
        fn post_wake(&self, _apc_context: usize) -> io::Result<()> {
            Ok(())
        }
    }

    /// However often a slot is reused, a waker's id (its packets' ApcContext) never carries the
    /// poll tag: the kernel contract keeps that bit for polls.
    #[test]
    fn a_waker_id_never_carries_the_poll_tag() {
        let mut table = WakerTable::default();
        drop(table.get(Token(1), || Box::new(NoPost)));
        table.sweep();
        table.slots[0].generation = GENERATION_MASK; // the last generation before the wrap
        let w = table.get(Token(2), || Box::new(NoPost));
        let id = table.by_token[&Token(2)];
        let shared_id = table.slots[id as usize].shared.as_ref().unwrap().id;
        assert_eq!(shared_id & crate::kernel::POLL_TAG, 0);
        drop(w);
        table.sweep();
        assert_eq!(table.slots[0].generation, 0, "wraps within 31 bits");
    }
}
