//! The public API and the event loop (docs/design.md §2–§7).
//!
//! - this file: the vocabulary, the registration calls and the per-registration bookkeeping;
//! - `poll.rs`: the loop (sharing each poll's room between timers, the stash and the port);
//! - `teardown.rs`: `shutdown`, `abandon` and `Drop`;
//! - `pool.rs`, `sockmap.rs`, `bound.rs`, `helpers.rs`, `timer.rs`, `waker.rs`: the data
//!   structures behind them.

mod bound;
pub(crate) mod event;
mod helpers;
mod poll;
mod pool;
mod sockmap;
mod teardown;
mod timer;
mod waitable;
mod waker;

pub use event::{Event, Events, Interest, Token};
pub use timer::TimerId;
#[cfg(feature = "test-rig")]
pub use waitable::SimWaitable;
pub use waitable::Waitable;
pub use waker::Waker;

use crate::afd::{AfdPollInfo, CompletionEntry, IoStatusBlock, NtStatus, PollEvents};
use crate::kernel::{Kernel, POLL_TAG, PollBlock, PollVia, RawSock, Submitted};
use crate::state::{Completed, Deregistered, Life, Machine, Mode, Update};
use bound::Bound;
use helpers::HelperGroups;
use poll::Stashed;
use pool::{INDEX_BITS, Pool, SOCKET_DIRECT};
use sockmap::SockMap;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::time::{Duration, Instant};
use waker::WakerTable;

/// At most this many live registrations are polled through the helper because their value is in
/// `bound` (see there). The hint cannot tell the socket registered before from a new socket that
/// got its value; without a cap, a server whose new sockets keep landing on recycled values would
/// move them all onto the helper handles. Past the cap, `register` makes the association call
/// again.
const HINT_LIMIT: usize = 32;

/// Something that can be registered: a socket.
///
/// Implemented (on Windows) for every `T: AsSocket` — `TcpStream`, `TcpListener`, `UdpSocket`,
/// socket2's `Socket`, … — and, with the `test-rig` feature, for `SimSocket`, the socket of the
/// simulated kernel.
///
/// The reactor asks for the handle value once per call, and remembers it between calls:
/// deregister a socket before closing it. A socket closed while registered is cleaned up when its
/// poll reports `LOCAL_CLOSE` (no event is delivered); see [`Reactor::register`].
///
/// # Safety
/// `raw_socket` must return the handle value of a socket the implementer owns or borrows for the
/// duration of the call (Rust's I/O safety), since the reactor acts on that handle: it associates
/// it with its completion port for good, puts it in skip-on-success mode, and polls and cancels
/// on it. A value that names someone else's object would bind *their* I/O to the reactor's port
/// (and under Wine 8, an `\Device\Afd` handle named in a poll aborts wineserver). Implement
/// `AsSocket` instead of this trait: every `AsSocket` type is a `Source`, safely. (The value may
/// differ from one call to the next; the reactor reads it once per call.)
pub unsafe trait Source {
    /// The socket's handle value.
    fn raw_socket(&self) -> RawSock;
}

// SAFETY: `AsFd` hands out a `BorrowedFd`, which I/O safety guarantees is an open descriptor for
// as long as the borrow (this call) lasts.
#[cfg(unix)]
unsafe impl<T: std::os::fd::AsFd + ?Sized> Source for T {
    fn raw_socket(&self) -> RawSock {
        use std::os::fd::AsRawFd;
        self.as_fd().as_raw_fd() as RawSock
    }
}

// SAFETY: `AsSocket` hands out a `BorrowedSocket`, which I/O safety guarantees is an open socket
// for as long as the borrow (this call) lasts.
#[cfg(windows)]
unsafe impl<T: std::os::windows::io::AsSocket + ?Sized> Source for T {
    fn raw_socket(&self) -> RawSock {
        use std::os::windows::io::AsRawSocket;
        self.as_socket().as_raw_socket()
    }
}

/// A socket of the [simulated kernel](crate::kernel::sim), by handle value (feature
/// `test-rig`).
///
/// # Examples
/// ```
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Interest, Reactor, SimSocket, Token};
/// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
/// let mut reactor = Reactor::with_kernel(SimKernel::new(7));
/// let s = SimSocket(reactor.kernel().open_socket());
/// reactor.register(&s, Token(1), Interest::READABLE)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[cfg(feature = "test-rig")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimSocket(pub RawSock);

// SAFETY: a test-rig type. On the simulated kernel the value names a simulated socket; a test that
// gives one to the NT kernel (to probe bad input) takes on the duty `Source` describes.
#[cfg(feature = "test-rig")]
unsafe impl Source for SimSocket {
    fn raw_socket(&self) -> RawSock {
        self.0
    }
}

/// Reactor settings.
///
/// # Examples
/// ```
/// use afd_reactor::{Config, Mode};
/// use std::time::Duration;
/// let config = Config::default()
///     .batch(512)
///     .mode(Mode::Oneshot)
///     .teardown_timeout(Duration::from_secs(1));
/// assert_eq!(config.batch_size(), 512);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    batch: usize,
    teardown_timeout: Duration,
    mode: Mode,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            batch: 256,
            teardown_timeout: Duration::from_secs(5),
            mode: Mode::Level,
        }
    }
}

impl Config {
    /// Most packets dequeued per NT call (1 to 65,536; default 256).
    pub fn batch(mut self, packets: usize) -> Self {
        self.batch = packets.clamp(1, 65_536);
        self
    }

    /// The configured batch size.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// How long teardown may wait for cancelled polls to drain (default 5 s).
    pub fn teardown_timeout(mut self, bound: Duration) -> Self {
        self.teardown_timeout = bound;
        self
    }

    /// The mode [`Reactor::register`] uses (default [`Mode::Level`]).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
}

/// NT calls made by the reactor, by kind. Under Wine each is a wineserver round-trip; on Windows a
/// system call. `post` counts the wake packets wakers sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NtCalls {
    /// Base-socket resolutions (winsock `WSAIoctl` + `getsockopt`).
    pub base_socket: u64,
    /// Socket ↔ port associations (`CreateIoCompletionPort`, then `NtSetInformationFile` for the
    /// skip-on-success mode).
    pub associate: u64,
    /// `IOCTL_AFD_POLL` submissions (`NtDeviceIoControlFile`).
    pub submit: u64,
    /// `NtCancelIoFileEx` calls.
    pub cancel: u64,
    /// `NtRemoveIoCompletionEx` calls.
    pub dequeue: u64,
    /// `NtSetIoCompletion` calls (wakes).
    pub post: u64,
    /// Waits made for waitable registrations (a handle duplicated; on Windows 8+ also a wait
    /// completion packet created).
    pub wait_open: u64,
    /// Waits armed: `NtAssociateWaitCompletionPacket`, or (where ntdll lacks it) a thread-pool
    /// wait registered, after the previous one of the same registration is unregistered.
    pub wait_arm: u64,
    /// Armed waits cancelled (`NtCancelWaitCompletionPacket`, or `UnregisterWaitEx`).
    pub wait_cancel: u64,
    /// Waits freed (their handles closed).
    pub wait_close: u64,
}

