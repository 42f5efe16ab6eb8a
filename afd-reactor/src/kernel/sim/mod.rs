//! The simulated kernel: a deterministic, seeded model of the NT surface behind [`Kernel`], with
//! fault injection, for forcing every race natively on Linux and under Miri.
//!
//! # The model
//! - **Objects and a handle table.** [`SimKernel::open_socket`] creates a fresh AFD socket object
//!   and gives it the *lowest free* handle value (multiples of 4 from [`FIRST_HANDLE`]), so a
//!   closed value is reused at once by the next open — Wine's behaviour, and the one that exposes
//!   stale-handle bugs. A handle value names an object; objects are never confused (each has a
//!   private, never-reused id), so a poll, a cancel or an association always follows the *object*
//!   the value named when the call was made. There are also plain files
//!   ([`SimKernel::open_non_socket`]) and Layered Service Provider handles
//!   ([`SimKernel::open_layered_socket`]). Every object has exactly one handle; closing it
//!   ([`SimKernel::close_socket`]) destroys the object.
//! - **The helpers.** `\Device\Afd` helper handle number `n` ([`PollVia::Helper`]) is opened on
//!   its first poll, associated with the port under [`HELPER_KEY`], put in skip-on-success mode
//!   (unless [`SimKernel::set_helper_skip_mode`] says otherwise or the `no_skip` fault strikes),
//!   and is not in the handle table. [`SimStats::max_helper_polls`] records the most polls one
//!   of them held at once.
//! - **Readiness.** Each socket object has a level-triggered [`PollEvents`] state, set by the test
//!   ([`SimKernel::set_readiness`], [`SimKernel::add_readiness`],
//!   [`SimKernel::clear_readiness`]). Whenever it intersects the requested mask of a pending poll
//!   of that object — at submit, or later when the readiness changes — the poll completes with
//!   `STATUS_SUCCESS`, one handle, `events = readiness ∩ requested`, and a per-handle status of
//!   `STATUS_SUCCESS`, or [`STATUS_CONNECTION_REFUSED`] if `CONNECT_FAIL` is among the reported
//!   events.
//! - **Close.** Closing a handle completes every pending poll *of* that object (issued on the
//!   socket or through the helper) with `STATUS_SUCCESS` and `LOCAL_CLOSE` alone, whether or not
//!   it was requested (Windows and Wine agree on this). A poll merely *issued on* the closed handle
//!   for another object completes as Wine does it: `STATUS_HANDLES_CLOSED`, buffer untouched.
//! - **Association.** A handle's object is associated with at most one port for life:
//!   [`Kernel::associate`] with this port, or [`SimKernel::bind_to_foreign_port`] with "another
//!   port". A direct poll's completion goes to the issuing object's port *at completion time*: to
//!   our queue with its key if it is associated with this port; otherwise the block is still
//!   written but no packet reaches our queue ([`SimStats::lost_packets`]). Helper polls always
//!   arrive with [`HELPER_KEY`]. [`Kernel::associate`] also sets the object's
//!   skip-on-success mode, as the NT kernel does; associating a socket that a layered handle
//!   stands above counts in [`SimStats::provider_bases_associated`] (it breaks the provider).
//! - **Skip on success.** A poll that completes at submit on an object (or helper) in
//!   skip-on-success mode writes its block and queues *no* packet ([`Submitted::Completed`]);
//!   without the mode its packet is queued as usual ([`Submitted::Queued`]). A user's own flag
//!   on a socket can be set with [`SimKernel::set_skip_on_success`].
//! - **Completion.** The kernel writes the block through its raw pointer (`iosb`, then — unless
//!   the completion leaves it untouched — `info`) *before* the packet becomes visible to
//!   [`Kernel::dequeue`], and never touches it again. The packet carries the key, the poll's
//!   `apc_context` and a copy of the status block.
//! - **Cancel.** [`Kernel::cancel`] finds the pending request issued on that object (or on the
//!   helper) whose block pointer is `block` — as `NtCancelIoFileEx` matches file object and status
//!   block — completes it with `STATUS_CANCELLED` (info left as requested, as Wine leaves it) and
//!   returns `SUCCESS`; otherwise `NOT_FOUND`; `INVALID_HANDLE` if the handle is not open.
//! - **The port.** A FIFO queue shared (through an `Arc`, a `Mutex` and a `Condvar`) with every
//!   [`SimPoster`], which may post from any thread. A dequeue that finds the queue empty waits in
//!   real time, up to its timeout; `Some(Duration::ZERO)` returns `Ok(0)` at once, and `None`
//!   with no other thread posting blocks forever, exactly like the real call.
//! - **`base_socket`** runs the winsock chain: `SIO_BASE_HANDLE`, and if that fails
//!   `SIO_BSP_HANDLE_POLL` (one provider down), repeated until the value stops changing. For a
//!   plain socket both return the socket itself; for a layered handle `SIO_BASE_HANDLE` fails by
//!   default (as AFD may reject LSP handles) and the BSP fallback gives the handle below. Either
//!   step can be made to fail per handle ([`SimKernel::set_base_handle_fails`],
//!   [`SimKernel::set_bsp_handle_fails`]); if both fail the call returns `Unsupported`. A file
//!   gives `InvalidInput` ("not a socket", `WSAENOTSOCK`).
//!
//! # Determinism and faults
//! All randomness comes from one [`SimRng`] (SplitMix64) seeded by [`SimKernel::new`] or
//! [`SimKernel::with_faults`]: the same seed and the same sequence of calls (including posts
//! made from the calling thread) give exactly the same results, block contents and packet order.
//! Posts from other threads are timed by the OS scheduler, so only single-threaded runs are
//! reproducible. Each [`Faults`] field is a probability in permille, rolled at one fixed point:
//!
//! | fault | rolled | effect |
//! |---|---|---|
//! | `submit_failure` | every valid submit | returns `STATUS_INSUFFICIENT_RESOURCES`; nothing recorded, block untouched |
//! | `no_skip` | each association, and each helper handle when opened | the skip-on-success mode cannot be set: `associate` fails with `ResourceBusy` (the association stands), and a helper handle queues packets for polls that complete at once |
//! | `cancel_race` | a cancel that found its request | the request completes normally first (events = readiness ∩ requested, possibly none); the cancel returns `NOT_FOUND` |
//! | `spurious` | each dequeue, with polls pending | one random pending poll completes with `STATUS_SUCCESS` and 0 handles |
//! | `dequeue_error` | each dequeue | returns `STATUS_INSUFFICIENT_RESOURCES` as an error; nothing removed |
//! | `reorder` | each dequeue that finds ≥ 2 packets | this dequeue takes packets in random order |
//!
//! A fault at 0 never consumes randomness, so [`Faults::none`] runs are independent of the RNG.
//!
//! # Contract checks
//! The simulation panics on misuse that a real kernel would silently turn into memory corruption
//! or that is a bug in the test itself: submitting a block the kernel still holds (pending, or
//! completed with its packet not yet dequeued), and test-control calls on handles that are not
//! open. [`SimKernel::holds_block`] and [`SimKernel::pending_polls`] let tests check the reactor's
//! own invariants. Dropping the kernel with requests pending just forgets them: it never writes a
//! block after a request has left its tables. `SimKernel` holds raw block pointers and is
//! therefore `!Send`, like the reactor that owns it.
//!
//! # Where it differs from Windows
//! - **Handles.** Values are recycled at once, lowest first (Wine's order; Windows recycles too
//!   but in another order). Each object has exactly one handle: there is no `DuplicateHandle`, so
//!   every close is the *last* close and always reports `LOCAL_CLOSE`. The helper has no handle
//!   value and can never be closed.
//! - **Closing the issuing handle.** Windows does not cancel a poll when the handle it was issued
//!   on is closed (it ends on an event); the sim follows Wine (`STATUS_HANDLES_CLOSED` at once,
//!   buffer untouched). This only matters for a direct poll issued on one socket for another.
//! - **Readiness is a plain level set by the test.** No protocol runs: bits that Windows latches
//!   (`DISCONNECT`, `ABORT`, `CONNECT_FAIL`) stay until the test clears them, and nothing sets
//!   `SEND` or `RECEIVE` by itself.
//! - **Result buffer.** On success the status block's `information` is 0 (Windows stores the size
//!   of the output). A result with 0 handles (spurious, or a raced cancel with nothing ready)
//!   writes `number_of_handles = 0` and leaves `handles[0]` as requested, so a reactor that reads
//!   the handle without checking the count sees the *requested* mask. After a cancel or a
//!   `HANDLES_CLOSED`, `info` is untouched (Wine; on Windows it is "not meaningful").
//! - **Poll parameters.** Exactly one handle per poll (`number_of_handles != 1` gives
//!   `STATUS_INVALID_PARAMETER`); `timeout` and `exclusive` are ignored — polls never time out
//!   and never supersede each other, so "success with 0 handles" only comes from the `spurious`
//!   fault or [`SimKernel::complete_all_spuriously`].
//! - **Failure statuses.** A closed (or never opened) handle gives `STATUS_INVALID_HANDLE` from
//!   submit and cancel (Windows with strict handle checking raises an exception instead; a reused
//!   value would name the new object, as here). A poll issued on or naming a file or an LSP handle
//!   gives `STATUS_OBJECT_TYPE_MISMATCH` (what wineserver's handle lookup sets; Windows may answer
//!   `STATUS_INVALID_DEVICE_REQUEST` or `STATUS_INVALID_HANDLE`).
//! - **Skip on success** applies to success only, as the flag's documentation says: the sim
//!   never completes a poll at submit with a warning status. (Wine skips the packet for any
//!   non-error status; Windows' rule for warnings is undocumented.)
//! - **Association.** A second association fails with `ResourceBusy` (Windows:
//!   `ERROR_INVALID_PARAMETER`, which the real kernel layer maps to the same kind). Windows 8.1+
//!   can remove an association (`FileReplaceCompletionInformation`); the sim cannot.
//! - **The port.** Strict FIFO unless the `reorder` fault fires; there is one port, no
//!   concurrency limit, and no queue quota (posts never fail). `dequeue` with an empty `out`
//!   returns `InvalidInput` (the real call returns `STATUS_INVALID_PARAMETER`).
//! - **`base_socket`** is a model of the ioctl chain, not of real providers: `SIO_BSP_HANDLE_SELECT`
//!   is not modelled, and closing the handle under a layered handle (which a real provider
//!   prevents) makes `base_socket` on the layered handle fail with `InvalidInput`.

pub mod wait;

pub use wait::WaitPath;

use super::{
    HELPER_KEY, Kernel, POLL_TAG, PollBlock, PollVia, Post, RawSock, RawWaitable, Submitted,
    WAIT_KEY, WAIT_TAG, WAKE_KEY, WaitCancel, WaitId,
};
use crate::afd::{CompletionEntry, IoStatusBlock, NtStatus, NtStatusError, PollEvents};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// `STATUS_CONNECTION_REFUSED` (0xC0000236): the per-handle status of a poll that reports
/// `CONNECT_FAIL`.
pub const STATUS_CONNECTION_REFUSED: NtStatus = NtStatus(0xC000_0236_u32 as i32);

