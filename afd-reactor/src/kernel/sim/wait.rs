//! The simulated kernel's waitable objects and waits ([`Kernel::open_wait`](crate::kernel::Kernel::open_wait) and the rest).
//!
//! # The model
//! - **Objects.** [`SimKernel::open_event`] (auto- or manual-reset), [`SimKernel::open_semaphore`]
//!   and [`SimKernel::open_process`] create waitable objects in the same handle table as sockets
//!   (lowest free value first). An object holds a count of signals: an event 0 or 1, a semaphore
//!   any count, a process 0 until [`SimKernel::exit_process`] and 1 for good after.
//!   [`SimKernel::signal`] sets an event, releases a semaphore once, or ends a process;
//!   [`SimKernel::reset_event`] resets an event.
//! - **Duplicates.** `open_wait` takes a reference of its own to the object (the duplicate handle
//!   of the real kernels; it has no value in the table). Closing the user's handle
//!   ([`SimKernel::close_socket`] closes any kind) leaves the object alive while a wait holds it;
//!   the value is free for the next open at once.
//! - **A satisfied wait consumes.** A wait is satisfied when its object holds a signal, at arm time
//!   or when the object is signaled later (waits on one object are satisfied in arming order). It
//!   takes an auto-reset event's signal and one of a semaphore's; a manual-reset event and a
//!   process keep theirs (every armed wait is satisfied).
//! - **Two paths** ([`WaitPath`], [`SimKernel::set_wait_path`]):
//!   - [`WaitPath::Packets`] (wait completion packets, Windows 8+): a satisfied wait queues its
//!     packet at once, at arm time too (`AlreadySignaled` changes nothing). A cancel of a wait
//!     still waiting returns [`WaitCancel::NotSignaled`]; of one whose packet is queued,
//!     [`WaitCancel::Queued`] (`NtCancelWaitCompletionPacket(.., FALSE)`: `STATUS_PENDING`).
//!   - [`WaitPath::ThreadPool`] (`RegisterWaitForSingleObject`): a satisfied wait schedules its
//!     callback, which posts the packet when the thread pool runs it: at the start of the next
//!     dequeue, unless the `callback_delay` fault or [`SimKernel::hold_callbacks`] keeps it for
//!     later. A callback's post can fail ([`SimKernel::fail_callback_posts`]): it retries at every
//!     later dequeue. A cancel (`UnregisterWaitEx(.., INVALID_HANDLE_VALUE)`) waits for a callback
//!     that is due: it runs then, and posts ([`WaitCancel::Queued`]) or, its post failing with the
//!     cancel seen, gives up ([`WaitCancel::Consumed`]).
//! - **Faults.** `wait_race` (rolled at each cancel of a wait still waiting): another thread
//!   signals the object just before the cancel, so the cancel finds the wait satisfied.
//!   `pool_cancel_loss` ([`WaitPath::ThreadPool`] only; rolled at each cancel of a wait still
//!   waiting on an auto-reset event or a semaphore): the signal comes as the wait is unregistered,
//!   the pool's wait thread takes it and runs no callback, and the cancel answers
//!   [`WaitCancel::NotSignaled`] — a signal lost unreported, as both Wines lose it
//!   ([`SimStats::signals_dropped_by_pool`](super::SimStats::signals_dropped_by_pool)).
//!   `callback_delay` (rolled for each callback due at a dequeue): the thread pool has not run it
//!   yet.
//! - **Contract checks.** Arming an armed wait, cancelling one that is not armed, closing one whose
//!   packet may still come, or naming a wait that is not open: each panics, as a bug of the caller.
//!   [`SimStats::signals_consumed`](super::SimStats::signals_consumed) counts every signal a wait took, so a test can check that each
//!   one was delivered or reported.

use super::{Kind, ObjId, Object, Packet, SimKernel, SimState};
use crate::afd::{CompletionEntry, IoStatusBlock, NtStatus};
use crate::kernel::slab::WaitSlab;
use crate::kernel::{RawWaitable, WAIT_KEY, WaitCancel, WaitId};
use std::io;

