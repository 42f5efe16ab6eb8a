//! Waitable handles (docs/design.md §15): events, processes, semaphores and timers (Windows),
//! eventfds and pidfds (Linux), reported through the same port as sockets.
//!
//! Each registration keeps one kernel wait ([`Kernel::open_wait`]), armed while the registration
//! wants to hear of a signal. Its packet comes back under [`WAIT_KEY`] with the registration's
//! generation as ApcContext (tagged [`WAIT_TAG`]), so a packet of an ended registration — or of an
//! earlier one in the same slot — is told apart and dropped, as for polls. A wait names no memory
//! of the reactor's, so nothing here is pinned: the kernel keeps what its waits need.

use super::poll::Stashed;
use super::pool::INDEX_BITS;
use super::{Reactor, Token, err, slot_of, tagged_generation};
use crate::kernel::{Kernel, POLL_TAG, RawWaitable, WAIT_TAG, WaitCancel, WaitId};
use crate::state::Mode;
use std::collections::HashMap;
use std::io;

/// Something that can be waited on: an event, a process, a semaphore, a waitable timer... (any
/// `AsHandle` on Windows), an eventfd, a pidfd, a timerfd... (any `AsFd` on Linux).
///
/// The reactor reads the value once per call. At registration the kernel takes a reference of
/// its own to the object (a duplicate handle, or descriptor), and waits on that one from then on:
/// closing your handle while it is registered does not disturb the wait, and a new object that
/// gets the old value is never waited on in its place. The registration itself is known by the
/// value you registered: deregister with the same handle, before you close it. (If you close it
/// first and a new handle gets its value, `register_waitable` of the new one says
/// `AlreadyExists` until you `deregister_waitable` the old registration through the new handle,
/// which names the same value.)
///
/// # Safety
/// `raw_waitable` must return the value of a handle (descriptor) the implementer owns or borrows
/// for the duration of the call (Rust's I/O safety): the reactor duplicates it, and a wait
/// consumes the object's signals (an auto-reset event's, a semaphore's), which would steal them
/// from whoever else waits on a handle that is not yours. Implement `AsHandle` (`AsFd`) instead:
/// every such type is `Waitable`, safely.
pub unsafe trait Waitable {
    /// The handle's value.
    fn raw_waitable(&self) -> RawWaitable;
}

// SAFETY: `AsFd` hands out a `BorrowedFd`, which I/O safety guarantees is an open descriptor for
// as long as the borrow (this call) lasts.
#[cfg(unix)]
unsafe impl<T: std::os::fd::AsFd + ?Sized> Waitable for T {
    fn raw_waitable(&self) -> RawWaitable {
        use std::os::fd::AsRawFd;
        self.as_fd().as_raw_fd() as RawWaitable
    }
}

// SAFETY: `AsHandle` hands out a `BorrowedHandle`, which I/O safety guarantees is an open handle
// for as long as the borrow (this call) lasts.
#[cfg(windows)]
unsafe impl<T: std::os::windows::io::AsHandle + ?Sized> Waitable for T {
    fn raw_waitable(&self) -> RawWaitable {
        use std::os::windows::io::AsRawHandle;
        self.as_handle().as_raw_handle() as RawWaitable
    }
}

/// A waitable object of the [simulated kernel](crate::kernel::sim), by handle value (feature
/// `test-rig`): [`SimKernel::open_event`](crate::kernel::sim::SimKernel::open_event) and its
/// siblings make them.
#[cfg(feature = "test-rig")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimWaitable(pub RawWaitable);

// SAFETY: a test-rig type. On the simulated kernel the value names a simulated object; a test
// that gives one to a real kernel takes on the duty `Waitable` describes.
#[cfg(feature = "test-rig")]
unsafe impl Waitable for SimWaitable {
    fn raw_waitable(&self) -> RawWaitable {
        self.0
    }
}

/// One waitable registration.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// `WAIT_TAG | counter << INDEX_BITS | index`; 0 while the slot is vacant.
    generation: u64,
    wait: WaitId,
    token: Token,
    mode: Mode,
    /// A wait is armed in the kernel (or its packet is still to come).
    armed: bool,
    /// It should be armed: always in `Level` mode; in `Oneshot` and `Edge`, until its event.
    wanted: bool,
    /// The kernel refused to arm it: disarmed until `reregister_waitable` (an error event said so).
    refused: bool,
    /// Deregistered; waits for its packet.
    zombie: bool,
    /// Its event waits in the stash (its re-arm waits until it is delivered).
    held: bool,
    /// In the update list.
    queued: bool,
}