/// The first handle value the simulation hands out; later values are multiples of
/// [`HANDLE_STEP`] above it.
pub const FIRST_HANDLE: RawSock = 0x100;

/// The distance between handle values (NT handles are multiples of 4).
pub const HANDLE_STEP: RawSock = 4;

/// The deepest stack of layered handles `base_socket` follows before giving up.
const MAX_LSP_DEPTH: usize = 16;

/// A small deterministic pseudo-random generator (SplitMix64), the simulation's only source of
/// randomness; also handy for seeded test drivers.
#[derive(Debug, Clone)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator seeded with `seed` (every seed, 0 included, is fine).
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (multiply-shift; the bias is below 2⁻³² for the sizes used here).
    ///
    /// # Panics
    /// If `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "SimRng::below(0)");
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// True with probability `permille`/1000. 0 and ≥ 1000 consume no randomness.
    pub fn chance(&mut self, permille: u16) -> bool {
        match permille {
            0 => false,
            1000.. => true,
            p => self.below(1000) < u64::from(p),
        }
    }
}

/// Fault-injection probabilities, each in permille (0 = never, 1000 = always). See the module
/// documentation for where each is rolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Faults {
    /// A dequeue that finds at least two packets takes them in random order.
    pub reorder: u16,
    /// A cancel that found its request loses the race: the request completes normally and the
    /// cancel returns `NOT_FOUND`.
    pub cancel_race: u16,
    /// An association (and a helper handle, when it is opened) cannot be put in skip-on-success
    /// mode: `associate` then fails with `ResourceBusy` although the association stands, and a
    /// helper handle queues a packet for polls that complete at once.
    pub no_skip: u16,
    /// A valid submit fails with `STATUS_INSUFFICIENT_RESOURCES`.
    pub submit_failure: u16,
    /// A dequeue fails with `STATUS_INSUFFICIENT_RESOURCES`, removing nothing.
    pub dequeue_error: u16,
    /// A dequeue first completes one random pending poll with `STATUS_SUCCESS` and 0 handles.
    pub spurious: u16,
    /// A cancel of a wait still waiting finds its object signaled by another thread just before
    /// (see [`WaitPath`]'s model in the `wait` section of the module docs).
    pub wait_race: u16,
    /// A thread-pool callback due at a dequeue has not run yet ([`WaitPath::ThreadPool`]).
    pub callback_delay: u16,
    /// A cancel of a thread-pool wait still waiting meets the object's signal, which the pool's
    /// wait thread takes and then drops, running no callback: the cancel answers
    /// [`WaitCancel::NotSignaled`] and the signal is gone (what both Wines do,
    /// [`WaitPath::ThreadPool`] only).
    pub pool_cancel_loss: u16,
}

impl Faults {
    /// No faults.
    pub const fn none() -> Self {
        Self::all(0)
    }

    /// Every fault with the same probability (clamped to 1000).
    pub const fn all(permille: u16) -> Self {
        let p = if permille > 1000 { 1000 } else { permille };
        Self {
            reorder: p,
            cancel_race: p,
            no_skip: p,
            submit_failure: p,
            dequeue_error: p,
            spurious: p,
            wait_race: p,
            callback_delay: p,
            pool_cancel_loss: p,
        }
    }
}

/// Counters kept by a [`SimKernel`], for assertions and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SimStats {
    /// Polls accepted by `submit_poll` (it returned `PENDING` or `SUCCESS`).
    pub polls_submitted: u64,
    /// Submits refused for a bad handle or parameter (not counting injected failures).
    pub polls_rejected: u64,
    /// Accepted polls that completed, for any reason (cancelled ones included).
    pub polls_completed: u64,
    /// Polls that completed with `STATUS_CANCELLED`.
    pub polls_cancelled: u64,
    /// Completion packets that reached this port's queue (posts not included).
    pub packets_queued: u64,
    /// Completions whose block was written but whose packet went to no port or a foreign one.
    pub lost_packets: u64,
    /// Packets posted through [`SimPoster`]s.
    pub posts: u64,
    /// Packets removed by `dequeue`.
    pub packets_dequeued: u64,
    /// Injected `reorder` faults (dequeues that took packets in random order).
    pub reorders: u64,
    /// Injected `cancel_race` faults.
    pub cancel_races: u64,
    /// Injected `no_skip` faults on associations.
    pub no_skips: u64,
    /// Polls that completed at submit on a skip-on-success handle (no packet queued).
    pub completed_at_submit: u64,
    /// Helper handles opened.
    pub helpers_opened: u64,
    /// Injected `submit_failure` faults.
    pub submit_failures: u64,
    /// Injected `dequeue_error` faults.
    pub dequeue_errors: u64,
    /// Spurious completions (the `spurious` fault and [`SimKernel::complete_all_spuriously`]).
    pub spurious_completions: u64,
    /// Associations of a socket that a layered provider owns (a layered handle
    /// stands above it): each one breaks the provider's own I/O, whose completions then reach
    /// this port.
    pub provider_bases_associated: u64,
    /// The most polls one helper handle held at once.
    pub max_helper_polls: u64,
    /// Requests cancelled from outside the reactor ([`SimKernel::cancel_io`]).
    pub external_cancels: u64,
    /// Posts that failed on purpose ([`SimKernel::fail_posts`]).
    pub failed_posts: u64,
    /// Waits made by `open_wait`.
    pub waits_opened: u64,
    /// Waits armed by `arm_wait`.
    pub waits_armed: u64,
    /// `cancel_wait` calls.
    pub waits_cancelled: u64,
    /// Signals waits consumed (each satisfied wait: an auto-reset event's signal, one of a
    /// semaphore's, or a look at a manual-reset event or an ended process). Each one reaches the
    /// port as a packet, or a cancel reports it [`WaitCancel::Consumed`].
    pub signals_consumed: u64,
    /// Wait packets queued to the port.
    pub wait_packets_queued: u64,
    /// Satisfied waits whose callback gave up posting when a cancel met it (reported
    /// [`WaitCancel::Consumed`]).
    pub signals_unposted: u64,
    /// Injected `wait_race` faults.
    pub wait_races: u64,
    /// Injected `callback_delay` faults.
    pub callbacks_delayed: u64,
    /// Thread-pool callback posts that failed on purpose ([`SimKernel::fail_callback_posts`]).
    pub failed_callback_posts: u64,
    /// Signals a thread-pool wait took and dropped as a cancel met it (fault `pool_cancel_loss`):
    /// consumed, never posted, and not reported by the cancel.
    pub signals_dropped_by_pool: u64,
}

/// What a handle's object is associated with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Association {
    /// No port: completions of polls issued on it reach no queue.
    None,
    /// This kernel's port, under `key`.
    This {
        /// The completion key given to `associate`.
        key: usize,
    },
    /// Some other port ([`SimKernel::bind_to_foreign_port`]).
    Foreign,
}

/// A packet in the port's queue.
#[derive(Debug, Clone, Copy)]
struct Packet {
    entry: CompletionEntry,
    /// The address of the block the packet completes (0 for posted packets): the block stays the
    /// kernel's until the packet is dequeued.
    block: usize,
    /// The wait whose packet this is, if it is one.
    wait: Option<u32>,
}

#[derive(Debug, Default)]
struct PortState {
    packets: VecDeque<Packet>,
    posts: u64,
    /// Wake posts still to fail ([`SimKernel::fail_posts`]).
    fail_posts: u32,
    failed_posts: u64,
    /// While true, wake posts wait ([`SimKernel::hold_posts`]).
    hold_posts: bool,
    /// Wake posts waiting now.
    posts_waiting: usize,
}

/// The completion port: shared with every poster.
#[derive(Debug, Default)]
struct Port {
    state: Mutex<PortState>,
    ready: Condvar,
    /// Signalled when held posts are released.
    released: Condvar,
}

impl Port {
    fn lock(&self) -> MutexGuard<'_, PortState> {
        // The state is plain data and every update is a single push or pop: a panic elsewhere
        // cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, packet: Packet) {
        self.lock().packets.push_back(packet);
        self.ready.notify_all();
    }
}

/// Posts wake packets to a [`SimKernel`]'s port from any thread (`NtSetIoCompletion` under
/// [`WAKE_KEY`]).
#[derive(Debug, Clone)]
pub struct SimPoster {
    port: Arc<Port>,
}

impl Port {
    /// Queue a success packet with `key` and `apc_context` and wake a waiting dequeue.
    fn post(&self, key: usize, apc_context: usize) {
        let mut state = self.lock();
        state.posts += 1;
        state.packets.push_back(Packet {
            entry: CompletionEntry {
                key,
                apc_context,
                io_status: IoStatusBlock {
                    status_or_pointer: NtStatus::SUCCESS.0 as isize,
                    information: 0,
                },
            },
            block: 0,
            wait: None,
        });
        drop(state);
        self.ready.notify_all();
    }
}

impl Post for SimPoster {
    fn post_wake(&self, apc_context: usize) -> io::Result<()> {
        let mut state = self.port.lock();
        if state.hold_posts {
            state.posts_waiting += 1;
            self.port.ready.notify_all();
            while state.hold_posts {
                state = self
                    .port
                    .released
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            state.posts_waiting -= 1;
        }
        if state.fail_posts > 0 {
            state.fail_posts -= 1;
            state.failed_posts += 1;
            let status = NtStatus::INSUFFICIENT_RESOURCES;
            return Err(io::Error::new(status.error_kind(), NtStatusError(status)));
        }
        drop(state);
        self.port.post(crate::kernel::WAKE_KEY, apc_context);
        Ok(())
    }
}

/// A kernel object's private, never-reused identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ObjId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An AFD socket: pollable, has readiness.
    Socket,
    /// A file: can be associated, cannot be polled.
    File,
    /// A Layered Service Provider handle above `base`: not pollable by AFD.
    Layered { base: ObjId },
    /// An event, a semaphore or a process: waitable, not a socket.
    Waitable(wait::Flavor),
}

#[derive(Debug)]
struct Object {
    handle: RawSock,
    kind: Kind,
    readiness: PollEvents,
    assoc: Association,
    base_handle_fails: bool,
    bsp_fails: bool,
    /// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS`: a poll issued on it that completes at once queues
    /// no packet.
    skip_on_success: bool,
    /// A waitable object's signals (see the `wait` module).
    signals: u32,
    /// References waits hold (their duplicate handles): the object outlives its handle while
    /// any is left.
    dups: u32,
    /// Handles in the table that name it (more than one only for a waitable object,
    /// [`SimKernel::duplicate_handle`]).
    user_handles: u32,
}

/// The object a request was issued on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Issuer {
    /// Helper handle number `n`.
    Helper(u32),
    Object(ObjId),
}

/// A pending poll.
#[derive(Debug)]
struct Request {
    issuer: Issuer,
    polled: ObjId,
    block: NonNull<PollBlock>,
    apc_context: usize,
    requested: PollEvents,
}

/// How a completion treats the block's `info`.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Report these events (none: `number_of_handles = 0`).
    Events(PollEvents),
    /// Leave `info` as the reactor wrote it (cancelled, handles closed).
    Untouched,
}