/// Which NT mechanism the simulated kernel's waits model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WaitPath {
    /// Wait completion packets (`NtAssociateWaitCompletionPacket`, Windows 8+): the default.
    #[default]
    Packets,
    /// A thread-pool wait per arming (`RegisterWaitForSingleObject`), whose callback posts the
    /// packet: what runs where ntdll lacks wait completion packets (Wine).
    ThreadPool,
}

/// A waitable object's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flavor {
    /// An event; `manual`: a manual-reset event (a wait does not reset it).
    Event { manual: bool },
    /// A semaphore: each satisfied wait takes one count.
    Semaphore,
    /// A process: signaled for good once it exits.
    Process,
}

/// Where one wait stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Not armed, and no packet of it to come.
    Idle,
    /// Armed: waiting for its object.
    Armed,
    /// Satisfied; its thread-pool callback has not posted yet (`failed`: a post of it failed).
    Callback { failed: bool },
    /// Its packet is in the port's queue.
    Queued,
}

#[derive(Debug)]
struct Wait {
    object: ObjId,
    apc_context: usize,
    stage: Stage,
    /// Arming order among the waits of one object.
    armed_seq: u64,
}

/// The waits of a [`SimState`].
#[derive(Debug, Default)]
pub(super) struct Waits {
    path: WaitPath,
    table: WaitSlab<Wait>,
    next_armed: u64,
    /// While true, thread-pool callbacks do not run at dequeues.
    hold_callbacks: bool,
    /// Callback posts still to fail.
    fail_callback_posts: u32,
}

impl SimState {
    pub(super) fn open_waitable(&mut self, flavor: Flavor, signals: u32) -> RawWaitable {
        let h = self.open(Kind::Waitable(flavor), false);
        self.object_mut(h, "open").signals = signals;
        h
    }

    fn waitable_mut(&mut self, h: RawWaitable, what: &str) -> (ObjId, &mut Object) {
        let Some(&id) = self.handles.get(&h) else {
            panic!("{what}: handle {h:#x} is not open");
        };
        let obj = self.objects.get_mut(&id).expect("live object");
        assert!(
            matches!(obj.kind, Kind::Waitable(_)),
            "{what}: handle {h:#x} is not a waitable object"
        );
        (id, obj)
    }

    pub(super) fn duplicate_handle(&mut self, h: RawWaitable) -> RawWaitable {
        let (id, _) = self.waitable_mut(h, "duplicate_handle");
        let value = self.free_handles.pop_first().unwrap_or_else(|| {
            let v = self.next_handle;
            self.next_handle += super::HANDLE_STEP;
            v
        });
        self.handles.insert(value, id);
        self.objects.get_mut(&id).expect("live object").user_handles += 1;
        value
    }

    pub(super) fn signal(&mut self, h: RawWaitable) {
        let (id, obj) = self.waitable_mut(h, "signal");
        let Kind::Waitable(flavor) = obj.kind else {
            unreachable!()
        };
        obj.signals = match flavor {
            Flavor::Semaphore => obj.signals.saturating_add(1),
            Flavor::Event { .. } | Flavor::Process => 1,
        };
        self.satisfy(id);
    }

    pub(super) fn reset_event(&mut self, h: RawWaitable) {
        let (_, obj) = self.waitable_mut(h, "reset_event");
        assert!(
            matches!(obj.kind, Kind::Waitable(Flavor::Event { .. })),
            "reset_event: handle {h:#x} is not an event"
        );
        obj.signals = 0;
    }

    pub(super) fn signals(&self, h: RawWaitable) -> u32 {
        match self.lookup(h) {
            Some((_, obj)) if matches!(obj.kind, Kind::Waitable(_)) => obj.signals,
            _ => panic!("signals: handle {h:#x} is not an open waitable object"),
        }
    }