impl NtCalls {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.base_socket
            + self.associate
            + self.submit
            + self.cancel
            + self.dequeue
            + self.post
            + self.wait_open
            + self.wait_arm
            + self.wait_cancel
            + self.wait_close
    }
}

/// Counters for introspection, from [`Reactor::stats`]: cheap to read.
///
/// **Zombies and polls in flight after `deregister`.** Deregistering a socket whose poll is
/// pending cancels that poll, but its buffer stays the kernel's until the kernel's answer (a
/// packet) arrives. Until a later [`poll`](Reactor::poll) (usually the next) collects it, the
/// registration is counted in `zombies` and its poll in `in_flight`, even with nothing
/// registered. That is not a leak: `poll`, or [`shutdown`](Reactor::shutdown), clears them. Once no
/// zombie is left, `late_packets` equals `zombies_created`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live registrations.
    pub registered: usize,
    /// Registrations ended (deregistered, or their socket closed) whose cancelled poll the kernel
    /// has not yet answered: their buffers wait for the answer, which the next `poll` collects.
    pub zombies: usize,
    /// Polls the kernel holds now: one per armed registration, plus one per zombie. Between
    /// `poll` calls it can be below `registered`: a registration that has just delivered an event
    /// is re-armed by the next `poll`, before it waits.
    pub in_flight: usize,
    /// Slots allocated (live, zombie or vacant); each is pinned until teardown.
    pub slots: usize,
    /// Live timers.
    pub timers: usize,
    /// Wakers you hold at least one handle to. A waker whose last handle is dropped stops
    /// counting at once; the reactor frees its memory in the next `poll` (once its last wake, if
    /// any, is delivered).
    pub wakers: usize,
    /// NT calls by kind.
    pub nt: NtCalls,
    /// Packets dequeued.
    pub packets: u64,
    /// Polls that completed as they were submitted, with no packet (the socket or helper handle
    /// skips the port on success): a dequeued entry saved each.
    pub completed_at_submit: u64,
    /// Registrations that became zombies (ended with a poll still in the kernel).
    pub zombies_created: u64,
    /// Packets for ended registrations, absorbed by their zombie and never delivered: once no
    /// zombie is left, exactly one per zombie created.
    pub late_packets: u64,
    /// Tagged packets naming no poll in flight (a dead or previous incarnation of a registration),
    /// discarded. The kernel contract makes this 0 on a truthful kernel.
    pub stale_discarded: u64,
    /// Packets that were not the reactor's (no tag: the user's own overlapped I/O on a
    /// registered socket), discarded before touching any state.
    pub foreign_discarded: u64,
    /// Packets of our polls that arrived under another socket's key (their handle value was
    /// reused): the old registration is ended, nothing delivered.
    pub misrouted: u64,
    /// Socket events delivered (readiness and errors; one per registration per poll at most).
    pub events: u64,
    /// Registrations removed because their socket was closed (LOCAL_CLOSE).
    pub closed_cleanups: u64,
    /// Poll submissions the kernel refused (reported as an error event; the registration is
    /// disarmed until `reregister`).
    pub submit_failures: u64,
    /// Polls ended by a cancel or failure the reactor did not ask for (the user's `CancelIoEx`,
    /// say): reported as an error event; the registration is disarmed until `reregister`.
    pub interrupted: u64,
    /// `Waker::wake` calls.
    pub wakes: u64,
    /// Live waitable registrations ([`Reactor::register_waitable`]).
    pub waitables: usize,
    /// Waits armed in the kernel: one per armed waitable registration, plus one per waitable
    /// deregistered while its packet was on its way (collected by the next `poll`).
    pub waits_in_kernel: usize,
    /// Signaled events delivered (one per satisfied wait, unless it was deregistered first).
    pub signals: u64,
}

/// What teardown did: the report [`Reactor::shutdown`] returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Polls this teardown cancelled: the polls still pending for registrations still registered.
    /// (A registration whose poll had already completed, or that had none, is not counted; polls
    /// that `deregister` had cancelled are not counted again: their answers are in `drained`.)
    /// Armed waits of waitable registrations still registered count here too.
    pub cancelled: u64,
    /// Waitable registrations still registered whose waits were satisfied and whose events were
    /// never delivered: what [`Reactor::deregister_waitable`] would have reported, for each
    /// registration teardown ended (for an auto-reset event or a semaphore, a consumed signal;
    /// a manual-reset event or a process still holds its own). Always 0 on Linux, where a wait
    /// consumes nothing.
    pub signals_lost: u64,
    /// Packets dequeued by this teardown: the answers to every cancelled poll, whether teardown
    /// or an earlier `deregister` cancelled it, and whatever else was queued.
    pub drained: u64,
    /// Dequeues that failed on the way (teardown goes on after each).
    pub dequeue_errors: u64,
    /// Polls still in the kernel when teardown ended (non-zero only when the bound was hit, the
    /// kernel kept failing, or on abandon). Their buffers are never freed: a later `shutdown`
    /// keeps draining them, and dropping the reactor leaks them.
    pub leaked: usize,
    /// How long it took.
    pub elapsed: Duration,
}

impl fmt::Display for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cancelled {} polls, drained {} packets in {:?} ({} failed dequeues); {} polls still \
             in flight (buffers kept, never freed)",
            self.cancelled, self.drained, self.elapsed, self.dequeue_errors, self.leaked
        )?;
        if self.signals_lost > 0 {
            write!(f, "; {} consumed signals not delivered", self.signals_lost)?;
        }
        Ok(())
    }
}

impl std::error::Error for Teardown {}