/// The simulated kernel: a handle table of socket objects, one completion port and the helper
/// handle, driven by a test through its control methods. See the [module documentation](self).
#[derive(Debug)]
struct SimState {
    rng: SimRng,
    faults: Faults,
    port: Arc<Port>,
    handles: BTreeMap<RawSock, ObjId>,
    free_handles: BTreeSet<RawSock>,
    next_handle: RawSock,
    objects: BTreeMap<ObjId, Object>,
    next_object: u64,
    /// Pending requests by submission sequence (iteration order = submission order).
    pending: BTreeMap<u64, Request>,
    next_seq: u64,
    by_block: BTreeMap<usize, u64>,
    by_polled: BTreeMap<ObjId, BTreeSet<u64>>,
    by_issuer: BTreeMap<Issuer, BTreeSet<u64>>,
    stats: SimStats,
    /// Dequeues still to fail ([`SimKernel::fail_dequeues`]).
    fail_dequeues: u32,
    /// Helper handles opened so far, with their skip-on-success mode.
    helper_skips: BTreeMap<u32, bool>,
    /// Whether new helper handles are put in skip-on-success mode ([`SimKernel::set_helper_skip_mode`]).
    helper_skip_mode: bool,
    /// Real time each dequeue takes before looking at the queue ([`SimKernel::set_dequeue_delay`]).
    dequeue_delay: Duration,
    /// Waits (`open_wait` and the rest).
    waits: wait::Waits,
}

impl SimState {
    pub fn new(seed: u64) -> Self {
        Self::with_faults(seed, Faults::none())
    }

    pub fn with_faults(seed: u64, faults: Faults) -> Self {
        Self {
            rng: SimRng::new(seed),
            faults,
            port: Arc::default(),
            handles: BTreeMap::new(),
            free_handles: BTreeSet::new(),
            next_handle: FIRST_HANDLE,
            objects: BTreeMap::new(),
            next_object: 1,
            pending: BTreeMap::new(),
            next_seq: 0,
            by_block: BTreeMap::new(),
            by_polled: BTreeMap::new(),
            by_issuer: BTreeMap::new(),
            stats: SimStats::default(),
            fail_dequeues: 0,
            helper_skips: BTreeMap::new(),
            helper_skip_mode: true,
            dequeue_delay: Duration::ZERO,
            waits: wait::Waits::default(),
        }
    }

    pub fn faults(&self) -> Faults {
        self.faults
    }

    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    // ---- Handles and objects -------------------------------------------------------------------

    pub fn open_socket(&mut self) -> RawSock {
        self.open(Kind::Socket, false)
    }

    pub fn open_non_socket(&mut self) -> RawSock {
        self.open(Kind::File, false)
    }

    pub fn open_layered_socket(&mut self, base: RawSock) -> RawSock {
        let base_id = match self.lookup(base) {
            Some((id, obj)) if matches!(obj.kind, Kind::Socket | Kind::Layered { .. }) => id,
            _ => panic!("open_layered_socket: {base:#x} is not an open socket"),
        };
        self.open(Kind::Layered { base: base_id }, true)
    }

    pub fn close_socket(&mut self, s: RawSock) {
        let Some(id) = self.handles.remove(&s) else {
            panic!("close_socket: handle {s:#x} is not open");
        };
        self.free_handles.insert(s);
        let obj = self.objects.get_mut(&id).expect("live object");
        if matches!(obj.kind, Kind::Waitable(_)) {
            // Other handles, and the duplicates waits hold, keep the object alive.
            obj.user_handles -= 1;
            if obj.dups == 0 && obj.user_handles == 0 {
                self.objects.remove(&id);
            }
            return;
        }
        let mut seqs: BTreeSet<u64> = self.by_polled.get(&id).cloned().unwrap_or_default();
        if let Some(issued) = self.by_issuer.get(&Issuer::Object(id)) {
            seqs.extend(issued.iter().copied());
        }
        // Completions run while the object still exists, so they find its association.
        for seq in seqs {
            let req = self.take(seq);
            if req.polled == id {
                self.finish(
                    req,
                    NtStatus::SUCCESS,
                    Outcome::Events(PollEvents::LOCAL_CLOSE),
                );
            } else {
                self.finish(req, NtStatus::HANDLES_CLOSED, Outcome::Untouched);
            }
        }
        self.objects.remove(&id);
    }

    pub fn bind_to_foreign_port(&mut self, s: RawSock) -> io::Result<()> {
        self.associate_with(s, Association::Foreign)
    }

    pub fn set_base_handle_fails(&mut self, s: RawSock, fails: bool) {
        self.object_mut(s, "set_base_handle_fails")
            .base_handle_fails = fails;
    }

    pub fn set_bsp_handle_fails(&mut self, s: RawSock, fails: bool) {
        self.object_mut(s, "set_bsp_handle_fails").bsp_fails = fails;
    }

    // ---- Readiness -----------------------------------------------------------------------------

    pub fn set_readiness(&mut self, s: RawSock, events: PollEvents) {
        let id = self.socket_id(s, "set_readiness");
        self.set_level(id, events);
    }

    pub fn add_readiness(&mut self, s: RawSock, events: PollEvents) {
        let id = self.socket_id(s, "add_readiness");
        let level = self.objects[&id].readiness | events;
        self.set_level(id, level);
    }

    pub fn clear_readiness(&mut self, s: RawSock, events: PollEvents) {
        let id = self.socket_id(s, "clear_readiness");
        let level = self.objects[&id].readiness.difference(events);
        self.set_level(id, level);
    }

    pub fn cancel_io(&mut self, s: RawSock) -> usize {
        let Some(&id) = self.handles.get(&s) else {
            panic!("cancel_io: handle {s:#x} is not open");
        };
        let seqs: Vec<u64> = self
            .by_issuer
            .get(&Issuer::Object(id))
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        for &seq in &seqs {
            let req = self.take(seq);
            self.stats.external_cancels += 1;
            self.finish(req, NtStatus::CANCELLED, Outcome::Untouched);
        }
        seqs.len()
    }

    pub fn complete_all_spuriously(&mut self) -> usize {
        let seqs: Vec<u64> = self.pending.keys().copied().collect();
        for &seq in &seqs {
            let req = self.take(seq);
            self.stats.spurious_completions += 1;
            self.finish(req, NtStatus::SUCCESS, Outcome::Events(PollEvents::NONE));
        }
        seqs.len()
    }

    // ---- Introspection -------------------------------------------------------------------------

    pub fn pending_polls(&self) -> usize {
        self.pending.len()
    }

    pub fn queued_entries(&self) -> Vec<CompletionEntry> {
        self.port.lock().packets.iter().map(|p| p.entry).collect()
    }

    pub fn polls_on(&self, s: RawSock) -> usize {
        self.lookup(s)
            .and_then(|(id, _)| self.by_polled.get(&id))
            .map_or(0, BTreeSet::len)
    }

    pub fn is_pending(&self, block: NonNull<PollBlock>) -> bool {
        self.by_block.contains_key(&block.as_ptr().addr())
    }

    pub fn holds_block(&self, block: NonNull<PollBlock>) -> bool {
        let addr = block.as_ptr().addr();
        self.by_block.contains_key(&addr)
            || self.port.lock().packets.iter().any(|p| p.block == addr)
    }

    pub fn queued_packets(&self) -> usize {
        self.port.lock().packets.len()
    }

    pub fn stats(&self) -> SimStats {
        let port = self.port.lock();
        SimStats {
            posts: port.posts,
            failed_posts: port.failed_posts,
            ..self.stats
        }
    }

    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    pub fn is_open(&self, s: RawSock) -> bool {
        self.handles.contains_key(&s)
    }

    pub fn readiness(&self, s: RawSock) -> Option<PollEvents> {
        match self.lookup(s) {
            Some((_, obj)) if obj.kind == Kind::Socket => Some(obj.readiness),
            _ => None,
        }
    }

    pub fn association(&self, s: RawSock) -> Option<Association> {
        self.lookup(s).map(|(_, obj)| obj.assoc)
    }

    // ---- Internals -----------------------------------------------------------------------------

    fn open(&mut self, kind: Kind, base_handle_fails: bool) -> RawSock {
        let handle = self.free_handles.pop_first().unwrap_or_else(|| {
            let h = self.next_handle;
            self.next_handle += HANDLE_STEP;
            h
        });
        let id = ObjId(self.next_object);
        self.next_object += 1;
        self.objects.insert(
            id,
            Object {
                handle,
                kind,
                readiness: PollEvents::NONE,
                assoc: Association::None,
                base_handle_fails,
                bsp_fails: false,
                skip_on_success: false,
                signals: 0,
                dups: 0,
                user_handles: 1,
            },
        );
        self.handles.insert(handle, id);
        handle
    }

    fn lookup(&self, s: RawSock) -> Option<(ObjId, &Object)> {
        let id = *self.handles.get(&s)?;
        Some((id, &self.objects[&id]))
    }

    fn object_mut(&mut self, s: RawSock, what: &str) -> &mut Object {
        let Some(id) = self.handles.get(&s) else {
            panic!("{what}: handle {s:#x} is not open");
        };
        self.objects
            .get_mut(id)
            .expect("every handle names a live object")
    }

    fn socket_id(&self, s: RawSock, what: &str) -> ObjId {
        match self.lookup(s) {
            Some((id, obj)) if obj.kind == Kind::Socket => id,
            Some(_) => panic!("{what}: handle {s:#x} is not a socket"),
            None => panic!("{what}: handle {s:#x} is not open"),
        }
    }