    /// Satisfy the armed waits of object `id`, in arming order, while it holds a signal.
    fn satisfy(&mut self, id: ObjId) {
        loop {
            let obj = &self.objects[&id];
            if obj.signals == 0 {
                return;
            }
            let Kind::Waitable(flavor) = obj.kind else {
                return;
            };
            let next = self
                .waits
                .table
                .iter()
                .filter(|(_, w)| w.object == id && w.stage == Stage::Armed)
                .min_by_key(|(_, w)| w.armed_seq)
                .map(|(i, _)| i);
            let Some(i) = next else {
                return;
            };
            let obj = self.objects.get_mut(&id).expect("live object");
            if matches!(flavor, Flavor::Semaphore | Flavor::Event { manual: false }) {
                obj.signals -= 1;
            }
            self.stats.signals_consumed += 1;
            match self.waits.path {
                WaitPath::Packets => self.queue_wait_packet(i),
                WaitPath::ThreadPool => self.wait_at(i).stage = Stage::Callback { failed: false },
            }
        }
    }

    /// The open wait at index `i`.
    fn wait_at(&mut self, i: u32) -> &mut Wait {
        self.waits.table.slot_mut(i).expect("an open wait")
    }

    fn queue_wait_packet(&mut self, i: u32) {
        let wait = self.wait_at(i);
        wait.stage = Stage::Queued;
        let apc_context = wait.apc_context;
        self.stats.wait_packets_queued += 1;
        self.port.push(Packet {
            entry: CompletionEntry {
                key: WAIT_KEY,
                apc_context,
                io_status: IoStatusBlock {
                    status_or_pointer: NtStatus::SUCCESS.0 as isize,
                    information: 0,
                },
            },
            block: 0,
            wait: Some(i),
        });
    }

    /// Run thread-pool callback `i` (due): post, or fail and retry later. Returns false if its
    /// post failed.
    fn run_callback(&mut self, i: u32) -> bool {
        if self.waits.fail_callback_posts > 0 {
            self.waits.fail_callback_posts -= 1;
            self.stats.failed_callback_posts += 1;
            self.wait_at(i).stage = Stage::Callback { failed: true };
            return false;
        }
        self.queue_wait_packet(i);
        true
    }

    /// The thread pool's turn, at the start of each dequeue: due callbacks run (post), unless
    /// held or delayed.
    pub(super) fn run_callbacks(&mut self) {
        if self.waits.hold_callbacks {
            return;
        }
        // Running one callback changes no other wait's stage: the due ones can be found first.
        let due: Vec<u32> = (self.waits.table.iter())
            .filter(|(_, w)| matches!(w.stage, Stage::Callback { .. }))
            .map(|(i, _)| i)
            .collect();
        for i in due {
            if self.rng.chance(self.faults.callback_delay) {
                self.stats.callbacks_delayed += 1;
                continue;
            }
            self.run_callback(i);
        }
    }

    /// A wait packet was dequeued: its wait is idle again.
    pub(super) fn wait_packet_dequeued(&mut self, i: u32) {
        if let Some(w) = self.waits.table.slot_mut(i) {
            debug_assert_eq!(w.stage, Stage::Queued);
            w.stage = Stage::Idle;
        }
    }