/// The single-threaded reactor: register sockets, then [`poll`](Self::poll) for their events,
/// timers and wakes.
///
/// [`Reactor::new`] gives the reactor on the real kernel: `NtReactor` (`Reactor<NtKernel>`) on
/// Windows, `EpollReactor` (`Reactor<EpollKernel>`) on Linux. The kernel is a type parameter so
/// that the same reactor runs on each, and on the simulated kernel in tests (feature `test-rig`,
/// see [`kernel`](crate::kernel)).
///
/// `Send` but not `Sync`: one thread drives it at a time; [`Waker`]s reach it from others.
///
/// # Examples
/// A listener and a client on the real reactor (Windows):
/// ```
/// # #[cfg(windows)] fn main() -> std::io::Result<()> {
/// use afd_reactor::{Events, Interest, NtReactor, Reactor, Token};
/// use std::net::{TcpListener, TcpStream};
/// use std::time::Duration;
///
/// let mut reactor: NtReactor = Reactor::new()?;
/// let listener = TcpListener::bind("127.0.0.1:0")?;
/// listener.set_nonblocking(true)?;
/// reactor.register(&listener, Token(0), Interest::READABLE)?;
///
/// let _client = TcpStream::connect(listener.local_addr()?)?;
/// let mut events = Events::with_capacity(64);
/// reactor.poll(&mut events, Some(Duration::from_secs(5)))?;
/// let event = events.iter().next().expect("the connection arrived");
/// assert_eq!(event.token(), Token(0));
/// assert!(event.is_readable());
/// let (stream, _) = listener.accept()?;
/// # drop(stream);
/// reactor.deregister(&listener)?; // before the listener closes
/// # Ok(()) }
/// # #[cfg(not(windows))] fn main() {}
/// ```
///
/// The same on the simulated kernel (feature `test-rig`), where a test makes a socket ready:
/// ```
/// use afd_reactor::afd::PollEvents;
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
/// use std::time::Duration;
///
/// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
/// let socket = SimSocket(reactor.kernel().open_socket());
/// reactor.register(&socket, Token(7), Interest::READABLE)?;
/// reactor.kernel().set_readiness(socket.0, PollEvents::RECEIVE);
///
/// let mut events = Events::with_capacity(64);
/// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
/// let event = events.iter().next().unwrap();
/// assert_eq!(event.token(), Token(7));
/// assert!(event.is_readable());
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Reactor<K: Kernel> {
    kernel: K,
    config: Config,
    pool: Pool,
    /// Live registrations by the socket value the user registered.
    by_socket: SockMap,
    /// Socket values whose association with the port was already attempted.
    bound: Bound,
    /// Live registrations polled through the helper on the strength of `bound` alone.
    hinted: usize,
    /// Registrations per helper handle.
    helpers: HelperGroups,
    /// The base socket of each registration (by slot) whose socket is a layered provider's
    /// handle; every other registration polls the value it was registered with.
    bases: HashMap<u32, RawSock>,
    /// Slots whose poll needs a submit or cancel before the next dequeue: `(index, generation)`.
    updates: Vec<(u32, u64)>,
    entries: Vec<CompletionEntry>,
    /// What was dequeued outside a poll, completed at submit, or did not fit: delivered by the
    /// next polls, sharing their room with timers and the port.
    stash: VecDeque<Stashed>,
    timers: timer::Timers,
    wakers: WakerTable,
    generation_counter: u64,
    /// Polls made so far: stamps a waker's "reported in this poll".
    poll_count: u64,
    /// Waitable registrations.
    waits: waitable::WaitTable,
    /// Which of stash (0), timers (1) and port (2) goes first in the next poll.
    turn: usize,
    stats: Stats,
    shut_down: bool,
    /// Teardown has ended (or cancelled) every registration; later calls only drain.
    cancelled_all: bool,
    /// Slot releases the pool refused (a reactor bug caught before it could hand one block to
    /// two registrations). Always 0; tests check it.
    refused_releases: u64,
}

/// The reactor on the real Windows kernel: what [`Reactor::new`] returns.
#[cfg(windows)]
pub type NtReactor = Reactor<crate::kernel::nt::NtKernel>;

#[cfg(windows)]
impl Reactor<crate::kernel::nt::NtKernel> {
    /// A reactor on the real Windows kernel, with default settings ([`Config::default`]).
    ///
    /// # Errors
    /// The completion port could not be created (out of resources).
    pub fn new() -> io::Result<Self> {
        Self::from_config(Config::default())
    }

    /// A reactor on the real Windows kernel, with `config`.
    ///
    /// # Errors
    /// The completion port could not be created (out of resources).
    /// # Examples
    /// ```no_run
    /// # #[cfg(windows)] fn main() -> std::io::Result<()> {
    /// use afd_reactor::{Config, Mode, NtReactor};
    /// let reactor = NtReactor::from_config(Config::default().mode(Mode::Oneshot))?;
    /// # Ok(()) }
    /// # #[cfg(not(windows))] fn main() {}
    /// ```
    pub fn from_config(config: Config) -> io::Result<Self> {
        Ok(Self::with_config(
            crate::kernel::nt::NtKernel::new()?,
            config,
        ))
    }
}

/// The reactor on Linux's epoll: what [`Reactor::new`] returns on Linux.
#[cfg(target_os = "linux")]
pub type EpollReactor = Reactor<crate::kernel::epoll::EpollKernel>;

#[cfg(target_os = "linux")]
impl Reactor<crate::kernel::epoll::EpollKernel> {
    /// A reactor on Linux's epoll, with default settings ([`Config::default`]).
    ///
    /// # Errors
    /// The epoll instance or its eventfd could not be created (out of descriptors).
    pub fn new() -> io::Result<Self> {
        Self::from_config(Config::default())
    }

    /// A reactor on Linux's epoll, with `config`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn from_config(config: Config) -> io::Result<Self> {
        Ok(Self::with_config(
            crate::kernel::epoll::EpollKernel::new()?,
            config,
        ))
    }
}

// SAFETY: the pool's raw pointers name heap memory owned exclusively by this reactor; moving the
// reactor to another thread moves that ownership with it, and the kernel writes poll blocks from
// its own context whichever thread owns the reactor. `Sync` is not implemented (raw pointers keep
// the reactor `!Sync`): only one thread may drive it.
unsafe impl<K: Kernel + Send> Send for Reactor<K> {}

impl<K: Kernel> fmt::Debug for Reactor<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("config", &self.config)
            .field("stats", &self.stats())
            .field("shut_down", &self.shut_down)
            .finish_non_exhaustive()
    }
}

fn err(kind: io::ErrorKind, msg: &'static str) -> io::Error {
    io::Error::new(kind, msg)
}

/// The next generation of slot `index` under `tag` ([`POLL_TAG`] or `WAIT_TAG`): the tag, a
/// counter advanced here (skipping 0) in the bits between the tag and the index, and the index
/// (docs/design.md §2). Never 0, which marks a vacant slot.
fn tagged_generation(tag: usize, counter: &mut u64, index: u32) -> u64 {
    let bits = tag.trailing_zeros() - INDEX_BITS;
    *counter = (*counter + 1) & ((1 << bits) - 1);
    if *counter == 0 {
        *counter = 1;
    }
    tag as u64 | (*counter << INDEX_BITS) | u64::from(index)
}

/// The slot index a generation names.
fn slot_of(generation: u64) -> u32 {
    (generation & ((1 << INDEX_BITS) - 1)) as u32
}