/// The reactor's waitable registrations.
#[derive(Debug, Default)]
pub(super) struct WaitTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_raw: HashMap<RawWaitable, u32>,
    counter: u64,
    /// Slots to re-arm before the next dequeue: `(index, generation)`.
    updates: Vec<(u32, u64)>,
    /// Waits armed in the kernel (zombies included).
    pub(super) in_kernel: usize,
    /// Deregistered registrations waiting for their packet.
    pub(super) zombies: usize,
}

impl WaitTable {
    pub(super) fn len(&self) -> usize {
        self.by_raw.len()
    }

    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + self.free.capacity() * size_of::<u32>()
            + self.by_raw.capacity() * (size_of::<(RawWaitable, u32)>() + 1)
            + self.updates.capacity() * size_of::<(u32, u64)>()
    }

    pub(super) fn contains(&self, raw: RawWaitable) -> bool {
        self.by_raw.contains_key(&raw)
    }

    fn alloc(&mut self, slot: Slot) -> io::Result<u32> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.slots.len() < 1 << INDEX_BITS => {
                self.slots.push(slot);
                self.slots.len() as u32 - 1
            }
            None => {
                return Err(err(
                    io::ErrorKind::OutOfMemory,
                    "afd-reactor: too many waitable registrations",
                ));
            }
        };
        let generation = tagged_generation(WAIT_TAG, &mut self.counter, index);
        self.slots[index as usize] = Slot { generation, ..slot };
        Ok(index)
    }

    fn release(&mut self, index: u32) {
        self.slots[index as usize].generation = 0;
        self.free.push(index);
    }

    /// The slot `generation` names, if it is still that registration's.
    fn slot(&mut self, generation: u64) -> Option<(u32, &mut Slot)> {
        let index = slot_of(generation);
        let slot = self.slots.get_mut(index as usize)?;
        (slot.generation == generation).then_some((index, slot))
    }

    /// The live (not deregistered) registration `generation` names.
    fn live(&mut self, generation: u64) -> Option<(u32, &mut Slot)> {
        self.slot(generation).filter(|(_, s)| !s.zombie)
    }

    fn queue_update(&mut self, index: u32) {
        let slot = &mut self.slots[index as usize];
        if !slot.queued {
            slot.queued = true;
            self.updates.push((index, slot.generation));
        }
    }

    fn index_of(&self, raw: RawWaitable) -> io::Result<u32> {
        self.by_raw.get(&raw).copied().ok_or_else(|| {
            err(
                io::ErrorKind::NotFound,
                "afd-reactor: handle is not registered as a waitable",
            )
        })
    }

    /// Every live registration's slot, leaving the map empty (teardown).
    pub(super) fn drain_indices(&mut self) -> Vec<u32> {
        self.by_raw.drain().map(|(_, i)| i).collect()
    }
}