    pub(super) fn open_wait(&mut self, h: RawWaitable) -> io::Result<WaitId> {
        let Some((id, obj)) = self.lookup(h) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("handle {h:#x} is not open"),
            ));
        };
        if !matches!(obj.kind, Kind::Waitable(_)) {
            // Windows can wait on a socket or a file handle (signaled when its I/O completes);
            // the simulation has no such signal, so it refuses them as the real kernels refuse
            // what cannot be waited on.
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("handle {h:#x} names an object the simulation cannot wait on"),
            ));
        }
        let wait = Wait {
            object: id,
            apc_context: 0,
            stage: Stage::Idle,
            armed_seq: 0,
        };
        let wait_id = self.waits.table.insert(wait)?;
        self.objects.get_mut(&id).expect("live object").dups += 1;
        self.stats.waits_opened += 1;
        Ok(wait_id)
    }

    pub(super) fn arm_wait(&mut self, id: WaitId, apc_context: usize) -> io::Result<()> {
        let seq = self.waits.next_armed;
        self.waits.next_armed += 1;
        let wait = self.waits.table.get_mut(id);
        assert_eq!(
            wait.stage,
            Stage::Idle,
            "afd-reactor bug: arm_wait on wait {id:?}, which is armed or has a packet to come"
        );
        if self.rng.chance(self.faults.submit_failure) {
            self.stats.submit_failures += 1;
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "simulated STATUS_INSUFFICIENT_RESOURCES",
            ));
        }
        wait.stage = Stage::Armed;
        wait.apc_context = apc_context;
        wait.armed_seq = seq;
        let object = wait.object;
        self.stats.waits_armed += 1;
        self.satisfy(object);
        Ok(())
    }

    pub(super) fn cancel_wait(&mut self, id: WaitId) -> WaitCancel {
        let i = id.0;
        let (stage, object) = {
            let wait = self.waits.table.get_mut(id);
            (wait.stage, wait.object)
        };
        assert_ne!(
            stage,
            Stage::Idle,
            "afd-reactor bug: cancel_wait on wait {id:?}, which is not armed"
        );
        if stage == Stage::Armed
            && self.waits.path == WaitPath::ThreadPool
            && self.rng.chance(self.faults.pool_cancel_loss)
        {
            // Wine's thread pool: the object's signal races the unregistration; the wait thread
            // takes it, finds the registration gone, and runs no callback.
            let obj = self.objects.get_mut(&object).expect("live object");
            if let Kind::Waitable(Flavor::Semaphore | Flavor::Event { manual: false }) = obj.kind {
                self.stats.signals_dropped_by_pool += 1;
                self.stats.signals_consumed += 1;
                self.stats.waits_cancelled += 1;
                self.wait_at(i).stage = Stage::Idle;
                return WaitCancel::NotSignaled;
            }
        }
        if stage == Stage::Armed && self.rng.chance(self.faults.wait_race) {
            // Another thread signals the object just before the cancel reaches the kernel.
            self.stats.wait_races += 1;
            let obj = self.objects.get_mut(&object).expect("live object");
            obj.signals = obj.signals.saturating_add(1);
            if matches!(
                obj.kind,
                Kind::Waitable(Flavor::Event { .. } | Flavor::Process)
            ) {
                obj.signals = 1;
            }
            self.satisfy(object);
        }
        self.stats.waits_cancelled += 1;
        match self.wait_at(i).stage {
            Stage::Idle => unreachable!("checked above"),
            Stage::Armed => {
                self.wait_at(i).stage = Stage::Idle;
                WaitCancel::NotSignaled
            }
            Stage::Queued => WaitCancel::Queued,
            Stage::Callback { .. } => {
                // UnregisterWaitEx waits for the callback: it runs now, and gives up if its post
                // fails (it sees the cancel).
                if self.run_callback(i) {
                    WaitCancel::Queued
                } else {
                    self.wait_at(i).stage = Stage::Idle;
                    self.stats.signals_unposted += 1;
                    WaitCancel::Consumed
                }
            }
        }
    }

    pub(super) fn close_wait(&mut self, id: WaitId) {
        assert_eq!(
            self.waits.table.get_mut(id).stage,
            Stage::Idle,
            "afd-reactor bug: close_wait on wait {id:?}, which is armed or has a packet to come"
        );
        let wait = self.waits.table.remove(id);
        let obj = self.objects.get_mut(&wait.object).expect("live object");
        obj.dups -= 1;
        if obj.dups == 0 && obj.user_handles == 0 {
            self.objects.remove(&wait.object);
        }
    }

    /// Waits open (opened and not closed).
    pub(super) fn waits_open(&self) -> usize {
        self.waits.table.iter().count()
    }

    /// Waits armed or with a packet to come.
    pub(super) fn waits_active(&self) -> usize {
        (self.waits.table.iter())
            .filter(|(_, w)| w.stage != Stage::Idle)
            .count()
    }
}