impl<K: Kernel> Reactor<K> {
    /// A reactor on `kernel` with default settings.
    pub fn with_kernel(kernel: K) -> Self {
        Self::with_config(kernel, Config::default())
    }

    /// A reactor on `kernel` with `config`.
    pub fn with_config(kernel: K, config: Config) -> Self {
        Self {
            kernel,
            config,
            pool: Pool::default(),
            by_socket: SockMap::default(),
            bound: Bound::default(),
            hinted: 0,
            helpers: HelperGroups::default(),
            bases: HashMap::new(),
            updates: Vec::new(),
            entries: vec![CompletionEntry::zeroed(); config.batch],
            stash: VecDeque::new(),
            timers: timer::Timers::default(),
            wakers: WakerTable::default(),
            generation_counter: 0,
            waits: waitable::WaitTable::default(),
            poll_count: 0,
            turn: 0,
            stats: Stats::default(),
            shut_down: false,
            cancelled_all: false,
            refused_releases: 0,
        }
    }

    /// The kernel (for the simulated kernel: to drive sockets in tests). There is deliberately no
    /// `&mut` access: replacing or swapping a reactor's kernel would strand polls in flight.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }

    /// Change how long teardown may wait for cancelled polls to drain.
    pub fn set_teardown_timeout(&mut self, bound: Duration) {
        self.config.teardown_timeout = bound;
    }