impl<K: Kernel> Reactor<K> {
    /// Register a waitable handle under `token`, in the configured mode: an event with `token`
    /// and [`Event::is_signaled`](crate::Event::is_signaled) comes when its object is signaled —
    /// an event set, a process ended, a semaphore released, a waitable timer due (Windows); an
    /// eventfd or a pidfd readable (Linux).
    ///
    /// The wait is armed here (one kernel call, after one to duplicate the handle). When it is
    /// satisfied it *consumes* the signal as any wait does: an auto-reset event is reset and a
    /// semaphore count taken, and the event you get is that signal. A manual-reset event or an
    /// ended process stays signaled. On Linux a wait consumes nothing: read the eventfd.
    ///
    /// - [`Mode::Level`] (the default): the wait is re-armed after each event (at the next
    ///   `poll`), so an auto-reset event reports each time it is set, and an object that stays
    ///   signaled reports at every `poll`, like a readable socket you do not read. Deregister a
    ///   process once it has ended.
    /// - [`Mode::Oneshot`] and [`Mode::Edge`]: one event, then nothing until
    ///   [`reregister_waitable`](Self::reregister_waitable) re-arms it.
    ///
    /// Where it runs (Windows): on wait completion packets (Windows 8 and later), which cost no
    /// thread; where ntdll lacks them (Wine), on a one-shot thread-pool wait per arming whose
    /// callback posts to the port. See [`NtKernel`](crate::kernel) for the choice.
    ///
    /// # Errors
    /// - `AlreadyExists`: this value is registered as a waitable already;
    /// - `InvalidInput`: the value names nothing;
    /// - `NotConnected`: the reactor has shut down;
    /// - the kernel's refusal to wait on the object (a mutex on Windows 8+, a regular file on
    ///   Linux), or to duplicate the handle: nothing stays registered.
    ///
    /// Do not register a mutex: a wait acquires it (on the thread-pool path, for a pool thread
    /// that never releases it), and wait completion packets refuse it.
    ///
    /// # Examples
    /// ```
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Reactor, SimWaitable, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`); on Windows, any `AsHandle`, such as a
    /// // `std::process::Child`, registers the same way.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let event = SimWaitable(reactor.kernel().open_event(false, false)); // auto-reset
    /// reactor.register_waitable(&event, Token(9))?;
    /// reactor.kernel().signal(event.0); // SetEvent, from anywhere
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
    /// let e = events.iter().next().unwrap();
    /// assert!(e.is_signaled() && e.token() == Token(9));
    /// assert_eq!(reactor.kernel().signals(event.0), 0); // the wait consumed the signal
    /// assert!(!reactor.deregister_waitable(&event)?); // no signal left undelivered
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register_waitable<W: Waitable + ?Sized>(
        &mut self,
        handle: &W,
        token: Token,
    ) -> io::Result<()> {
        self.register_waitable_with_mode(handle, token, self.config.mode)
    }

    /// [`register_waitable`](Self::register_waitable) with an explicit [`Mode`].
    ///
    /// # Errors
    /// As [`register_waitable`](Self::register_waitable).
    pub fn register_waitable_with_mode<W: Waitable + ?Sized>(
        &mut self,
        handle: &W,
        token: Token,
        mode: Mode,
    ) -> io::Result<()> {
        self.check_running()?;
        // The user's value, read once.
        let raw = handle.raw_waitable();
        if self.waits.contains(raw) {
            return Err(err(
                io::ErrorKind::AlreadyExists,
                "afd-reactor: handle already registered as a waitable (use reregister_waitable)",
            ));
        }
        self.stats.nt.wait_open += 1;
        let wait = self.kernel.open_wait(raw)?;
        let slot = Slot {
            generation: 0,
            wait,
            token,
            mode,
            armed: false,
            wanted: true,
            refused: false,
            zombie: false,
            held: false,
            queued: false,
        };
        let index = match self.waits.alloc(slot) {
            Ok(index) => index,
            Err(e) => {
                self.stats.nt.wait_close += 1;
                self.kernel.close_wait(wait);
                return Err(e);
            }
        };
        if let Err(e) = self.arm_waitable(index) {
            self.stats.nt.wait_close += 1;
            self.kernel.close_wait(wait);
            self.waits.release(index);
            return Err(e);
        }
        self.waits.by_raw.insert(raw, index);
        Ok(())
    }

    /// Change a waitable registration's token, and re-arm it: a [`Mode::Oneshot`] or
    /// [`Mode::Edge`] registration after its event, or one the kernel refused to arm (an error
    /// event said so). No kernel call is made here; the re-arm is one at the next
    /// [`poll`](Self::poll). A registration still armed stays as it is.
    ///
    /// # Errors
    /// `NotFound` if the handle is not registered as a waitable; `NotConnected` after shutdown.
    ///
    /// # Examples
    /// ```
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Mode, Reactor, SimWaitable, Token};
    /// use std::time::Duration;
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let k = reactor.kernel();
    /// let process = SimWaitable(k.open_process());
    /// reactor.register_waitable_with_mode(&process, Token(1), Mode::Oneshot)?;
    /// reactor.kernel().exit_process(process.0); // stays signaled
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
    /// assert!(events.iter().any(|e| e.is_signaled()));
    /// reactor.poll(&mut events, Some(Duration::from_millis(10)))?;
    /// assert!(events.is_empty()); // one event per arming
    /// reactor.reregister_waitable(&process, Token(2))?;
    /// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
    /// assert!(events.iter().any(|e| e.is_signaled() && e.token() == Token(2)));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reregister_waitable<W: Waitable + ?Sized>(
        &mut self,
        handle: &W,
        token: Token,
    ) -> io::Result<()> {
        self.check_running()?;
        let index = self.waits.index_of(handle.raw_waitable())?;
        let slot = &mut self.waits.slots[index as usize];
        slot.token = token;
        if !slot.wanted || slot.refused {
            let generation = slot.generation;
            if slot.refused {
                // A refusal still waiting in the stash is old news now (review 15, F3).
                self.stash.retain(
                    |s| !matches!(s, Stashed::WaitRefused { generation: g } if *g == generation),
                );
                let held = self
                    .stash
                    .iter()
                    .any(|s| matches!(s, Stashed::Signaled { generation: g } if *g == generation));
                self.waits.slots[index as usize].held = held;
            }
            let slot = &mut self.waits.slots[index as usize];
            slot.wanted = true;
            slot.refused = false;
            self.waits.queue_update(index);
        }
        Ok(())
    }

    /// Deregister a waitable handle: no event of it is delivered by any later
    /// [`poll`](Self::poll), and the kernel's wait and duplicate handle are released (at once, or
    /// once a packet already on its way is collected).
    ///
    /// Returns `true` if the wait was satisfied but its event is not delivered (its packet was on
    /// its way, its callback could not post, or its event waited for room in a later `poll`). For
    /// an auto-reset event or a semaphore that signal is then gone, consumed by the wait: pass it
    /// on if someone else should have it (`SetEvent` again). A manual-reset event or an ended
    /// process still holds its signal (the kernel cannot tell the reactor which kind the object
    /// is: you know what you registered). So every signal a wait consumes is either delivered as
    /// an event or reported here. Always `false` on Linux, where a wait consumes nothing.
    ///
    /// One gap, on the thread-pool path only (where ntdll has no wait completion packets: under
    /// Wine): a signal that comes *while* the wait is being cancelled may be taken by the thread
    /// pool and dropped, and then this returns `false` although the auto-reset event was reset
    /// (the repository's docs/fidelity.md, row W8, has the measurements). A manual-reset event or a
    /// process loses nothing.
    ///
    /// # Errors
    /// `NotFound` if the handle is not registered as a waitable; `NotConnected` after shutdown.
    ///
    /// # Examples
    /// ```
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Reactor, SimWaitable, Token};
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let event = SimWaitable(reactor.kernel().open_event(false, false));
    /// reactor.register_waitable(&event, Token(1))?;
    /// reactor.kernel().signal(event.0); // consumed by the wait before any poll
    /// if reactor.deregister_waitable(&event)? {
    ///     reactor.kernel().signal(event.0); // hand it back
    /// }
    /// assert_eq!(reactor.kernel().signals(event.0), 1);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn deregister_waitable<W: Waitable + ?Sized>(&mut self, handle: &W) -> io::Result<bool> {
        self.check_running()?;
        let raw = handle.raw_waitable();
        let index = self.waits.index_of(raw)?;
        self.waits.by_raw.remove(&raw);
        Ok(self.end_waitable(index))
    }

    /// End waitable registration `index` (out of the map already): cancel its wait, then release
    /// it now or make it a zombie until its packet comes. Returns true if a consumed signal was
    /// not delivered.
    fn end_waitable(&mut self, index: u32) -> bool {
        let slot = self.waits.slots[index as usize];
        let generation = slot.generation;
        // An event kept for a later poll is dropped with the registration.
        let mut lost = self
            .stash
            .iter()
            .any(|s| matches!(s, Stashed::Signaled { generation: g } if *g == generation));
        if slot.armed {
            self.stats.nt.wait_cancel += 1;
            match self.kernel.cancel_wait(slot.wait) {
                WaitCancel::NotSignaled => self.waits.slots[index as usize].armed = false,
                WaitCancel::Consumed => {
                    self.waits.slots[index as usize].armed = false;
                    lost = true;
                }
                WaitCancel::Queued => {
                    lost = true; // its packet will be absorbed, not delivered
                    self.waits.slots[index as usize].zombie = true;
                    self.waits.zombies += 1;
                    return lost && K::WAITS_CONSUME;
                }
            }
            self.waits.in_kernel -= 1;
        }
        self.close_waitable(index);
        // Where a wait takes nothing (epoll), a signal not delivered is still the object's.
        lost && K::WAITS_CONSUME
    }

    /// Free waitable slot `index`, whose wait has no packet to come.
    fn close_waitable(&mut self, index: u32) {
        let slot = self.waits.slots[index as usize];
        debug_assert!(!slot.armed);
        self.stats.nt.wait_close += 1;
        self.kernel.close_wait(slot.wait);
        self.waits.release(index);
    }

    /// Arm slot `index`'s wait (it is not armed).
    fn arm_waitable(&mut self, index: u32) -> io::Result<()> {
        let slot = self.waits.slots[index as usize];
        self.stats.nt.wait_arm += 1;
        self.kernel.arm_wait(slot.wait, slot.generation as usize)?;
        self.waits.slots[index as usize].armed = true;
        self.waits.in_kernel += 1;
        Ok(())
    }

    /// A packet under `WAIT_KEY`: the wait of the registration its ApcContext names was
    /// satisfied. Anything that does not name an armed wait is counted and dropped.
    pub(super) fn wait_packet(&mut self, apc_context: usize) -> Option<Stashed> {
        if apc_context & WAIT_TAG == 0 || apc_context & POLL_TAG != 0 {
            self.stats.foreign_discarded += 1;
            return None;
        }
        let generation = apc_context as u64;
        let Some((index, slot)) = self.waits.slot(generation).filter(|(_, s)| s.armed) else {
            self.stats.stale_discarded += 1;
            return None;
        };
        slot.armed = false;
        let zombie = slot.zombie;
        self.waits.in_kernel -= 1;
        if zombie {
            self.waits.zombies -= 1;
            self.close_waitable(index);
            return None;
        }
        Some(Stashed::Signaled { generation })
    }

    /// Deliver (or keep) a waitable registration's event: `Signaled`, or `WaitRefused` (its arming
    /// failed). Returns `None` if it was delivered or dropped, or the item if there was no room.
    pub(super) fn emit_waitable(&mut self, item: Stashed, room: bool) -> Option<crate::Event> {
        let (Stashed::Signaled { generation } | Stashed::WaitRefused { generation }) = item else {
            return None;
        };
        let (index, slot) = self.waits.live(generation)?;
        if !room {
            slot.held = true;
            self.stash.push_back(item);
            return None;
        }
        slot.held = false;
        let event = if let Stashed::Signaled { .. } = item {
            if slot.mode != Mode::Level {
                slot.wanted = false;
            }
            self.stats.signals += 1;
            crate::Event::signaled(slot.token)
        } else {
            crate::Event::waitable_error(slot.token)
        };
        self.waits.queue_update(index);
        Some(event)
    }

    /// Mark a waitable registration's event as kept for a later poll.
    pub(super) fn hold_waitable(&mut self, generation: u64) {
        if let Some((_, slot)) = self.waits.live(generation) {
            slot.held = true;
        }
    }

    /// Re-arm the waitable registrations that want it (after their event was delivered, or a
    /// `reregister_waitable`).
    pub(super) fn flush_wait_updates(&mut self) {
        let mut queue = std::mem::take(&mut self.waits.updates);
        for &(index, generation) in &queue {
            let Some((_, slot)) = self.waits.live(generation) else {
                continue; // ended (and maybe reused) since it was queued
            };
            slot.queued = false;
            if slot.held || slot.armed || !slot.wanted || slot.refused {
                continue;
            }
            if self.arm_waitable(index).is_err() {
                // Disarmed until the user reregisters: tell them, once.
                self.waits.slots[index as usize].refused = true;
                self.stash_item(Stashed::WaitRefused { generation });
            }
        }
        queue.clear();
        if self.waits.updates.is_empty() {
            self.waits.updates = queue; // keep the allocation
        }
    }

    /// Teardown: end every waitable registration; returns how many armed waits were cancelled,
    /// and how many consumed signals were not delivered.
    pub(super) fn end_all_waitables(&mut self) -> (u64, u64) {
        let (mut cancelled, mut lost) = (0, 0);
        for index in self.waits.drain_indices() {
            if self.waits.slots[index as usize].armed {
                cancelled += 1;
            }
            if self.end_waitable(index) {
                lost += 1;
            }
        }
        (cancelled, lost)
    }
}