impl SimKernel {
    /// Create an event object under the lowest free handle value: auto-reset (a satisfied wait
    /// resets it) or `manual_reset`, signaled at once if `signaled`.
    pub fn open_event(&self, manual_reset: bool, signaled: bool) -> RawWaitable {
        let flavor = Flavor::Event {
            manual: manual_reset,
        };
        self.state
            .borrow_mut()
            .open_waitable(flavor, u32::from(signaled))
    }

    /// Create a semaphore object holding `count` signals (each satisfied wait takes one).
    pub fn open_semaphore(&self, count: u32) -> RawWaitable {
        self.state
            .borrow_mut()
            .open_waitable(Flavor::Semaphore, count)
    }

    /// Create a process object, running (not signaled) until [`exit_process`](Self::exit_process).
    pub fn open_process(&self) -> RawWaitable {
        self.state.borrow_mut().open_waitable(Flavor::Process, 0)
    }

    /// Another handle value for `h`'s waitable object (`DuplicateHandle`): the object lives until
    /// every handle to it is closed and no wait holds it.
    ///
    /// # Panics
    /// If `h` is not an open waitable object.
    pub fn duplicate_handle(&self, h: RawWaitable) -> RawWaitable {
        self.state.borrow_mut().duplicate_handle(h)
    }

    /// Signal `h`'s object: set an event, release a semaphore once, end a process. Armed waits on
    /// it are satisfied at once.
    ///
    /// # Panics
    /// If `h` is not an open waitable object.
    pub fn signal(&self, h: RawWaitable) {
        self.state.borrow_mut().signal(h)
    }

    /// End the process `h` names (the same as [`signal`](Self::signal)).
    ///
    /// # Panics
    /// If `h` is not an open waitable object.
    pub fn exit_process(&self, h: RawWaitable) {
        self.signal(h)
    }

    /// Reset the event `h` names.
    ///
    /// # Panics
    /// If `h` is not an open event.
    pub fn reset_event(&self, h: RawWaitable) {
        self.state.borrow_mut().reset_event(h)
    }

    /// The signals `h`'s object holds now: an event's 0 or 1, a semaphore's count, 1 for a
    /// process that has exited.
    ///
    /// # Panics
    /// If `h` is not an open waitable object.
    pub fn signals(&self, h: RawWaitable) -> u32 {
        self.state.borrow().signals(h)
    }

    /// Choose the path waits model from now on (default [`WaitPath::Packets`]). Change it only
    /// while no wait is armed.
    ///
    /// # Panics
    /// If a wait is armed or has a packet to come.
    pub fn set_wait_path(&self, path: WaitPath) {
        let mut state = self.state.borrow_mut();
        assert_eq!(
            state.waits_active(),
            0,
            "set_wait_path with waits in progress"
        );
        state.waits.path = path;
    }

    /// The path waits model.
    pub fn wait_path(&self) -> WaitPath {
        self.state.borrow().waits.path
    }

    /// While `hold` is true the thread pool runs no callback at dequeues (a busy or slow pool):
    /// satisfied waits of [`WaitPath::ThreadPool`] wait, and a cancel meets them due.
    pub fn hold_callbacks(&self, hold: bool) {
        self.state.borrow_mut().waits.hold_callbacks = hold;
    }

    /// Make the next `n` thread-pool callback posts fail (out of quota); each callback retries at
    /// later dequeues, or gives up when a cancel meets it.
    pub fn fail_callback_posts(&self, n: u32) {
        self.state.borrow_mut().waits.fail_callback_posts = n;
    }

    /// Waits open (made by `open_wait`, not yet closed).
    pub fn waits_open(&self) -> usize {
        self.state.borrow().waits_open()
    }

    /// Waits armed, or with a packet still to come.
    pub fn waits_active(&self) -> usize {
        self.state.borrow().waits_active()
    }
}