    fn associate_with(&mut self, s: RawSock, assoc: Association) -> io::Result<()> {
        let Some(&id) = self.handles.get(&s) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("handle {s:#x} is not open"),
            ));
        };
        let obj = self
            .objects
            .get_mut(&id)
            .expect("every handle names a live object");
        if obj.assoc != Association::None {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!("handle {s:#x} is already associated with a completion port"),
            ));
        }
        obj.assoc = assoc;
        let owned_by_provider = self
            .objects
            .values()
            .any(|o| o.kind == Kind::Layered { base: id });
        if owned_by_provider && matches!(assoc, Association::This { .. }) {
            self.stats.provider_bases_associated += 1;
        }
        Ok(())
    }

    fn set_level(&mut self, id: ObjId, level: PollEvents) {
        self.objects.get_mut(&id).expect("live object").readiness = level;
        if level.is_empty() {
            return;
        }
        let seqs: Vec<u64> = self
            .by_polled
            .get(&id)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        for seq in seqs {
            let events = level & self.pending[&seq].requested;
            if !events.is_empty() {
                let req = self.take(seq);
                self.finish(req, NtStatus::SUCCESS, Outcome::Events(events));
            }
        }
    }

    /// Remove a pending request from every table.
    fn take(&mut self, seq: u64) -> Request {
        let req = self.pending.remove(&seq).expect("indexed request exists");
        self.by_block.remove(&req.block.as_ptr().addr());
        unindex(&mut self.by_polled, req.polled, seq);
        unindex(&mut self.by_issuer, req.issuer, seq);
        req
    }

    /// Write a completed request's result into its block (never touched again afterwards).
    fn write_block(&self, req: &Request, status: NtStatus, outcome: Outcome) {
        let p = req.block.as_ptr();
        // SAFETY: the Kernel memory contract: from a successful `submit_poll` until its packet is
        // dequeued (or the submit returned a completed-at-once success) the block is valid for
        // writes, does not move and is not accessed by the caller. This request was pending until
        // `take` just now, so no packet for it exists yet. The writes go through the raw pointer
        // and create no references.
        unsafe {
            if let Outcome::Events(events) = outcome {
                if events.is_empty() {
                    (*p).info.number_of_handles = 0;
                } else {
                    (*p).info.number_of_handles = 1;
                    (*p).info.handles[0].events = events;
                    (*p).info.handles[0].status = if events.contains(PollEvents::CONNECT_FAIL) {
                        STATUS_CONNECTION_REFUSED
                    } else {
                        NtStatus::SUCCESS
                    };
                }
            }
            (&raw mut (*p).iosb).write(IoStatusBlock {
                status_or_pointer: status.0 as isize,
                information: 0,
            });
        }
    }

    /// Complete a request already removed from the tables: write its block, then route its
    /// packet. The block is never touched again.
    fn finish(&mut self, req: Request, status: NtStatus, outcome: Outcome) {
        let p = req.block.as_ptr();
        self.write_block(&req, status, outcome);
        self.stats.polls_completed += 1;
        if status == NtStatus::CANCELLED {
            self.stats.polls_cancelled += 1;
        }
        let key = match req.issuer {
            Issuer::Helper(_) => Some(HELPER_KEY),
            Issuer::Object(id) => match self.objects.get(&id).map(|o| o.assoc) {
                Some(Association::This { key }) => Some(key),
                _ => None,
            },
        };
        match key {
            Some(key) => {
                self.stats.packets_queued += 1;
                self.port.push(Packet {
                    entry: CompletionEntry {
                        key,
                        apc_context: req.apc_context,
                        io_status: IoStatusBlock {
                            status_or_pointer: status.0 as isize,
                            information: 0,
                        },
                    },
                    block: p.addr(),
                    wait: None,
                });
            }
            None => self.stats.lost_packets += 1,
        }
    }

    fn reject(&mut self, status: NtStatus) -> Submitted {
        self.stats.polls_rejected += 1;
        Submitted::Refused(status)
    }

    /// The handle one `SIO_BASE_HANDLE` returns for `obj`: the socket at the bottom.
    fn bottom_handle(&self, obj: &Object) -> io::Result<RawSock> {
        let mut cur = obj;
        for _ in 0..=MAX_LSP_DEPTH {
            match cur.kind {
                Kind::Socket => return Ok(cur.handle),
                Kind::File | Kind::Waitable(_) => return Err(not_a_socket()),
                Kind::Layered { base } => cur = self.objects.get(&base).ok_or_else(base_closed)?,
            }
        }
        Err(too_deep())
    }

    /// The handle one `SIO_BSP_HANDLE_POLL` returns for `obj`: one provider down.
    fn provider_below(&self, obj: &Object) -> io::Result<RawSock> {
        match obj.kind {
            Kind::Socket => Ok(obj.handle),
            Kind::File | Kind::Waitable(_) => Err(not_a_socket()),
            Kind::Layered { base } => self
                .objects
                .get(&base)
                .map(|b| b.handle)
                .ok_or_else(base_closed),
        }
    }
}

fn unindex<K: Ord>(map: &mut BTreeMap<K, BTreeSet<u64>>, key: K, seq: u64) {
    if let Some(set) = map.get_mut(&key) {
        set.remove(&seq);
        if set.is_empty() {
            map.remove(&key);
        }
    }
}

fn not_a_socket() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "not a socket")
}

fn base_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "the handle under this layered handle was closed",
    )
}

fn too_deep() -> io::Error {
    io::Error::other("layered service providers nested too deep")
}

impl SimState {
    fn base_socket(&mut self, socket: RawSock) -> io::Result<RawSock> {
        let mut cur = socket;
        for _ in 0..=MAX_LSP_DEPTH {
            let Some((_, obj)) = self.lookup(cur) else {
                return Err(not_a_socket());
            };
            let next = if matches!(obj.kind, Kind::File | Kind::Waitable(_)) {
                return Err(not_a_socket());
            } else if !obj.base_handle_fails {
                self.bottom_handle(obj)?
            } else if !obj.bsp_fails {
                self.provider_below(obj)?
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "SIO_BASE_HANDLE and SIO_BSP_HANDLE_POLL both failed",
                ));
            };
            if next == cur {
                return Ok(cur);
            }
            cur = next;
        }
        Err(too_deep())
    }

    fn associate(&mut self, socket: RawSock, key: usize) -> io::Result<()> {
        self.associate_with(socket, Association::This { key })?;
        if self.rng.chance(self.faults.no_skip) {
            self.stats.no_skips += 1;
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "associated, but FILE_SKIP_COMPLETION_PORT_ON_SUCCESS could not be set",
            ));
        }
        self.object_mut(socket, "associate").skip_on_success = true;
        Ok(())
    }

    unsafe fn submit_poll(
        &mut self,
        via: PollVia,
        socket: RawSock,
        block: NonNull<PollBlock>,
        apc_context: usize,
    ) -> Submitted {
        let issuer = match via {
            PollVia::Helper(n) => {
                self.open_helper(n);
                Issuer::Helper(n)
            }
            PollVia::Socket => match self.lookup(socket) {
                None => return self.reject(NtStatus::INVALID_HANDLE),
                Some((_, obj)) if obj.kind != Kind::Socket => {
                    return self.reject(NtStatus::OBJECT_TYPE_MISMATCH);
                }
                Some((id, _)) => Issuer::Object(id),
            },
        };
        assert!(
            !self.holds_block(block),
            "memory contract violated: block {block:p} submitted while the kernel still holds it"
        );
        // SAFETY: our caller guarantees the block is valid for reads (the `submit_poll`
        // contract); the read goes through the raw pointer and makes a copy.
        let info = unsafe { (&raw const (*block.as_ptr()).info).read() };
        if info.number_of_handles != 1 {
            return self.reject(NtStatus::INVALID_PARAMETER);
        }
        let polled = match self.lookup(info.handles[0].handle as RawSock) {
            None => return self.reject(NtStatus::INVALID_HANDLE),
            Some((_, obj)) if obj.kind != Kind::Socket => {
                return self.reject(NtStatus::OBJECT_TYPE_MISMATCH);
            }
            Some((id, _)) => id,
        };
        if self.rng.chance(self.faults.submit_failure) {
            self.stats.submit_failures += 1;
            return Submitted::Refused(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let requested = info.handles[0].events;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Request {
                issuer,
                polled,
                block,
                apc_context,
                requested,
            },
        );
        self.by_block.insert(block.as_ptr().addr(), seq);
        self.by_polled.entry(polled).or_default().insert(seq);
        self.by_issuer.entry(issuer).or_default().insert(seq);
        self.stats.polls_submitted += 1;
        if let Issuer::Helper(_) = issuer {
            let held = self.by_issuer[&issuer].len() as u64;
            self.stats.max_helper_polls = self.stats.max_helper_polls.max(held);
        }

        let events = self.objects[&polled].readiness & requested;
        if events.is_empty() {
            return Submitted::Queued;
        }
        let req = self.take(seq);
        let skips = match issuer {
            Issuer::Object(id) => self.objects[&id].skip_on_success,
            Issuer::Helper(n) => self.helper_skips[&n],
        };
        if skips {
            // FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: the result is written, no packet is queued.
            self.write_block(&req, NtStatus::SUCCESS, Outcome::Events(events));
            self.stats.polls_completed += 1;
            self.stats.completed_at_submit += 1;
            return Submitted::Completed;
        }
        // Completed at once on a handle without the mode: NT returns STATUS_SUCCESS and still
        // queues the packet.
        self.finish(req, NtStatus::SUCCESS, Outcome::Events(events));
        Submitted::Queued
    }

    /// Open helper handle `n` on first use; its skip-on-success mode is set then, unless the
    /// `no_skip` fault strikes.
    fn open_helper(&mut self, n: u32) {
        if !self.helper_skips.contains_key(&n) {
            let skips = self.helper_skip_mode && !self.rng.chance(self.faults.no_skip);
            self.helper_skips.insert(n, skips);
            self.stats.helpers_opened += 1;
        }
    }

    fn cancel(&mut self, via: PollVia, socket: RawSock, block: NonNull<PollBlock>) -> NtStatus {
        let issuer = match via {
            PollVia::Helper(n) => Issuer::Helper(n),
            PollVia::Socket => match self.lookup(socket) {
                None => return NtStatus::INVALID_HANDLE,
                Some((id, _)) => Issuer::Object(id),
            },
        };
        let Some(&seq) = self.by_block.get(&block.as_ptr().addr()) else {
            return NtStatus::NOT_FOUND;
        };
        if self.pending[&seq].issuer != issuer {
            return NtStatus::NOT_FOUND;
        }
        let req = self.take(seq);
        if self.rng.chance(self.faults.cancel_race) {
            self.stats.cancel_races += 1;
            let events = self.objects[&req.polled].readiness & req.requested;
            self.finish(req, NtStatus::SUCCESS, Outcome::Events(events));
            return NtStatus::NOT_FOUND;
        }
        self.finish(req, NtStatus::CANCELLED, Outcome::Untouched);
        NtStatus::SUCCESS
    }

    fn dequeue(
        &mut self,
        out: &mut [CompletionEntry],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        if out.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dequeue into an empty buffer",
            ));
        }
        if !self.dequeue_delay.is_zero() {
            std::thread::sleep(self.dequeue_delay);
        }
        // The thread pool runs the callbacks of satisfied waits meanwhile.
        self.run_callbacks();
        if self.fail_dequeues > 0 {
            self.fail_dequeues -= 1;
            self.stats.dequeue_errors += 1;
            let status = NtStatus::INSUFFICIENT_RESOURCES;
            return Err(io::Error::new(status.error_kind(), NtStatusError(status)));
        }
        if !self.pending.is_empty() && self.rng.chance(self.faults.spurious) {
            let k = self.rng.below(self.pending.len() as u64) as usize;
            let seq = *self.pending.keys().nth(k).expect("k < len");
            let req = self.take(seq);
            self.stats.spurious_completions += 1;
            self.finish(req, NtStatus::SUCCESS, Outcome::Events(PollEvents::NONE));
        }
        if self.rng.chance(self.faults.dequeue_error) {
            self.stats.dequeue_errors += 1;
            // The same error on every platform (no RtlNtStatusToDosError translation), so
            // simulated runs behave identically natively and under Wine.
            let status = NtStatus::INSUFFICIENT_RESOURCES;
            return Err(io::Error::new(status.error_kind(), NtStatusError(status)));
        }

        let port = Arc::clone(&self.port);
        let mut state = port.lock();
        if state.packets.is_empty() {
            let deadline = match timeout {
                Some(d) if d.is_zero() => return Ok(0),
                // A timeout too large for an Instant is as good as none.
                Some(d) => Instant::now().checked_add(d),
                None => None,
            };
            while state.packets.is_empty() {
                state = match deadline {
                    None => port
                        .ready
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner),
                    Some(deadline) => {
                        let now = Instant::now();
                        if now >= deadline {
                            return Ok(0);
                        }
                        port.ready
                            .wait_timeout(state, deadline - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
            }
        }

        let n = out.len().min(state.packets.len());
        let reorder = state.packets.len() >= 2 && self.rng.chance(self.faults.reorder);
        if reorder {
            self.stats.reorders += 1;
        }
        let mut waits_done = Vec::new();
        for slot in &mut out[..n] {
            let packet = if reorder {
                let i = self.rng.below(state.packets.len() as u64) as usize;
                state.packets.remove(i)
            } else {
                state.packets.pop_front()
            };
            let packet = packet.expect("n <= queue length");
            waits_done.extend(packet.wait);
            *slot = packet.entry;
        }
        drop(state);
        for i in waits_done {
            self.wait_packet_dequeued(i);
        }
        self.stats.packets_dequeued += n as u64;
        Ok(n)
    }

    fn poster(&self) -> SimPoster {
        SimPoster {
            port: Arc::clone(&self.port),
        }
    }

    fn inject_packet(&mut self, key: usize, apc_context: usize) -> io::Result<()> {
        if apc_context & POLL_TAG != 0
            || key == WAKE_KEY
            || (key == WAIT_KEY && apc_context & WAIT_TAG != 0)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a packet with a tagged ApcContext or the wake key would pass for one of the \
                 reactor's own (the Kernel contract forbids it)",
            ));
        }
        self.port.post(key, apc_context);
        Ok(())
    }
}