    /// The counters.
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// let st = reactor.stats();
    /// assert_eq!((st.registered, st.in_flight), (1, 1));
    /// assert_eq!((st.nt.associate, st.nt.submit), (1, 1));
    /// # let _ = (PollEvents::NONE, Events::with_capacity(1), Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.registered = self.by_socket.len();
        s.slots = self.pool.len();
        s.timers = self.timers.len();
        s.wakers = self.wakers.len();
        s.waitables = self.waits.len();
        s.waits_in_kernel = self.waits.in_kernel;
        let (calls, posts) = self.wakers.counts();
        s.wakes = calls;
        s.nt.post = posts;
        s
    }

    /// For tests and debugging (feature `test-rig`): every non-vacant slot as (block address,
    /// generation, machine).
    #[cfg(feature = "test-rig")]
    pub fn debug_slots(&self) -> Vec<(std::ptr::NonNull<PollBlock>, u64, Machine)> {
        (0..self.pool.len() as u32)
            .filter_map(|i| {
                let m = self.pool.meta(i)?;
                (m.generation != 0)
                    .then(|| (self.pool.block(i).expect("slot"), m.generation, m.machine))
            })
            .collect()
    }

    /// For tests (feature `test-rig`): wakers whose memory the reactor still holds (a handle
    /// lives, or it is freed by the next `poll`).
    #[cfg(feature = "test-rig")]
    pub fn debug_wakers_retained(&self) -> usize {
        self.wakers.retained()
    }

    /// For tests (feature `test-rig`): slot releases the pool refused. Each one is a reactor bug
    /// caught before it could corrupt memory; always 0.
    #[cfg(feature = "test-rig")]
    pub fn debug_refused_releases(&self) -> u64 {
        self.refused_releases
    }

    /// Heap bytes held for socket states: the slot pool, plus the registration map's table.
    pub fn state_heap_bytes(&self) -> usize {
        self.pool.heap_bytes()
            + self.by_socket.heap_bytes()
            + self.bound.heap_bytes()
            + self.waits.heap_bytes()
    }

    fn check_running(&self) -> io::Result<()> {
        if self.shut_down {
            return Err(err(
                io::ErrorKind::NotConnected,
                "afd-reactor: the reactor has shut down",
            ));
        }
        Ok(())
    }

    /// A new registration's generation: the tag, a counter, and the slot index (docs/design.md §2). It
    /// travels as the poll's ApcContext.
    fn next_generation(&mut self, index: u32) -> u64 {
        // Unique per registration for 2^39 registrations of the same slot.
        tagged_generation(POLL_TAG, &mut self.generation_counter, index)
    }

    /// Register `socket` for `interest` under `token`, in the configured mode. The interest may
    /// be [`Interest::NONE`]: the registration then starts paused (it still reports a failed
    /// connect) until [`reregister`](Self::reregister) widens it.
    ///
    /// Resolves the base socket, associates it with the completion port under its state's address
    /// (in skip-on-success mode: a poll that is ready at once then costs no packet) and submits
    /// the first poll: events can arrive from the next [`poll`](Self::poll). A socket that is
    /// already bound to another completion port (another runtime, overlapped I/O, or an earlier
    /// registration with this reactor), or that a layered service provider stands above, is
    /// polled through one of the reactor's `\Device\Afd` helper handles instead —
    /// transparently. The reactor remembers the socket values whose
    /// association it has tried, so registering a socket again costs no association call; a new socket
    /// that later gets one of those values is polled through the helper as well.
    ///
    /// Deregister before closing the socket. If it is closed while registered anyway, its pending
    /// poll ends with `LOCAL_CLOSE` and the registration is removed without an event; registering
    /// a new socket that got the same handle value ends the old registration (socket-direct path)
    /// — see [Closing sockets](crate#closing-sockets) for the helper path and what remains.
    ///
    /// Once associated, the socket's own overlapped I/O completes on this reactor's port, which
    /// discards it (only the reactor's tagged polls are taken): use a registered socket with
    /// readiness I/O (`read`/`write` until `WouldBlock`). I/O with a completion routine (APC) is
    /// refused outright by the kernel on a socket bound to a port.
    ///
    /// # Errors
    /// - `InvalidInput`: not a socket (a file, pipe, event, or a closed handle), decided by asking
    ///   the handle, the same on every Windows;
    /// - `Other`: a socket whose layered service providers give no usable base handle;
    /// - `AlreadyExists`: this socket is already registered (use [`reregister`](Self::reregister));
    /// - `NotConnected`: the reactor has shut down;
    /// - the kernel's error if the first poll could not be submitted (nothing stays registered).
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// let again = reactor.register(&s, Token(2), Interest::READABLE).unwrap_err();
    /// assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    /// # let _ = (PollEvents::NONE, Events::with_capacity(1), Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn register<S: Source + ?Sized>(
        &mut self,
        socket: &S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.register_with_mode(socket, token, interest, self.config.mode)
    }

    /// [`register`](Self::register) with an explicit [`Mode`].
    ///
    /// # Errors
    /// As [`register`](Self::register).
    pub fn register_with_mode<S: Source + ?Sized>(
        &mut self,
        socket: &S,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        self.check_running()?;
        // The user's value, read once: everything below uses this one.
        let raw = socket.raw_socket();
        let registered = self.by_socket.get(raw);
        // Associated (or found bound elsewhere) before: the association call would fail, and the
        // socket will be polled through the helper, which itself refuses a non-socket, so the
        // proof that the base is a socket can be skipped too. See `bound`.
        let hint = registered.is_none() && self.hinted < HINT_LIMIT && self.bound.contains(raw);
        self.stats.nt.base_socket += 1;
        let base = self.kernel.base_socket(raw, !hint)?;
        let index = self.pool.alloc()?;
        let generation = self.next_generation(index);
        let key = self.pool.block(index).expect("allocated").as_ptr() as usize;
        // Poll on the socket itself (`true`) or through a helper; and whether the socket's binding
        // is known (see `Meta::binding_known`).
        let (direct, binding_known) = if hint {
            (false, false)
        } else if base != raw {
            // A layered service provider's socket: the base belongs to the provider, whose own
            // I/O would complete on our port if we associated it. Poll it through a helper.
            (false, true)
        } else {
            self.stats.nt.associate += 1;
            match self.kernel.associate(base, key) {
                Ok(()) => {
                    self.bound.insert(raw);
                    (true, true)
                }
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                    self.bound.insert(raw);
                    (false, true)
                }
                Err(e) => {
                    self.release(index);
                    return Err(e);
                }
            }
        };
        if let Some(old) = registered {
            let old_binding_known = self.pool.meta(old).is_some_and(|m| m.binding_known);
            if direct && old_binding_known {
                // A fresh association means a fresh socket object: the registered one was closed
                // and its handle value reused. End the old incarnation.
                self.socket_gone(old);
            } else {
                // Most likely the same socket twice (or one whose binding was never learned, see
                // `Meta::binding_known`); but its close may be queued: look first.
                if let Err(e) = self.drain_into_stash() {
                    self.release(index);
                    return Err(e);
                }
                if self.by_socket.contains(raw) {
                    self.release(index);
                    return Err(err(
                        io::ErrorKind::AlreadyExists,
                        "afd-reactor: socket already registered (use reregister)",
                    ));
                }
            }
        }
        let helper = if direct {
            SOCKET_DIRECT
        } else {
            self.helpers.acquire()
        };
        if base != raw {
            self.bases.insert(index, base);
        }
        let meta = self.pool.meta_mut(index).expect("allocated");
        meta.generation = generation;
        meta.socket = raw;
        meta.token = token;
        meta.interest = interest;
        meta.helper = helper;
        meta.binding_known = binding_known;
        meta.machine = Machine::new(interest.afd_events(), mode);
        let first = match self.submit(index) {
            Ok(first) => first,
            Err(status) => {
                self.release(index);
                if hint {
                    // The value may name something that is not a socket: say so if it does not.
                    self.stats.nt.base_socket += 1;
                    self.kernel.base_socket(raw, true)?;
                }
                return Err(status.into());
            }
        };
        if self.pool.meta(index).map(|m| m.generation) != Some(generation) {
            // Its first poll completed at once with LOCAL_CLOSE: it was closed meanwhile.
            return Err(err(
                io::ErrorKind::InvalidInput,
                "afd-reactor: the socket was closed as it was registered",
            ));
        }
        self.by_socket.insert(raw, index);
        if hint {
            self.hinted += 1;
        }
        if let Some(item) = first {
            self.stash_item(item);
        }
        Ok(())
    }

    /// Change the token, interest and/or mode of a registered socket. Also re-arms a oneshot
    /// registration and the reported conditions of an edge one.
    ///
    /// Keeping or narrowing the interest (even to [`Interest::NONE`], which pauses the
    /// registration) costs no kernel call: the pending poll stays, and what it reports is
    /// filtered. Widening it needs a
    /// new poll: the next [`poll`](Self::poll) call cancels the pending one, waits for the
    /// kernel's answer and submits the wider one before it waits for events (a socket never has
    /// two polls at once).
    ///
    /// # Errors
    /// `NotFound` if the socket is not registered; `NotConnected` after shutdown.
    /// # Examples
    /// Backpressure on the real reactor (Windows): write until the socket's buffer is full, ask to
    /// hear when there is room, and narrow the interest again once everything is written.
    /// ```
    /// # #[cfg(windows)] fn main() -> std::io::Result<()> {
    /// use afd_reactor::{Events, Interest, NtReactor, Token};
    /// use std::io::{self, Read, Write};
    /// use std::net::{TcpListener, TcpStream};
    /// use std::time::Duration;
    ///
    /// let mut reactor = NtReactor::new()?;
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(listener.local_addr()?)?;
    /// let (mut server, _) = listener.accept()?;
    /// server.set_nonblocking(true)?;
    /// reactor.register(&server, Token(1), Interest::READABLE)?;
    ///
    /// let chunk = [7u8; 64 * 1024];
    /// loop {
    ///     match server.write(&chunk) {
    ///         Ok(_) => {}
    ///         Err(e) if e.kind() == io::ErrorKind::WouldBlock => break, // full
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// reactor.reregister(&server, Token(1), Interest::READABLE | Interest::WRITABLE)?;
    ///
    /// // The peer reads everything; the next poll reports room to write.
    /// client.set_nonblocking(true)?;
    /// let mut buf = vec![0; 1 << 20];
    /// let mut events = Events::with_capacity(64);
    /// let mut writable = false;
    /// for _ in 0..50 {
    ///     while client.read(&mut buf).is_ok() {}
    ///     reactor.poll(&mut events, Some(Duration::from_millis(100)))?;
    ///     writable = events.iter().any(|e| e.is_writable());
    ///     if writable {
    ///         break;
    ///     }
    /// }
    /// assert!(writable, "room to write within 5 s");
    /// reactor.reregister(&server, Token(1), Interest::READABLE)?; // back to reading only
    /// reactor.deregister(&server)?;
    /// # Ok(()) }
    /// # #[cfg(not(windows))] fn main() {}
    /// ```
    ///
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// reactor.kernel().set_readiness(s.0, PollEvents::SEND);
    /// // Pause (backpressure), then ask for writability instead.
    /// reactor.reregister(&s, Token(1), Interest::NONE)?;
    /// reactor.reregister(&s, Token(1), Interest::WRITABLE)?;
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
    /// assert!(events.iter().any(|e| e.is_writable()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reregister<S: Source + ?Sized>(
        &mut self,
        socket: &S,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.check_running()?;
        let index = self.index_of(socket.raw_socket())?;
        let mode = self.pool.meta(index).expect("registered").machine.mode;
        self.change(index, token, interest, mode);
        Ok(())
    }

    /// [`reregister`](Self::reregister) with an explicit [`Mode`].
    ///
    /// # Errors
    /// `NotFound` if the socket is not registered; `NotConnected` after shutdown.
    pub fn reregister_with_mode<S: Source + ?Sized>(
        &mut self,
        socket: &S,
        token: Token,
        interest: Interest,
        mode: Mode,
    ) -> io::Result<()> {
        self.check_running()?;
        let index = self.index_of(socket.raw_socket())?;
        self.change(index, token, interest, mode);
        Ok(())
    }

    /// Re-arm what `conditions` names on `socket`, keeping its token, interest and mode: the
    /// call an [`Edge`](Mode::Edge) registration needs after an operation returned `WouldBlock`.
    ///
    /// - `Edge`: the readiness `conditions` names (within the interest) is reported again when
    ///   it holds, even if it was reported before. The others stay as they are.
    /// - `Oneshot`: the registration is re-armed (all of its interest; `conditions` only has to
    ///   be non-empty to mean something to a reader).
    /// - `Level`: nothing was disarmed, so there is nothing to do.
    /// - In every mode, a registration disarmed by an error event is retried, as
    ///   [`reregister`](Self::reregister) would.
    ///
    /// A condition already armed costs nothing, and no kernel call is made here: the re-arm is
    /// one poll submission at the start of the next [`poll`](Self::poll), shared by every re-arm
    /// of the socket made before it. If a poll for the socket's other conditions is in the
    /// kernel then, it is cancelled and resubmitted with the wider mask (one call more). A failed
    /// connect stays reported once; `rearm` does not make it report again.
    ///
    /// # Errors
    /// `NotFound` if the socket is not registered; `NotConnected` after shutdown.
    ///
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Mode, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets the example make data arrive.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register_with_mode(&s, Token(1), Interest::READABLE, Mode::Edge)?;
    /// reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE);
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
    /// assert!(events.iter().any(|e| e.is_readable()));
    /// // ... read until `WouldBlock`, then re-arm: the next data is reported.
    /// reactor.kernel().set_readiness(s.0, PollEvents::NONE);
    /// reactor.rearm(&s, Interest::READABLE)?;
    /// reactor.poll(&mut events, Some(Duration::from_millis(10)))?;
    /// assert!(events.is_empty());
    /// reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE);
    /// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
    /// assert!(events.iter().any(|e| e.is_readable()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn rearm<S: Source + ?Sized>(
        &mut self,
        socket: &S,
        conditions: Interest,
    ) -> io::Result<()> {
        self.check_running()?;
        let index = self.index_of(socket.raw_socket())?;
        let meta = self.pool.meta_mut(index).expect("registered");
        meta.machine.on_rearm(conditions.afd_events());
        self.queue_update(index);
        Ok(())
    }

    /// The inverse of [`rearm`](Self::rearm): stop reporting what `conditions` names until its
    /// `rearm`, keeping the token, interest and mode.
    ///
    /// - `Edge`: the readiness `conditions` names counts as reported. A registration disarmed
    ///   right after `register` costs that registration's one poll submission (with which the
    ///   reactor checks the socket) and none after it until a `rearm`: this is how an async layer
    ///   arms a direction only when a task waits for it.
    /// - `Oneshot`: the registration is disarmed, as after an event.
    /// - `Level`: nothing changes (narrow the interest with `reregister` instead).
    ///
    /// It makes no kernel call. A poll already in the kernel is kept, and what it or an event
    /// kept for a later `poll` reports of what is disarmed is not delivered (a reset still reaches
    /// a readiness left armed).
    ///
    /// # Errors
    /// `NotFound` if the socket is not registered; `NotConnected` after shutdown.
    ///
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Mode, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets the example make data arrive.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// let both = Interest::READABLE | Interest::WRITABLE;
    /// reactor.register_with_mode(&s, Token(1), both, Mode::Edge)?; // one submission
    /// reactor.disarm(&s, both)?; // nothing more is polled until a rearm
    /// reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE | PollEvents::SEND);
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, Some(Duration::from_millis(10)))?;
    /// assert!(events.is_empty());
    /// assert_eq!(reactor.stats().nt.submit, 1);
    /// reactor.rearm(&s, Interest::READABLE)?; // a task waits to read
    /// reactor.poll(&mut events, Some(Duration::from_secs(1)))?;
    /// assert!(events.iter().all(|e| e.is_readable() && !e.is_writable()));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn disarm<S: Source + ?Sized>(
        &mut self,
        socket: &S,
        conditions: Interest,
    ) -> io::Result<()> {
        self.check_running()?;
        let index = self.index_of(socket.raw_socket())?;
        let meta = self.pool.meta_mut(index).expect("registered");
        let withheld = meta.machine.withheld_by_disarm(conditions.afd_events());
        let generation = meta.generation;
        meta.machine.on_disarm(conditions.afd_events());
        // An event kept for a later poll loses what is disarmed (emptied, it is dropped when its
        // turn comes, and the registration re-armed as it would be).
        for item in &mut self.stash {
            if let Stashed::Ready { generation: g, afd } = item
                && *g == generation
            {
                *afd = afd.difference(withheld);
            }
        }
        self.queue_update(index);
        Ok(())
    }

    fn change(&mut self, index: u32, token: Token, interest: Interest, mode: Mode) {
        let meta = self.pool.meta_mut(index).expect("registered");
        meta.token = token;
        meta.interest = interest;
        meta.machine.on_reregister(interest.afd_events(), mode);
        self.queue_update(index);
    }

    /// Deregister `socket`: no event is delivered for this registration by any later
    /// [`poll`](Self::poll). Events already in your [`Events`] buffer from the current `poll` are
    /// not withdrawn: if you deregister while iterating, skip the tokens you no longer know.
    ///
    /// With a poll pending, the poll is cancelled and the registration lives on as a *zombie*
    /// (counted in [`Stats::zombies`]) until the kernel's answer arrives; the next `poll` collects
    /// it. Deregister before you close the socket.
    ///
    /// # Errors
    /// `NotFound` if the socket is not registered (never registered, already deregistered, or
    /// removed after it was closed); `NotConnected` after shutdown.
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`), which lets a test drive the socket.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// reactor.deregister(&s)?; // its pending poll is cancelled; the state waits as a zombie
    /// assert_eq!(reactor.stats().zombies, 1);
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, Some(Duration::ZERO))?; // the cancellation packet frees it
    /// assert_eq!(reactor.stats().zombies, 0);
    /// assert_eq!(reactor.deregister(&s).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    /// # let _ = PollEvents::NONE;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn deregister<S: Source + ?Sized>(&mut self, socket: &S) -> io::Result<()> {
        self.check_running()?;
        let raw = socket.raw_socket();
        let index = self.index_of(raw)?;
        self.unmap(raw, index);
        self.end_registration(index);
        Ok(())
    }

    /// Take registration `index` of `socket` out of the registration map.
    fn unmap(&mut self, socket: RawSock, index: u32) {
        debug_assert_eq!(self.by_socket.get(socket), Some(index));
        self.by_socket.remove(socket);
        if self.pool.meta(index).is_some_and(|m| !m.binding_known) {
            self.hinted -= 1;
        }
    }

    /// End registration `index` (already out of the registration map): free it now, or make it a
    /// zombie whose pending poll is cancelled (docs/design.md §3). Returns true if a cancel was issued.
    fn end_registration(&mut self, index: u32) -> bool {
        let meta = self.pool.meta_mut(index).expect("registered");
        match meta.machine.on_deregister() {
            Deregistered::FreeNow => {
                self.release(index);
                false
            }
            Deregistered::CancelThenWait => {
                self.stats.zombies += 1;
                self.stats.zombies_created += 1;
                self.cancel(index);
                true
            }
            Deregistered::Wait => {
                self.stats.zombies += 1;
                self.stats.zombies_created += 1;
                false
            }
        }
    }

    fn index_of(&self, socket: RawSock) -> io::Result<u32> {
        self.by_socket.get(socket).ok_or_else(|| {
            err(
                io::ErrorKind::NotFound,
                "afd-reactor: socket is not registered",
            )
        })
    }

    /// Give slot `index` back to the pool (and its helper-handle place). The pool refuses a slot
    /// that is vacant or whose poll is in flight: that is a bug in this file, caught here before
    /// it could hand one block to two registrations.
    fn release(&mut self, index: u32) {
        let via = self.pool.meta(index).map(|m| m.via());
        if self.pool.release(index) {
            self.bases.remove(&index);
            if let Some(PollVia::Helper(n)) = via {
                self.helpers.release(n);
            }
        } else {
            self.refused_releases += 1;
            if cfg!(debug_assertions) {
                panic!("afd-reactor bug: slot {index} released twice or while the kernel holds it");
            }
        }
    }

    /// A [`Waker`] whose wakes arrive as events with `token` and [`Event::is_wake`].
    /// Asking again for the same token while a handle to its waker lives
    /// returns the same waker; the reactor frees a waker once its last handle is dropped. The token
    /// may be one a socket or timer uses too: the wake is still an event of its own.
    ///
    /// # Errors
    /// `NotConnected` if the reactor has shut down.
    pub fn waker(&mut self, token: Token) -> io::Result<Waker> {
        self.check_running()?;
        let kernel = &self.kernel;
        Ok(self.wakers.get(token, || Box::new(kernel.poster())))
    }

    /// Start a timer: an event with `token` and [`Event::is_timer`] after `delay`, then every
    /// `period` if one is given.
    ///
    /// - A periodic timer keeps to its grid: `delay`, `delay + period`, `delay + 2 × period`, …
    ///   Ticks missed while the loop was busy elsewhere are merged into one event (a timer fires
    ///   at most once per [`poll`](Self::poll)), and the next tick is the next one on the grid.
    /// - Deadlines are kept to the NT timeout's unit, 100 ns (the OS timer's granularity still
    ///   applies). A delay too large to represent (`Duration::MAX`) never fires.
    /// - The token may be one a socket or a waker uses too: the event says it is a timer's.
    ///
    /// # Errors
    /// - `InvalidInput`: a period of zero; for a timer that fires once, give `None`. (A period
    ///   shorter than a turn of your loop fires once per `poll`.)
    /// - `NotConnected`: the reactor has shut down.
    /// # Examples
    /// ```
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Reactor, Token};
    /// use std::time::Duration;
    /// // On the simulated kernel (feature `test-rig`); on Windows, `Reactor::new()?` alike.
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let every = Some(Duration::from_millis(2));
    /// let tick = reactor.add_timer(Token(5), Duration::from_millis(2), every)?;
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, None)?; // returns when the timer fires
    /// assert!(events.iter().any(|e| e.is_timer() && e.token() == Token(5)));
    /// assert!(reactor.cancel_timer(tick));
    /// let zero = reactor.add_timer(Token(6), Duration::ZERO, Some(Duration::ZERO));
    /// assert_eq!(zero.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_timer(
        &mut self,
        token: Token,
        delay: Duration,
        period: Option<Duration>,
    ) -> io::Result<TimerId> {
        self.check_running()?;
        if period.is_some_and(|p| p.is_zero()) {
            return Err(err(
                io::ErrorKind::InvalidInput,
                "afd-reactor: a timer's period must not be zero (use None for a one-shot timer)",
            ));
        }
        let now = Instant::now();
        // `Duration::MAX` (or anything past the clock's range) means "never": park it far away.
        let far = timer::far_future(now);
        let deadline = now.checked_add(delay).unwrap_or(far).min(far);
        Ok(self.timers.add(token, deadline, period))
    }

    /// Cancel a timer. Returns false if it already fired (a one-shot timer), was cancelled
    /// already, or belongs to another reactor.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    fn queue_update(&mut self, index: u32) {
        let meta = self.pool.meta_mut(index).expect("live slot");
        if !meta.queued {
            meta.queued = true;
            let generation = meta.generation;
            self.updates.push((index, generation));
        }
    }

    /// Submit the poll the machine wants. `Ok(Some(_))` if it completed at once with something to
    /// report (the caller stashes it: its re-arm waits until it is delivered); `Err` if the kernel
    /// refused it (the machine stays idle).
    fn submit(&mut self, index: u32) -> Result<Option<Stashed>, NtStatus> {
        let meta = self.pool.meta(index).expect("live slot");
        let Update::Submit(mask) = meta.machine.update() else {
            return Ok(None);
        };
        let (via, generation) = (meta.via(), meta.generation);
        let base = self.base_of(index);
        let block = self.pool.block(index).expect("live slot");
        // SAFETY: the machine is idle, so the kernel does not hold the block; writing it through
        // the raw pointer creates no reference that could alias a kernel write.
        unsafe {
            block.as_ptr().write(PollBlock {
                iosb: IoStatusBlock::pending(),
                info: AfdPollInfo::new(base as usize, mask),
            });
        }
        self.stats.nt.submit += 1;
        // SAFETY: the block lives in a pinned pool slot that is released only after this poll's
        // packet has been dequeued (or its completion at submit reported), or leaked at teardown,
        // and the reactor does not touch it while the machine says the poll is in flight.
        let outcome = unsafe {
            self.kernel
                .submit_poll(via, base, block, generation as usize)
        };
        let meta = self.pool.meta_mut(index).expect("live slot");
        let armed = meta.machine.on_submitted(mask, outcome);
        match outcome {
            Submitted::Queued => {
                self.stats.in_flight += 1;
                Ok(None)
            }
            Submitted::Completed => {
                debug_assert!(armed);
                // No packet will come: the block is ours again and holds the result.
                self.stats.completed_at_submit += 1;
                let (status, reported) = self.read_result(index);
                Ok(self.complete(index, status, reported))
            }
            Submitted::Refused(status) => {
                self.stats.submit_failures += 1;
                Err(status)
            }
        }
    }

    /// The status and reported events in slot `index`'s block, whose poll has ended (its packet
    /// was dequeued, or it completed at submit).
    fn read_result(&self, index: u32) -> (NtStatus, PollEvents) {
        let block = self.pool.block(index).expect("live slot");
        // SAFETY: the poll has ended, so the kernel is done with the block; read through the raw
        // pointer into a copy without keeping a reference.
        let result = unsafe { block.as_ptr().read() };
        let status = result.iosb.status();
        if !status.is_success() {
            // Cancelled, closed or failed: the buffer holds no answer (Wine leaves the request).
            return (status, PollEvents::NONE);
        }
        let info = result.info;
        let mut events = info.reported_events();
        if info.number_of_handles > 0 && info.handles[0].status.is_error() {
            // A per-handle error status is the socket's error (a failed connect).
            events |= PollEvents::CONNECT_FAIL;
        }
        (status, events)
    }

    /// Registration `index`'s poll ended with `status` and `reported` events: free it, re-arm it,
    /// or return what to report.
    fn complete(&mut self, index: u32, status: NtStatus, reported: PollEvents) -> Option<Stashed> {
        let meta = self.pool.meta_mut(index).expect("live slot");
        let generation = meta.generation;
        match meta.machine.on_completion(status, reported) {
            Completed::Free => {
                self.finish(index);
                None
            }
            Completed::Deliver(afd) if afd.is_empty() => {
                self.queue_update(index);
                None
            }
            Completed::Deliver(afd) => Some(Stashed::Ready { generation, afd }),
            Completed::Interrupted => {
                self.stats.interrupted += 1;
                Some(Stashed::Error { generation })
            }
        }
    }

    fn cancel(&mut self, index: u32) {
        let meta = self.pool.meta(index).expect("live slot");
        let via = meta.via();
        let base = self.base_of(index);
        let block = self.pool.block(index).expect("live slot");
        self.stats.nt.cancel += 1;
        let _status = self.kernel.cancel(via, base, block);
        // Whatever it returned, a packet is coming: the cancelled poll, its raced completion, or
        // (handle closed) its LOCAL_CLOSE.
        self.pool
            .meta_mut(index)
            .expect("live slot")
            .machine
            .on_cancel_issued();
    }

    /// The socket (or layered provider's base) registration `index` polls.
    fn base_of(&self, index: u32) -> RawSock {
        match self.bases.get(&index) {
            Some(&base) => base,
            None => self.pool.meta(index).expect("live slot").socket,
        }
    }

    /// The registration's socket is gone: its handle value now names the new socket being
    /// registered (with no provider above it: that is what made its association succeed). End it
    /// like a deregistration, except that a socket-direct poll still out is cancelled through
    /// that value — now a handle the caller of `register` has just lent us (never through a value
    /// that may name anything): if the old poll was re-armed on the new socket this finds it;
    /// otherwise it finds nothing, and the old socket's LOCAL_CLOSE ends the poll. A helper poll
    /// is cancelled on the reactor's own helper handle.
    fn socket_gone(&mut self, index: u32) {
        // A socket-direct registration has no separate base: its cancel goes to `socket`.
        let socket = self.pool.meta(index).expect("live slot").socket;
        self.unmap(socket, index);
        self.end_registration(index);
        self.stats.closed_cleanups += 1;
    }

    /// Free a slot whose last poll has ended.
    fn finish(&mut self, index: u32) {
        let meta = self.pool.meta(index).expect("live slot");
        if meta.machine.life == Life::Zombie {
            self.stats.zombies -= 1;
            self.stats.late_packets += 1;
        } else {
            let socket = meta.socket;
            if self.by_socket.get(socket) == Some(index) {
                self.unmap(socket, index);
            }
            self.stats.closed_cleanups += 1;
        }
        self.release(index);
    }

    /// The live (not zombie) registration of `generation`, if any.
    fn live_index(&self, generation: u64) -> Option<u32> {
        let index = slot_of(generation);
        self.pool
            .meta(index)
            .is_some_and(|m| m.generation == generation && m.machine.life == Life::Active)
            .then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimSocket;
    use crate::kernel::sim::SimKernel;

    /// The bits of a socket generation below the tag: a counter above the slot index.
    const COUNTER_BITS: u32 = 63 - INDEX_BITS;

    /// Past `HINT_LIMIT` live hinted registrations, `register` makes the association call again;
    /// ending hinted registrations makes room.
    #[test]
    fn the_association_hint_is_capped() {
        let mut r = Reactor::with_kernel(SimKernel::new(7));
        let n = HINT_LIMIT + 8;
        let socks: Vec<SimSocket> = (0..n)
            .map(|_| SimSocket(r.kernel().open_socket()))
            .collect();
        for (i, s) in socks.iter().enumerate() {
            r.register(s, Token(i), Interest::READABLE).unwrap();
            r.deregister(s).unwrap();
        }
        let associate = |r: &Reactor<SimKernel>| r.stats().nt.associate;
        let before = associate(&r);
        for (i, s) in socks.iter().enumerate() {
            r.register(s, Token(i), Interest::READABLE).unwrap();
        }
        assert_eq!(r.hinted, HINT_LIMIT);
        assert_eq!(associate(&r) - before, 8, "the ones past the cap asked");
        r.deregister(&socks[0]).unwrap();
        r.deregister(&socks[n - 1]).unwrap(); // not hinted: no room made
        assert_eq!(r.hinted, HINT_LIMIT - 1);
        let before = associate(&r);
        r.register(&socks[0], Token(0), Interest::READABLE).unwrap();
        assert_eq!((associate(&r) - before, r.hinted), (0, HINT_LIMIT));
        r.shutdown().unwrap();
        assert_eq!(r.hinted, 0);
    }

    /// Every generation carries the tag, is never 0, and names its slot.
    #[test]
    fn generations_are_tagged_and_name_their_slot() {
        let mut r = Reactor::with_kernel(SimKernel::new(8));
        for index in [0, 1, (1 << INDEX_BITS) - 1] {
            let g = r.next_generation(index);
            assert_eq!(g as usize & POLL_TAG, POLL_TAG);
            assert_eq!(slot_of(g), index);
        }
        r.generation_counter = (1 << COUNTER_BITS) - 1;
        let g = r.next_generation(5);
        assert_ne!(
            g & !(POLL_TAG as u64),
            u64::from(5u32),
            "the counter skips 0"
        );
    }
}