/// The simulated NT kernel: a seeded, deterministic model of sockets, handles, one completion
/// port and AFD polls, with fault injection (see the module docs).
///
/// Test control (opening and closing sockets, readiness, faults) and introspection take `&self`,
/// so a reactor's kernel can be driven through [`Reactor::kernel`](crate::Reactor::kernel)
/// without ever handing out `&mut` access to it.
#[derive(Debug)]
pub struct SimKernel {
    state: RefCell<SimState>,
}

impl SimKernel {
    /// A kernel without faults, seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: RefCell::new(SimState::new(seed)),
        }
    }

    /// A kernel seeded with `seed` that injects `faults`.
    pub fn with_faults(seed: u64, faults: Faults) -> Self {
        Self {
            state: RefCell::new(SimState::with_faults(seed, faults)),
        }
    }

    /// The faults being injected.
    pub fn faults(&self) -> Faults {
        self.state.borrow().faults()
    }

    /// Change the faults from now on (e.g. [`Faults::none`] for a clean teardown).
    pub fn set_faults(&self, faults: Faults) {
        self.state.borrow_mut().set_faults(faults)
    }

    /// Create a socket object (not ready, not associated) under the lowest free handle value.
    pub fn open_socket(&self) -> RawSock {
        self.state.borrow_mut().open_socket()
    }

    /// Create a file object under the lowest free handle value: it can be associated, but
    /// `base_socket` on it fails with `InvalidInput` and a poll issued on or naming it fails with
    /// `STATUS_OBJECT_TYPE_MISMATCH`.
    pub fn open_non_socket(&self) -> RawSock {
        self.state.borrow_mut().open_non_socket()
    }

    /// Create a Layered Service Provider handle above `base` (a socket or another layered
    /// handle). `SIO_BASE_HANDLE` fails on it (see [`SimKernel::set_base_handle_fails`]) and the
    /// BSP fallback gives `base`, so `base_socket` resolves it to the socket at the bottom. AFD
    /// rejects polls issued on or naming it (`STATUS_OBJECT_TYPE_MISMATCH`).
    ///
    /// # Panics
    /// If `base` is not an open socket or layered handle.
    pub fn open_layered_socket(&self, base: RawSock) -> RawSock {
        self.state.borrow_mut().open_layered_socket(base)
    }

    /// Close the handle `s` (any kind) and destroy its object. Every pending poll of the object
    /// completes with `STATUS_SUCCESS` and `LOCAL_CLOSE`; a poll only issued on it (for another
    /// object) completes with `STATUS_HANDLES_CLOSED`, its info untouched. The value becomes the
    /// lowest free one again.
    ///
    /// # Panics
    /// If `s` is not open.
    pub fn close_socket(&self, s: RawSock) {
        self.state.borrow_mut().close_socket(s)
    }

    /// Associate `s`'s object with another completion port: packets of polls issued directly on
    /// it will never reach this kernel's queue.
    ///
    /// # Errors
    /// As [`Kernel::associate`]: `InvalidInput` if `s` is not open, `ResourceBusy` if the object is
    /// already associated.
    pub fn bind_to_foreign_port(&self, s: RawSock) -> io::Result<()> {
        self.state.borrow_mut().bind_to_foreign_port(s)
    }

    /// Make `SIO_BASE_HANDLE` fail (or succeed) on `s` (by default it fails only on layered
    /// handles).
    ///
    /// # Panics
    /// If `s` is not open.
    pub fn set_base_handle_fails(&self, s: RawSock, fails: bool) {
        self.state.borrow_mut().set_base_handle_fails(s, fails)
    }

    /// Make the `SIO_BSP_HANDLE_POLL` fallback fail (or succeed) on `s` (by default it succeeds).
    /// With both steps failing, `base_socket(s)` returns `Unsupported`.
    ///
    /// # Panics
    /// If `s` is not open.
    pub fn set_bsp_handle_fails(&self, s: RawSock, fails: bool) {
        self.state.borrow_mut().set_bsp_handle_fails(s, fails)
    }

    /// Replace the readiness of socket `s`; completes every pending poll it now satisfies.
    ///
    /// # Panics
    /// If `s` is not an open socket (readiness belongs to AFD socket objects, not to files or
    /// layered handles).
    pub fn set_readiness(&self, s: RawSock, events: PollEvents) {
        self.state.borrow_mut().set_readiness(s, events)
    }

    /// Add `events` to the readiness of socket `s`; completes every pending poll it now
    /// satisfies.
    ///
    /// # Panics
    /// If `s` is not an open socket.
    pub fn add_readiness(&self, s: RawSock, events: PollEvents) {
        self.state.borrow_mut().add_readiness(s, events)
    }

    /// Remove `events` from the readiness of socket `s`.
    ///
    /// # Panics
    /// If `s` is not an open socket.
    pub fn clear_readiness(&self, s: RawSock, events: PollEvents) {
        self.state.borrow_mut().clear_readiness(s, events)
    }

    /// Complete every pending poll with `STATUS_SUCCESS` and 0 handles (as a timeout or a
    /// superseding exclusive poll would); returns how many.
    pub fn complete_all_spuriously(&self) -> usize {
        self.state.borrow_mut().complete_all_spuriously()
    }

    /// Cancel every pending request issued on `s`'s object, as a user's `CancelIoEx(s, NULL)`
    /// (or `NtCancelIoFile`) would: each completes with `STATUS_CANCELLED`. Polls issued through
    /// the helper are not touched (they were issued on another handle). Returns how many.
    ///
    /// # Panics
    /// If `s` is not open.
    pub fn cancel_io(&self, s: RawSock) -> usize {
        self.state.borrow_mut().cancel_io(s)
    }

    /// Make the next `n` dequeues fail with `STATUS_INSUFFICIENT_RESOURCES`, removing nothing.
    pub fn fail_dequeues(&self, n: u32) {
        self.state.borrow_mut().fail_dequeues = n;
    }

    /// Make every dequeue first sleep `delay` in real time (a slow kernel call).
    pub fn set_dequeue_delay(&self, delay: Duration) {
        self.state.borrow_mut().dequeue_delay = delay;
    }

    /// Make the next `n` wake posts fail with `STATUS_INSUFFICIENT_RESOURCES` (from any thread).
    pub fn fail_posts(&self, n: u32) {
        self.state.borrow().port.lock().fail_posts = n;
    }

    /// While `hold` is true, wake posts (from any thread) wait inside the post call; setting it
    /// false lets them go on (and fail, if [`SimKernel::fail_posts`] says so).
    pub fn hold_posts(&self, hold: bool) {
        let state = self.state.borrow();
        state.port.lock().hold_posts = hold;
        if !hold {
            state.port.released.notify_all();
        }
    }

    /// Wake posts waiting inside a held post call now.
    pub fn posts_waiting(&self) -> usize {
        self.state.borrow().port.lock().posts_waiting
    }

    /// Whether helper handles opened from now on are put in skip-on-success mode (default: yes,
    /// as the NT kernel does).
    pub fn set_helper_skip_mode(&self, skip: bool) {
        self.state.borrow_mut().helper_skip_mode = skip;
    }

    /// Set `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` on `s`'s object, as its owner may do before
    /// lending it: a poll issued on it that completes at once then queues no packet.
    ///
    /// # Panics
    /// If `s` is not open.
    pub fn set_skip_on_success(&self, s: RawSock) {
        self.state
            .borrow_mut()
            .object_mut(s, "set_skip_on_success")
            .skip_on_success = true;
    }

    /// Requests the kernel still holds (submitted, not yet completed).
    pub fn pending_polls(&self) -> usize {
        self.state.borrow().pending_polls()
    }

    /// The packets queued now, oldest first (for debugging test failures).
    pub fn queued_entries(&self) -> Vec<CompletionEntry> {
        self.state.borrow().queued_entries()
    }

    /// Number of pending requests that poll the socket behind handle `s` (0 if not open).
    ///
    /// Test drivers use it to respect the reactor's contract: a registered socket may be closed
    /// without deregistering only while the kernel holds a poll for it (its close then completes
    /// that poll with `LOCAL_CLOSE`).
    pub fn polls_on(&self, s: RawSock) -> usize {
        self.state.borrow().polls_on(s)
    }

    /// True if a pending request names `block`.
    pub fn is_pending(&self, block: NonNull<PollBlock>) -> bool {
        self.state.borrow().is_pending(block)
    }

    /// True if the kernel owns `block` under the memory contract: a request naming it is pending,
    /// or it completed and its packet is still queued.
    pub fn holds_block(&self, block: NonNull<PollBlock>) -> bool {
        self.state.borrow().holds_block(block)
    }

    /// Packets in the port's queue (completions and posts).
    pub fn queued_packets(&self) -> usize {
        self.state.borrow().queued_packets()
    }

    /// The counters so far.
    pub fn stats(&self) -> SimStats {
        self.state.borrow().stats()
    }

    /// Open handles (sockets, files and layered handles; not the helper).
    pub fn open_handles(&self) -> usize {
        self.state.borrow().open_handles()
    }

    /// True if `s` is an open handle.
    pub fn is_open(&self, s: RawSock) -> bool {
        self.state.borrow().is_open(s)
    }

    /// The readiness of socket `s`, or `None` if `s` is not an open socket.
    pub fn readiness(&self, s: RawSock) -> Option<PollEvents> {
        self.state.borrow().readiness(s)
    }

    /// What `s`'s object is associated with, or `None` if `s` is not open.
    pub fn association(&self, s: RawSock) -> Option<Association> {
        self.state.borrow().association(s)
    }
    /// Queue a packet the reactor did not cause (what user overlapped I/O on an associated socket
    /// would produce): `key` and `apc_context` as given, `STATUS_SUCCESS`. For testing the
    /// reactor's stale-packet handling.
    ///
    /// # Errors
    /// `InvalidInput` for a packet that would pass for one of the reactor's own: an ApcContext
    /// with [`POLL_TAG`] set, the key [`WAKE_KEY`], or the key [`WAIT_KEY`] with an ApcContext
    /// carrying [`WAIT_TAG`]. Such a packet could complete a poll the kernel still holds (or
    /// pass for a wait's), and no safe call may do that.
    pub fn inject_packet(&self, key: usize, apc_context: usize) -> io::Result<()> {
        self.state.borrow_mut().inject_packet(key, apc_context)
    }
}

// SAFETY: `dequeue` returns only packets this simulation produced (completions of polls
// submitted through it, each exactly once, written into their block before they are queued;
// wakes from its posters; and packets a test injected on purpose through `&self` controls, which
// the reactor treats as foreign), and blocks are written only while their request is held.
unsafe impl Kernel for SimKernel {
    type Poster = SimPoster;

    fn base_socket(&mut self, socket: RawSock, _verify: bool) -> io::Result<RawSock> {
        // As on Windows: SIO_BASE_HANDLE itself refuses a non-socket, so there is nothing to skip.
        self.state.get_mut().base_socket(socket)
    }

    fn associate(&mut self, socket: RawSock, key: usize) -> io::Result<()> {
        self.state.get_mut().associate(socket, key)
    }

    unsafe fn submit_poll(
        &mut self,
        via: PollVia,
        socket: RawSock,
        block: NonNull<PollBlock>,
        apc_context: usize,
    ) -> Submitted {
        // SAFETY: the caller's contract, forwarded unchanged.
        unsafe {
            self.state
                .get_mut()
                .submit_poll(via, socket, block, apc_context)
        }
    }

    fn cancel(&mut self, via: PollVia, socket: RawSock, block: NonNull<PollBlock>) -> NtStatus {
        self.state.get_mut().cancel(via, socket, block)
    }

    fn dequeue(
        &mut self,
        out: &mut [CompletionEntry],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        self.state.get_mut().dequeue(out, timeout)
    }

    fn poster(&self) -> SimPoster {
        self.state.borrow().poster()
    }

    fn open_wait(&mut self, handle: RawWaitable) -> io::Result<WaitId> {
        self.state.get_mut().open_wait(handle)
    }

    fn arm_wait(&mut self, id: WaitId, apc_context: usize) -> io::Result<()> {
        self.state.get_mut().arm_wait(id, apc_context)
    }

    fn cancel_wait(&mut self, id: WaitId) -> WaitCancel {
        self.state.get_mut().cancel_wait(id)
    }

    fn close_wait(&mut self, id: WaitId) {
        self.state.get_mut().close_wait(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::afd::AfdPollInfo;
    use std::thread;

    const RECV: PollEvents = PollEvents::RECEIVE;
    const SEND: PollEvents = PollEvents::SEND;
    /// What the reactor always requests on top of the interest.
    const ALWAYS: PollEvents = PollEvents(PollEvents::CONNECT_FAIL.0 | PollEvents::LOCAL_CLOSE.0);

    /// A heap block addressed only through its raw pointer, as the reactor does; freed on drop.
    struct Blk(NonNull<PollBlock>);

    impl Blk {
        fn new(socket: RawSock, events: PollEvents) -> Self {
            let blk = Blk(NonNull::from(Box::leak(Box::default())));
            blk.set(socket, events);
            blk
        }

        /// Re-initialise the request (only while the kernel does not hold the block).
        fn set(&self, socket: RawSock, events: PollEvents) {
            // SAFETY: the pointer came from `Box::leak` and stays valid until `drop`; the tests
            // only call this while the kernel does not own the block.
            unsafe {
                self.0.as_ptr().write(PollBlock {
                    iosb: IoStatusBlock::pending(),
                    info: AfdPollInfo::new(socket as usize, events),
                });
            }
        }

        fn read(&self) -> PollBlock {
            // SAFETY: valid until `drop`; the simulated kernel only writes during its own calls,
            // never concurrently with this read.
            unsafe { self.0.as_ptr().read() }
        }

        fn ptr(&self) -> NonNull<PollBlock> {
            self.0
        }
    }

    impl Drop for Blk {
        fn drop(&mut self) {
            // SAFETY: the pointer came from `Box::leak` and is freed exactly once, here.
            drop(unsafe { Box::from_raw(self.0.as_ptr()) });
        }
    }

    fn submit(k: &mut SimKernel, via: PollVia, s: RawSock, blk: &Blk, apc: usize) -> Submitted {
        // SAFETY: `blk` outlives `k` in every test (declared after it, so dropped before it,
        // and the kernel never writes on drop), and is not touched while the kernel owns it.
        unsafe { k.submit_poll(via, s, blk.ptr(), apc) }
    }

    fn drain(k: &mut SimKernel) -> Vec<CompletionEntry> {
        let mut out = [CompletionEntry::zeroed(); 64];
        let n = k.dequeue(&mut out, Some(Duration::ZERO)).expect("dequeue");
        out[..n].to_vec()
    }

    fn open_assoc(k: &mut SimKernel, key: usize) -> RawSock {
        let s = k.open_socket();
        k.associate(s, key).expect("associate");
        s
    }

    #[test]
    fn handles_are_lowest_free_and_reused_at_once() {
        let k = SimKernel::new(1);
        let a = k.open_socket();
        let b = k.open_socket();
        let c = k.open_non_socket();
        assert_eq!((a, b, c), (0x100, 0x104, 0x108));
        k.close_socket(b);
        assert!(!k.is_open(b));
        k.close_socket(a);
        assert_eq!(k.open_socket(), a, "lowest free value first");
        let b2 = k.open_socket();
        assert_eq!(b2, b, "a closed value is reused at once");
        assert_eq!(k.open_socket(), 0x10C);
        // The reused value names a new object: no readiness and no association carried over.
        assert_eq!(k.readiness(b2), Some(PollEvents::NONE));
        assert_eq!(k.association(b2), Some(Association::None));
        assert_eq!(k.open_handles(), 4);
    }

    #[test]
    fn close_completes_pending_polls_with_local_close() {
        let mut k = SimKernel::new(2);
        let s = open_assoc(&mut k, 0x10);
        let direct = Blk::new(s, RECV);
        let helper = Blk::new(s, SEND);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &direct, 1),
            Submitted::Queued
        );
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &helper, 2),
            Submitted::Queued
        );
        assert_eq!(k.pending_polls(), 2);
        k.close_socket(s);
        assert_eq!(k.pending_polls(), 0);
        let got = drain(&mut k);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].key, got[0].apc_context), (0x10, 1));
        assert_eq!((got[1].key, got[1].apc_context), (HELPER_KEY, 2));
        for (entry, blk) in got.iter().zip([&direct, &helper]) {
            assert_eq!(entry.io_status.status(), NtStatus::SUCCESS);
            let b = blk.read();
            assert_eq!(b.iosb.status(), NtStatus::SUCCESS);
            assert_eq!(b.info.number_of_handles, 1);
            // Reported whether requested or not.
            assert_eq!(b.info.handles[0].events, PollEvents::LOCAL_CLOSE);
            assert_eq!(b.info.handles[0].status, NtStatus::SUCCESS);
        }
        // The value is free again and the old object's polls are gone for good.
        assert_eq!(k.open_socket(), s);
        assert_eq!(k.pending_polls(), 0);
    }

    #[test]
    fn readiness_completes_matching_poll_and_writes_block_before_packet() {
        let mut k = SimKernel::new(3);
        let s = open_assoc(&mut k, 0x20);
        let blk = Blk::new(s, RECV | ALWAYS);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 7),
            Submitted::Queued
        );
        k.set_readiness(s, RECV | SEND);
        assert_eq!(k.pending_polls(), 0);
        assert!(
            k.holds_block(blk.ptr()),
            "owned until its packet is dequeued"
        );
        assert!(!k.is_pending(blk.ptr()));
        let got = drain(&mut k);
        assert!(!k.holds_block(blk.ptr()));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].key, got[0].apc_context), (0x20, 7));
        assert_eq!(got[0].io_status.status(), NtStatus::SUCCESS);
        // By the time the packet is seen, the block holds the result.
        let b = blk.read();
        assert_eq!(b.iosb.status(), NtStatus::SUCCESS);
        assert_eq!(b.iosb.information, 0);
        assert_eq!(b.info.number_of_handles, 1);
        assert_eq!(b.info.handles[0].events, RECV, "readiness ∩ requested");
        assert_eq!(b.info.handles[0].status, NtStatus::SUCCESS);
        // Level-triggered: a new poll for a condition that still holds completes at once (with
        // no packet: associating set the skip-on-success mode).
        blk.set(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 8),
            Submitted::Completed
        );
        assert_eq!(k.pending_polls(), 0);
        assert_eq!(drain(&mut k).len(), 0);
        assert_eq!(k.stats().packets_queued, 1);
        assert_eq!(blk.read().info.handles[0].events, RECV);
    }

    #[test]
    fn poll_on_unready_socket_stays_pending() {
        let mut k = SimKernel::new(4);
        let s = open_assoc(&mut k, 0x30);
        let blk = Blk::new(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Queued
        );
        k.set_readiness(s, SEND); // not requested
        k.add_readiness(s, PollEvents::ACCEPT);
        assert_eq!(k.pending_polls(), 1);
        assert!(k.is_pending(blk.ptr()));
        assert!(drain(&mut k).is_empty());
        let mut out = [CompletionEntry::zeroed(); 4];
        let n = k.dequeue(&mut out, Some(Duration::from_millis(5))).unwrap();
        assert_eq!(n, 0, "times out with nothing");
        assert_eq!(
            blk.read().iosb.status(),
            NtStatus::PENDING,
            "block untouched"
        );
        k.clear_readiness(s, SEND);
        assert_eq!(k.readiness(s), Some(PollEvents::ACCEPT));
        k.add_readiness(s, RECV);
        assert_eq!(drain(&mut k).len(), 1);
        assert_eq!(blk.read().info.handles[0].events, RECV);
    }

    #[test]
    fn cancel_posts_cancelled_packet_and_second_cancel_is_not_found() {
        let mut k = SimKernel::new(5);
        let s = open_assoc(&mut k, 0x40);
        let blk = Blk::new(s, RECV | ALWAYS);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 3),
            Submitted::Queued
        );
        // The wrong path does not find it.
        assert_eq!(
            k.cancel(PollVia::Helper(0), 0, blk.ptr()),
            NtStatus::NOT_FOUND
        );
        assert_eq!(k.cancel(PollVia::Socket, s, blk.ptr()), NtStatus::SUCCESS);
        assert_eq!(k.cancel(PollVia::Socket, s, blk.ptr()), NtStatus::NOT_FOUND);
        let got = drain(&mut k);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].io_status.status(), NtStatus::CANCELLED);
        assert_eq!((got[0].key, got[0].apc_context), (0x40, 3));
        let b = blk.read();
        assert_eq!(b.iosb.status(), NtStatus::CANCELLED);
        // Info left as requested (Wine).
        assert_eq!(b.info.number_of_handles, 1);
        assert_eq!(b.info.handles[0].events, RECV | ALWAYS);
        assert_eq!(k.stats().polls_cancelled, 1);
        // Helper path, and a cancel naming a closed handle.
        blk.set(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &blk, 4),
            Submitted::Queued
        );
        assert_eq!(
            k.cancel(PollVia::Helper(0), 0, blk.ptr()),
            NtStatus::SUCCESS
        );
        assert_eq!(drain(&mut k)[0].key, HELPER_KEY);
        k.close_socket(s);
        assert_eq!(
            k.cancel(PollVia::Socket, s, blk.ptr()),
            NtStatus::INVALID_HANDLE
        );
    }

    #[test]
    fn cancel_race_fault_completes_normally_and_reports_not_found() {
        let faults = Faults {
            cancel_race: 1000,
            ..Faults::none()
        };
        let mut k = SimKernel::with_faults(6, faults);
        let s = open_assoc(&mut k, 0x50);
        let blk = Blk::new(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Queued
        );
        assert_eq!(k.cancel(PollVia::Socket, s, blk.ptr()), NtStatus::NOT_FOUND);
        assert_eq!(k.pending_polls(), 0);
        let got = drain(&mut k);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].io_status.status(), NtStatus::SUCCESS);
        let b = blk.read();
        assert_eq!(b.iosb.status(), NtStatus::SUCCESS);
        assert_eq!(b.info.number_of_handles, 0, "nothing was ready");
        assert_eq!(b.info.reported_events(), PollEvents::NONE);
        assert_eq!(k.stats().cancel_races, 1);
        // A pending poll never has a requested event ready in this model, so the injected race
        // always reports 0 handles. The race *with* events is the natural one: the poll completes
        // before the cancel arrives (no fault rolled: the cancel finds nothing).
        blk.set(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 2),
            Submitted::Queued
        );
        k.set_readiness(s, RECV);
        assert_eq!(k.cancel(PollVia::Socket, s, blk.ptr()), NtStatus::NOT_FOUND);
        assert_eq!(drain(&mut k).len(), 1);
        assert_eq!(blk.read().info.reported_events(), RECV);
        assert_eq!(k.stats().cancel_races, 1);
        assert_eq!(k.stats().polls_cancelled, 0);
    }

    #[test]
    fn associate_twice_is_resource_busy() {
        let mut k = SimKernel::new(7);
        let s = k.open_socket();
        k.associate(s, 1).unwrap();
        assert_eq!(
            k.associate(s, 1).unwrap_err().kind(),
            io::ErrorKind::ResourceBusy
        );
        assert_eq!(
            k.associate(s, 2).unwrap_err().kind(),
            io::ErrorKind::ResourceBusy
        );
        assert_eq!(k.association(s), Some(Association::This { key: 1 }));
        let f = k.open_socket();
        k.bind_to_foreign_port(f).unwrap();
        assert_eq!(
            k.associate(f, 3).unwrap_err().kind(),
            io::ErrorKind::ResourceBusy
        );
        assert_eq!(k.association(f), Some(Association::Foreign));
        // A file can be associated like any handle; a closed handle cannot.
        let file = k.open_non_socket();
        k.associate(file, 4).unwrap();
        k.close_socket(s);
        assert_eq!(
            k.associate(s, 5).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // The reused value is a new object: associable again.
        assert_eq!(k.open_socket(), s);
        k.associate(s, 6).unwrap();
    }

    #[test]
    fn foreign_bound_socket_loses_direct_packets_but_not_helper_ones() {
        let mut k = SimKernel::new(8);
        let s = k.open_socket();
        k.bind_to_foreign_port(s).unwrap();
        let direct = Blk::new(s, RECV);
        let helper = Blk::new(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &direct, 1),
            Submitted::Queued
        );
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &helper, 2),
            Submitted::Queued
        );
        k.set_readiness(s, RECV);
        let got = drain(&mut k);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].key, got[0].apc_context), (HELPER_KEY, 2));
        // The direct poll's block was still written; its packet went elsewhere.
        assert_eq!(direct.read().iosb.status(), NtStatus::SUCCESS);
        assert!(!k.holds_block(direct.ptr()));
        let st = k.stats();
        assert_eq!(
            (st.lost_packets, st.packets_queued, st.polls_completed),
            (1, 1, 2)
        );
        // An unassociated socket loses its packets too.
        let u = k.open_socket();
        let blk = Blk::new(u, RECV);
        k.set_readiness(u, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, u, &blk, 3),
            Submitted::Queued
        );
        assert!(drain(&mut k).is_empty());
        assert_eq!(k.stats().lost_packets, 2);
    }

    #[test]
    fn layered_socket_resolves_to_its_base() {
        let mut k = SimKernel::new(9);
        let base = k.open_socket();
        let lsp = k.open_layered_socket(base);
        let lsp2 = k.open_layered_socket(lsp);
        assert_eq!(k.base_socket(base, true).unwrap(), base);
        assert_eq!(k.base_socket(lsp, true).unwrap(), base);
        assert_eq!(
            k.base_socket(lsp2, true).unwrap(),
            base,
            "stacked providers are followed"
        );
        // SIO_BASE_HANDLE working on the LSP handle gives the bottom at once.
        k.set_base_handle_fails(lsp2, false);
        assert_eq!(k.base_socket(lsp2, true).unwrap(), base);
        // Both steps failing is a clear error.
        k.set_base_handle_fails(lsp2, true);
        k.set_bsp_handle_fails(lsp2, true);
        assert_eq!(
            k.base_socket(lsp2, true).unwrap_err().kind(),
            io::ErrorKind::Unsupported
        );
        k.set_base_handle_fails(base, true);
        assert_eq!(
            k.base_socket(base, true).unwrap(),
            base,
            "BSP fallback on a plain socket"
        );
        // AFD rejects the LSP handle itself.
        k.associate(lsp, 1).unwrap();
        let blk = Blk::new(lsp, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, lsp, &blk, 1),
            Submitted::Refused(NtStatus::OBJECT_TYPE_MISMATCH)
        );
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &blk, 1),
            Submitted::Refused(NtStatus::OBJECT_TYPE_MISMATCH)
        );
        assert_eq!(k.stats().polls_rejected, 2);
        k.close_socket(base);
        assert_eq!(
            k.base_socket(lsp, true).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn non_socket_and_closed_handles_are_refused() {
        let mut k = SimKernel::new(10);
        let f = k.open_non_socket();
        let err = k.base_socket(f, true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(err.to_string(), "not a socket");
        assert_eq!(
            k.base_socket(0x9990, true).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let blk = Blk::new(f, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &blk, 1),
            Submitted::Refused(NtStatus::OBJECT_TYPE_MISMATCH)
        );
        let s = open_assoc(&mut k, 1);
        blk.set(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, f, &blk, 1),
            Submitted::Refused(NtStatus::OBJECT_TYPE_MISMATCH)
        );
        k.close_socket(s);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Refused(NtStatus::INVALID_HANDLE)
        );
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &blk, 1),
            Submitted::Refused(NtStatus::INVALID_HANDLE)
        );
        let s = k.open_socket();
        blk.set(s, RECV);
        // SAFETY: the kernel does not hold `blk` (every submit above failed).
        unsafe { (*blk.ptr().as_ptr()).info.number_of_handles = 2 };
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &blk, 1),
            Submitted::Refused(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(k.pending_polls(), 0);
        assert_eq!(k.queued_packets(), 0);
        assert_eq!(blk.read().iosb.status(), NtStatus::PENDING, "never written");
        let mut empty: [CompletionEntry; 0] = [];
        assert_eq!(
            k.dequeue(&mut empty, Some(Duration::ZERO))
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn submit_failure_fault_records_nothing_and_leaves_block_untouched() {
        let faults = Faults {
            submit_failure: 1000,
            ..Faults::none()
        };
        let mut k = SimKernel::with_faults(11, faults);
        let s = open_assoc(&mut k, 1);
        k.set_readiness(s, RECV);
        let blk = Blk::new(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Refused(NtStatus::INSUFFICIENT_RESOURCES)
        );
        assert_eq!(k.pending_polls(), 0);
        assert_eq!(k.queued_packets(), 0);
        assert!(!k.holds_block(blk.ptr()));
        let b = blk.read();
        assert_eq!(b.iosb.status(), NtStatus::PENDING);
        assert_eq!(b.info.handles[0].events, RECV);
        let st = k.stats();
        assert_eq!((st.submit_failures, st.polls_submitted), (1, 0));
        // The block may be resubmitted at once (it completes at once: no packet).
        k.set_faults(Faults::none());
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 2),
            Submitted::Completed
        );
        assert_eq!(drain(&mut k).len(), 0);
    }

    #[test]
    fn a_poll_ready_at_submit_skips_the_port_on_an_associated_socket() {
        let mut k = SimKernel::new(12);
        let s = open_assoc(&mut k, 9); // associate sets the skip-on-success mode
        let blk = Blk::new(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Queued,
            "not ready"
        );
        k.set_readiness(s, RECV);
        assert_eq!(drain(&mut k).len(), 1, "completed later: a packet");
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 2),
            Submitted::Completed
        );
        assert!(
            !k.holds_block(blk.ptr()),
            "no packet: the block is ours again"
        );
        assert_eq!(k.queued_packets(), 0);
        let b = blk.read();
        assert_eq!(b.iosb.status(), NtStatus::SUCCESS);
        assert_eq!(b.info.handles[0].events, RECV);
        assert_eq!(k.stats().completed_at_submit, 1);
        // The helper skips too, unless told otherwise; a helper without the mode queues a packet.
        blk.set(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &blk, 3),
            Submitted::Completed
        );
        k.set_helper_skip_mode(false);
        blk.set(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Helper(1), 0, &blk, 4),
            Submitted::Queued
        );
        let got = drain(&mut k);
        assert_eq!(
            (got.len(), got[0].key, got[0].apc_context),
            (1, HELPER_KEY, 4)
        );
        assert_eq!(k.stats().helpers_opened, 2);
    }

    #[test]
    fn no_skip_fault_leaves_the_association_but_fails_it() {
        let faults = Faults {
            no_skip: 1000,
            ..Faults::none()
        };
        let mut k = SimKernel::with_faults(14, faults);
        let s = k.open_socket();
        let e = k.associate(s, 7).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ResourceBusy);
        assert_eq!(k.association(s), Some(Association::This { key: 7 }));
        assert_eq!(k.stats().no_skips, 1);
        // A poll ready at submit on it queues its packet under the key.
        k.set_readiness(s, RECV);
        let blk = Blk::new(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Queued
        );
        assert_eq!(drain(&mut k)[0].key, 7);
    }

    #[test]
    fn packets_that_would_pass_for_the_reactors_own_cannot_be_injected() {
        let k = SimKernel::new(15);
        assert!(k.inject_packet(0x1000, POLL_TAG | 5).is_err());
        assert!(k.inject_packet(WAKE_KEY, 1).is_err());
        assert_eq!(k.queued_packets(), 0);
        k.inject_packet(0x1000, 0x7ff6_0000_0010).unwrap();
        assert_eq!(k.queued_packets(), 1);
    }

    #[test]
    fn spurious_fault_completes_with_zero_handles() {
        let faults = Faults {
            spurious: 1000,
            ..Faults::none()
        };
        let mut k = SimKernel::with_faults(13, faults);
        let s = open_assoc(&mut k, 9);
        let blk = Blk::new(s, RECV | ALWAYS);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Queued
        );
        let got = drain(&mut k);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].io_status.status(), NtStatus::SUCCESS);
        let b = blk.read();
        assert_eq!(b.info.number_of_handles, 0);
        assert_eq!(b.info.reported_events(), PollEvents::NONE);
        assert_eq!(
            b.info.handles[0].events,
            RECV | ALWAYS,
            "handle entry left as requested"
        );
        assert_eq!(k.stats().spurious_completions, 1);
        blk.set(s, RECV);
        k.set_faults(Faults::none());
        assert_eq!(
            submit(&mut k, PollVia::Helper(0), 0, &blk, 2),
            Submitted::Queued
        );
        assert_eq!(k.complete_all_spuriously(), 1);
        assert_eq!(drain(&mut k)[0].key, HELPER_KEY);
    }

    #[test]
    fn connect_fail_reports_an_error_status_per_handle() {
        let mut k = SimKernel::new(14);
        let s = open_assoc(&mut k, 1);
        let blk = Blk::new(s, SEND | ALWAYS);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Queued
        );
        k.set_readiness(s, PollEvents::CONNECT_FAIL);
        assert_eq!(drain(&mut k)[0].io_status.status(), NtStatus::SUCCESS);
        let b = blk.read();
        assert_eq!(b.info.handles[0].events, PollEvents::CONNECT_FAIL);
        assert_eq!(b.info.handles[0].status, STATUS_CONNECTION_REFUSED);
        assert!(b.info.handles[0].status.is_error());
    }

    #[test]
    fn dequeue_error_fault_leaves_packets_queued() {
        let faults = Faults {
            dequeue_error: 1000,
            ..Faults::none()
        };
        let mut k = SimKernel::with_faults(15, faults);
        k.inject_packet(1, 10).unwrap();
        k.inject_packet(2, 20).unwrap();
        let mut out = [CompletionEntry::zeroed(); 4];
        for _ in 0..3 {
            let err = k.dequeue(&mut out, None).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
        }
        assert_eq!(k.queued_packets(), 2);
        assert_eq!(k.stats().dequeue_errors, 3);
        k.set_faults(Faults::none());
        assert_eq!(k.dequeue(&mut out, None).unwrap(), 2);
        assert_eq!((out[0].key, out[1].key), (1, 2), "FIFO");
        assert_eq!(k.stats().posts, 2);
    }

    #[test]
    fn reorder_is_deterministic_per_seed() {
        fn order(seed: u64) -> (Vec<usize>, u64) {
            let faults = Faults {
                reorder: 1000,
                ..Faults::none()
            };
            let mut k = SimKernel::with_faults(seed, faults);
            for i in 0..16 {
                k.inject_packet(i, i).unwrap();
            }
            let mut got = Vec::new();
            let mut out = [CompletionEntry::zeroed(); 5];
            while let Ok(n @ 1..) = k.dequeue(&mut out, Some(Duration::ZERO)) {
                got.extend(out[..n].iter().map(|e| e.key));
            }
            (got, k.stats().reorders)
        }
        let (a, reorders) = order(42);
        assert_eq!(a, order(42).0, "same seed, same order");
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..16).collect::<Vec<_>>(),
            "every packet exactly once"
        );
        assert_ne!(a, sorted, "actually reordered");
        assert_eq!(
            reorders, 3,
            "the last dequeue finds one packet: nothing to reorder"
        );
        assert_ne!(a, order(43).0);
    }

    #[test]
    fn poster_on_another_thread_wakes_a_blocking_dequeue() {
        let mut k = SimKernel::new(16);
        let poster = k.poster();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            poster.post_wake(0).unwrap();
        });
        let mut out = [CompletionEntry::zeroed(); 2];
        let n = k.dequeue(&mut out, None).unwrap();
        t.join().unwrap();
        assert_eq!(n, 1);
        assert_eq!(out[0].key, crate::kernel::WAKE_KEY);
        assert_eq!(out[0].io_status.status(), NtStatus::SUCCESS);
        // And a bounded wait that a post ends early.
        let poster = k.poster();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(10));
            poster.post_wake(6).unwrap();
        });
        let n = k.dequeue(&mut out, Some(Duration::from_secs(60))).unwrap();
        t.join().unwrap();
        assert_eq!(
            (n, out[0].key, out[0].apc_context),
            (1, crate::kernel::WAKE_KEY, 6)
        );
        assert_eq!(k.stats().posts, 2);
    }

    #[test]
    #[should_panic(expected = "memory contract violated")]
    fn resubmitting_a_held_block_panics() {
        let mut k = SimKernel::new(17);
        let s = open_assoc(&mut k, 1);
        let blk = Blk::new(s, RECV);
        assert_eq!(
            submit(&mut k, PollVia::Socket, s, &blk, 1),
            Submitted::Queued
        );
        submit(&mut k, PollVia::Helper(0), 0, &blk, 2);
    }

    /// A seeded reactor-like driver with every fault on: returns a trace of everything observed.
    fn scripted_run(seed: u64) -> (Vec<String>, SimStats) {
        const BLOCKS: usize = 8;
        let mut k = SimKernel::with_faults(seed, Faults::all(150));
        let mut rng = SimRng::new(seed ^ 0x5EED);
        let mut trace = Vec::new();
        let blocks: Vec<Blk> = (0..BLOCKS).map(|_| Blk::new(0, RECV)).collect();
        // Per block: None = free, Some((via, socket)) = kernel-owned.
        let mut busy: Vec<Option<(PollVia, RawSock)>> = vec![None; BLOCKS];
        let mut sockets: Vec<RawSock> = Vec::new();
        let events = [
            RECV,
            SEND,
            RECV | SEND,
            PollEvents::ACCEPT,
            PollEvents::DISCONNECT,
        ];
        let poster = k.poster();

        let dequeue = |k: &mut SimKernel,
                       busy: &mut [Option<(PollVia, RawSock)>],
                       trace: &mut Vec<String>| {
            let mut out = [CompletionEntry::zeroed(); 3];
            match k.dequeue(&mut out, Some(Duration::ZERO)) {
                Ok(n) => {
                    for e in &out[..n] {
                        if e.apc_context < BLOCKS {
                            busy[e.apc_context] = None;
                            let b = blocks[e.apc_context].read();
                            trace.push(format!(
                                "pkt {:#x} {} {:?} {:?}",
                                e.key,
                                e.apc_context,
                                e.io_status.status(),
                                b.info.reported_events()
                            ));
                        } else {
                            trace.push(format!("post {:#x}", e.key));
                        }
                    }
                }
                Err(e) => trace.push(format!("dequeue err {:?}", e.kind())),
            }
        };

        for _ in 0..300 {
            match rng.below(10) {
                0 => {
                    let s = k.open_socket();
                    let r = k.associate(s, s as usize);
                    trace.push(format!("open {s:#x} {:?}", r.is_ok()));
                    sockets.push(s);
                }
                1 if !sockets.is_empty() => {
                    let s = sockets.swap_remove(rng.below(sockets.len() as u64) as usize);
                    k.close_socket(s);
                    trace.push(format!("close {s:#x}"));
                }
                2 | 3 if !sockets.is_empty() => {
                    let s = sockets[rng.below(sockets.len() as u64) as usize];
                    if let Some(i) = busy.iter().position(Option::is_none) {
                        let via = if rng.chance(300) {
                            PollVia::Helper(0)
                        } else {
                            PollVia::Socket
                        };
                        let ev = events[rng.below(events.len() as u64) as usize] | ALWAYS;
                        blocks[i].set(s, ev);
                        let st = submit(&mut k, via, s, &blocks[i], i);
                        if st == Submitted::Queued {
                            busy[i] = Some((via, s));
                        }
                        trace.push(format!("submit {i} {s:#x} {via:?} {st:?}"));
                    }
                }
                4 | 5 if !sockets.is_empty() => {
                    let s = sockets[rng.below(sockets.len() as u64) as usize];
                    let ev = events[rng.below(events.len() as u64) as usize];
                    if rng.chance(500) {
                        k.set_readiness(s, ev);
                    } else {
                        k.clear_readiness(s, ev);
                    }
                    trace.push(format!("ready {s:#x} {:?}", k.readiness(s)));
                }
                6 => {
                    let i = rng.below(BLOCKS as u64) as usize;
                    if let Some((via, s)) = busy[i] {
                        let st = k.cancel(via, s, blocks[i].ptr());
                        trace.push(format!("cancel {i} {st:?}"));
                    }
                }
                7 => {
                    poster.post_wake(BLOCKS).unwrap();
                }
                _ => dequeue(&mut k, &mut busy, &mut trace),
            }
            for (i, b) in busy.iter().enumerate() {
                assert_eq!(
                    b.is_some(),
                    k.holds_block(blocks[i].ptr()),
                    "block {i} ownership"
                );
            }
        }
        // Teardown: cancel what is pending, drain until every block is free again.
        k.set_faults(Faults::none());
        for (i, b) in busy.clone().iter().enumerate() {
            if let Some((via, s)) = *b
                && k.is_pending(blocks[i].ptr())
            {
                let st = k.cancel(via, s, blocks[i].ptr());
                trace.push(format!("teardown cancel {i} {st:?}"));
            }
        }
        for _ in 0..100 {
            if busy.iter().all(Option::is_none) && k.queued_packets() == 0 {
                break;
            }
            dequeue(&mut k, &mut busy, &mut trace);
        }
        assert!(busy.iter().all(Option::is_none), "every block returned");
        assert_eq!(k.pending_polls(), 0);
        assert_eq!(k.queued_packets(), 0);
        let stats = k.stats();
        drop(k);
        drop(blocks);
        (trace, stats)
    }

    #[test]
    fn same_seed_reproduces_a_scripted_run() {
        let (a, sa) = scripted_run(99);
        let (b, sb) = scripted_run(99);
        assert_eq!(a, b);
        assert_eq!(sa, sb);
        assert!(sa.polls_submitted > 10, "{sa:?}");
        assert_eq!(sa.polls_submitted, sa.polls_completed);
        assert_eq!(
            sa.lost_packets, 0,
            "every socket was associated with this port"
        );
        let injected = [
            sa.reorders,
            sa.cancel_races,
            sa.completed_at_submit,
            sa.submit_failures,
            sa.dequeue_errors,
            sa.spurious_completions,
            sa.polls_cancelled,
        ];
        assert!(
            injected.iter().all(|&n| n > 0),
            "every fault exercised: {sa:?}"
        );
        let (c, _) = scripted_run(100);
        assert_ne!(a, c);
    }
}
