//! The public API and the event loop (WRL-001 §1–§6).

mod bound;
pub(crate) mod event;
mod pool;
mod sockmap;
mod timer;
mod waker;

pub use event::{Event, Events, Interest, Token};
pub use timer::TimerId;
pub use waker::Waker;

use crate::afd::{AfdPollInfo, CompletionEntry, IoStatusBlock, NtStatus, PollEvents};
use crate::kernel::{HELPER_KEY, Kernel, PollBlock, PollVia, RawSock, WAKE_KEY};
use crate::state::{Completed, Deregistered, Life, Machine, Mode, Update};
use bound::Bound;
use pool::{INDEX_BITS, Pool};
use sockmap::SockMap;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use waker::WakerShared;

/// Teardown cancels this many polls between zero-timeout drains (see `shutdown`).
const CANCEL_BATCH: usize = 64;

/// At most this many live registrations are polled through the helper because their value is in
/// `bound` (see there). The hint cannot tell the socket registered before from a new socket that
/// got its value; without a cap, a server whose new sockets keep landing on recycled values would
/// move them all onto the one helper handle, where (on Windows) a cancel costs more the more polls
/// the handle holds (DESIGN-NOTES §3). Past the cap, `register` makes the association call again.
const HINT_LIMIT: usize = 32;

/// Something that can be registered: a socket.
///
/// Implemented (on Windows) for every `T: AsSocket` — `TcpStream`, `TcpListener`, `UdpSocket`,
/// socket2's `Socket`, … — and for [`SimSocket`], the socket of the simulated kernel.
///
/// The reactor remembers the socket's handle value between calls: deregister a socket before
/// closing it. A socket closed while registered is cleaned up when its poll reports
/// `LOCAL_CLOSE` (no event is delivered); see [`Reactor::register`].
pub trait Source {
    /// The socket's handle value.
    fn raw_socket(&self) -> RawSock;
}

#[cfg(windows)]
impl<T: std::os::windows::io::AsSocket + ?Sized> Source for T {
    fn raw_socket(&self) -> RawSock {
        use std::os::windows::io::AsRawSocket;
        self.as_socket().as_raw_socket()
    }
}

/// A socket of the [simulated kernel](crate::kernel::sim), by handle value.
///
/// # Examples
/// ```
/// use afd_reactor::kernel::sim::SimKernel;
/// use afd_reactor::{Interest, Reactor, SimSocket, Token};
/// let mut reactor = Reactor::with_kernel(SimKernel::new(7));
/// let s = SimSocket(reactor.kernel().open_socket());
/// reactor.register(&s, Token(1), Interest::READABLE)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SimSocket(pub RawSock);

impl Source for SimSocket {
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
    /// Socket ↔ port associations (`CreateIoCompletionPort`).
    pub associate: u64,
    /// `IOCTL_AFD_POLL` submissions (`NtDeviceIoControlFile`).
    pub submit: u64,
    /// `NtCancelIoFileEx` calls.
    pub cancel: u64,
    /// `NtRemoveIoCompletionEx` calls.
    pub dequeue: u64,
    /// `NtSetIoCompletion` calls (wakes).
    pub post: u64,
}

impl NtCalls {
    /// All calls together.
    pub fn total(&self) -> u64 {
        self.base_socket + self.associate + self.submit + self.cancel + self.dequeue + self.post
    }
}

/// Counters for introspection: cheap to read, printed by the demo and the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live registrations.
    pub registered: usize,
    /// Deregistered states still waiting for their last packet (WRL-001 §2).
    pub zombies: usize,
    /// Polls the kernel holds now.
    pub in_flight: usize,
    /// Slots allocated (live, zombie or vacant); each is pinned until teardown.
    pub slots: usize,
    /// Live timers.
    pub timers: usize,
    /// Wakers the reactor holds (one per token asked for with [`Reactor::waker`]).
    pub wakers: usize,
    /// NT calls by kind.
    pub nt: NtCalls,
    /// Packets dequeued.
    pub packets: u64,
    /// Registrations that became zombies (ended with a poll still in the kernel).
    pub zombies_created: u64,
    /// Packets for ended registrations, absorbed by their zombie and never delivered: once no
    /// zombie is left, exactly one per zombie created.
    pub late_packets: u64,
    /// Packets for a dead or previous incarnation, discarded (WRL-001 §1).
    pub stale_discarded: u64,
    /// Packets of our polls that arrived under another socket's key (their handle value was
    /// reused): the old registration is ended, nothing delivered.
    pub misrouted: u64,
    /// Socket readiness events delivered.
    pub events: u64,
    /// Registrations removed because their socket was closed (LOCAL_CLOSE).
    pub closed_cleanups: u64,
    /// Poll submissions the kernel refused (reported as an error event; the registration is
    /// disarmed until `reregister`).
    pub submit_failures: u64,
    /// `Waker::wake` calls.
    pub wakes: u64,
}

/// What teardown did (WRL-001 §6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Teardown {
    /// Polls cancelled.
    pub cancelled: u64,
    /// Packets drained.
    pub drained: u64,
    /// Polls still in the kernel when teardown ended (non-zero only when the bound was hit or on
    /// abandon: their buffers are leaked, never freed).
    pub leaked: usize,
    /// How long it took.
    pub elapsed: Duration,
}

impl fmt::Display for Teardown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cancelled {} polls, drained {} packets in {:?}; {} polls still in flight (buffers leaked)",
            self.cancelled, self.drained, self.elapsed, self.leaked
        )
    }
}

impl std::error::Error for Teardown {}

/// The single-threaded reactor (WRL-001).
///
/// Generic over the [`Kernel`]: `NtKernel` on Windows (`Reactor::new`), or the
/// [simulated kernel](crate::kernel::sim) anywhere. `Send` (if the
/// kernel is) but not `Sync`: one thread drives it; [`Waker`]s reach it from others.
///
/// # Examples
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
    /// Slots whose poll needs a submit or cancel before the next dequeue: `(index, generation)`.
    updates: Vec<(u32, u64)>,
    entries: Vec<CompletionEntry>,
    /// What was dequeued outside a poll, or did not fit: delivered first by the next poll.
    stash: VecDeque<Stashed>,
    timers: timer::Timers,
    wakers: Vec<Arc<WakerShared>>,
    generation_counter: u64,
    stats: Stats,
    shut_down: bool,
}

#[cfg(windows)]
impl Reactor<crate::kernel::nt::NtKernel> {
    /// A reactor on the real NT kernel with default settings.
    ///
    /// # Errors
    /// The completion port could not be created.
    pub fn new() -> io::Result<Self> {
        Ok(Self::with_kernel(crate::kernel::nt::NtKernel::new()?))
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

/// Add `event` to `events`; wakes of one waker are reported once per poll.
fn deliver(events: &mut Events, event: Event) {
    if event.is_wake()
        && events
            .iter()
            .any(|e| e.is_wake() && e.token() == event.token())
    {
        return;
    }
    events.push(event);
}

/// An event kept for the next poll.
#[derive(Debug, Clone, Copy)]
enum Stashed {
    /// Not a socket's (a wake).
    Event(Event),
    /// A socket's readiness, as AFD events, for registration `generation`.
    Ready { generation: u64, afd: PollEvents },
    /// The kernel refused to arm registration `generation`.
    Error { generation: u64 },
}

impl Stashed {
    fn new(event: Event, entry: &CompletionEntry) -> Self {
        match event.afd() {
            Some(afd) if entry.key != WAKE_KEY => Self::Ready {
                generation: entry.apc_context as u64,
                afd,
            },
            _ => Self::Event(event),
        }
    }
}

fn err(kind: io::ErrorKind, msg: &'static str) -> io::Error {
    io::Error::new(kind, msg)
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
            updates: Vec::new(),
            entries: vec![CompletionEntry::zeroed(); config.batch],
            stash: VecDeque::new(),
            timers: timer::Timers::default(),
            wakers: Vec::new(),
            generation_counter: 0,
            stats: Stats::default(),
            shut_down: false,
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
        for w in &self.wakers {
            s.nt.post += w.posts.load(Ordering::Relaxed);
            s.wakes += w.calls.load(Ordering::Relaxed);
        }
        s
    }

    /// For tests and debugging: every non-vacant slot as (block address, generation, machine).
    #[doc(hidden)]
    pub fn debug_slots(&self) -> Vec<(std::ptr::NonNull<PollBlock>, u64, Machine)> {
        (0..self.pool.len() as u32)
            .filter_map(|i| {
                let m = self.pool.meta(i)?;
                (m.generation != 0)
                    .then(|| (self.pool.block(i).expect("slot"), m.generation, m.machine))
            })
            .collect()
    }

    /// Heap bytes held for socket states: the slot pool, plus the registration map's table.
    pub fn state_heap_bytes(&self) -> usize {
        self.pool.heap_bytes() + self.by_socket.heap_bytes() + self.bound.heap_bytes()
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

    fn next_generation(&mut self, index: u32) -> u64 {
        // A 40-bit counter above the 24-bit slot index: unique per registration for 2^40
        // registrations of the same slot, and never 0 (0 marks a vacant slot).
        self.generation_counter = (self.generation_counter + 1) & ((1 << (64 - INDEX_BITS)) - 1);
        if self.generation_counter == 0 {
            self.generation_counter = 1;
        }
        (self.generation_counter << INDEX_BITS) | u64::from(index)
    }

    /// Register `socket` for `interest` under `token`, in the configured mode (WRL-001 §5).
    ///
    /// Resolves the base socket, associates it with the completion port under its state's address
    /// and submits the first poll: events can arrive from the next [`poll`](Self::poll). A socket
    /// that is already bound to another completion port (another runtime, overlapped I/O, or an
    /// earlier registration with this reactor) is polled through the reactor's `\Device\Afd`
    /// helper handle instead — transparently. The reactor remembers the socket values whose
    /// association it has tried, so registering a socket again costs no association call; a new socket
    /// that later gets one of those values is polled through the helper as well.
    ///
    /// Deregister before closing the socket. If it is closed while registered anyway, its pending
    /// poll ends with `LOCAL_CLOSE` and the registration is removed without an event; registering
    /// a new socket that got the same handle value ends the old registration (socket-direct path)
    /// — see the README's contract section for the helper path and the remaining window.
    ///
    /// # Errors
    /// - `InvalidInput`: not a socket (a file, pipe, event, or a closed handle);
    /// - `AlreadyExists`: this socket is already registered (use [`reregister`](Self::reregister));
    /// - `NotConnected`: the reactor has shut down;
    /// - the kernel's error if the first poll could not be submitted (nothing stays registered).
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
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
        let raw = socket.raw_socket();
        let registered = self.by_socket.get(raw);
        // Associated (or found bound elsewhere) before: the association call would fail, and the
        // socket will be polled through the helper, which itself refuses a non-socket, so the
        // proof that the base is a socket can be skipped too. See `bound`.
        let binding_known =
            registered.is_some() || self.hinted >= HINT_LIMIT || !self.bound.contains(raw);
        self.stats.nt.base_socket += 1;
        let base = self.kernel.base_socket(raw, binding_known)?;
        let index = self.pool.alloc()?;
        let generation = self.next_generation(index);
        let key = self.pool.block(index).expect("allocated").as_ptr() as usize;
        let via = if !binding_known {
            PollVia::Helper
        } else {
            self.stats.nt.associate += 1;
            match self.kernel.associate(base, key) {
                Ok(()) => {
                    self.bound.insert(raw);
                    PollVia::Socket
                }
                Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                    self.bound.insert(raw);
                    PollVia::Helper
                }
                Err(e) => {
                    self.pool.release(index);
                    return Err(e);
                }
            }
        };
        if let Some(old) = registered {
            let old_binding_known = self.pool.meta(old).is_some_and(|m| m.binding_known);
            if via == PollVia::Socket && old_binding_known {
                // A fresh association means a fresh socket object: the registered one was closed
                // and its handle value reused. End the old incarnation.
                self.socket_gone(old, base);
            } else {
                // Most likely the same socket twice (or one whose binding was never learned, see
                // `Meta::binding_known`); but its close may be queued: look first.
                if let Err(e) = self.drain_into_stash() {
                    self.pool.release(index);
                    return Err(e);
                }
                if self.by_socket.contains(raw) {
                    self.pool.release(index);
                    return Err(err(
                        io::ErrorKind::AlreadyExists,
                        "afd-reactor: socket already registered (use reregister)",
                    ));
                }
            }
        }
        *self.pool.meta_mut(index).expect("allocated") = pool::Meta {
            generation,
            socket: raw,
            base,
            token,
            interest,
            via,
            binding_known,
            queued: false,
            machine: Machine::new(interest.afd_events(), mode),
        };
        if let Err(status) = self.submit(index) {
            self.pool.release(index);
            if !binding_known {
                // The value may name something that is not a socket: say so if it does not.
                self.stats.nt.base_socket += 1;
                self.kernel.base_socket(raw, true)?;
            }
            return Err(status.into());
        }
        self.by_socket.insert(raw, index);
        if !binding_known {
            self.hinted += 1;
        }
        Ok(())
    }

    /// Change the token, interest and/or mode of a registered socket. Also re-arms a oneshot
    /// registration and the reported conditions of an edge one. Costs no NT call if the pending
    /// poll already covers the new interest; otherwise the poll is cancelled, and resubmitted when
    /// the cancellation packet arrives (never two polls at once, WRL-001 §4).
    ///
    /// # Errors
    /// `NotFound` if the socket is not registered.
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
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
        let mode = self.registered(socket)?.machine.mode;
        self.reregister_with_mode(socket, token, interest, mode)
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
        let index = self.index_of(socket)?;
        let meta = self.pool.meta_mut(index).expect("registered");
        meta.token = token;
        meta.interest = interest;
        meta.machine.on_reregister(interest.afd_events(), mode);
        self.queue_update(index);
        Ok(())
    }

    /// Deregister `socket` (WRL-001 §2). With a poll pending, the poll is cancelled and the state
    /// lives on as a zombie until its packet is dequeued; no event is delivered for it afterwards.
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
        let index = self.index_of(socket)?;
        self.unmap(socket.raw_socket(), index);
        self.end_registration(index);
        Ok(())
    }

    /// Take registration `index` of `socket` out of the registration map.
    fn unmap(&mut self, socket: RawSock, index: u32) {
        self.by_socket.remove(socket);
        if self.pool.meta(index).is_some_and(|m| !m.binding_known) {
            self.hinted -= 1;
        }
    }

    /// End registration `index` (already out of the registration map): free it now, or make it a
    /// zombie whose pending poll is cancelled (WRL-001 §2). Returns true if a cancel was issued.
    fn end_registration(&mut self, index: u32) -> bool {
        let meta = self.pool.meta_mut(index).expect("registered");
        match meta.machine.on_deregister() {
            Deregistered::FreeNow => {
                self.pool.release(index);
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

    fn index_of<S: Source + ?Sized>(&self, socket: &S) -> io::Result<u32> {
        self.by_socket.get(socket.raw_socket()).ok_or_else(|| {
            err(
                io::ErrorKind::NotFound,
                "afd-reactor: socket is not registered",
            )
        })
    }

    fn registered<S: Source + ?Sized>(&self, socket: &S) -> io::Result<&pool::Meta> {
        let index = self.index_of(socket)?;
        Ok(self.pool.meta(index).expect("registered"))
    }

    /// A [`Waker`] whose wakes arrive as events with `token` (WRL-001 §3). Asking again for the
    /// same token returns the same waker.
    ///
    /// # Errors
    /// `NotConnected` if the reactor has shut down.
    pub fn waker(&mut self, token: Token) -> io::Result<Waker> {
        self.check_running()?;
        // One waker per token: asking again returns the same one (and the list stays bounded).
        if let Some(apc) = self.wakers.iter().position(|w| w.token == token) {
            return Ok(Waker {
                shared: Arc::clone(&self.wakers[apc]),
                apc,
            });
        }
        let shared = WakerShared::new(Box::new(self.kernel.poster()), token);
        self.wakers.push(Arc::clone(&shared));
        Ok(Waker {
            shared,
            apc: self.wakers.len() - 1,
        })
    }

    /// Start a timer: an event with `token` and [`Event::is_timer`] after `delay`, then every
    /// `period` if given. Deadlines are honoured to the NT timeout's 100 ns unit (the OS timer
    /// granularity still applies). A delay too large to represent never fires.
    /// # Examples
    /// ```
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Reactor, Token};
    /// use std::time::Duration;
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let every = Some(Duration::from_millis(2));
    /// let tick = reactor.add_timer(Token(5), Duration::from_millis(2), every);
    /// let mut events = Events::with_capacity(8);
    /// reactor.poll(&mut events, None)?; // returns when the timer fires
    /// assert!(events.iter().any(|e| e.is_timer() && e.token() == Token(5)));
    /// assert!(reactor.cancel_timer(tick));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn add_timer(
        &mut self,
        token: Token,
        delay: Duration,
        period: Option<Duration>,
    ) -> TimerId {
        let now = Instant::now();
        // `Duration::MAX` (or anything past the clock's range) means "never": park it far away.
        let far = timer::far_future(now);
        let deadline = now.checked_add(delay).unwrap_or(far).min(far);
        let period = period.filter(|p| !p.is_zero());
        self.timers.add(token, deadline, period)
    }

    /// Cancel a timer. Returns false if it already fired (one-shot) or was cancelled.
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

    /// Submit the poll the machine wants. `Err` if the kernel refused it (the machine stays idle).
    fn submit(&mut self, index: u32) -> Result<(), NtStatus> {
        let meta = self.pool.meta(index).expect("live slot");
        let Update::Submit(mask) = meta.machine.update() else {
            return Ok(());
        };
        let (via, base, generation) = (meta.via, meta.base, meta.generation);
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
        // packet has been dequeued (or leaked at teardown), and the reactor does not touch it
        // while the machine says the poll is in flight.
        let status = unsafe {
            self.kernel
                .submit_poll(via, base, block, generation as usize)
        };
        let meta = self.pool.meta_mut(index).expect("live slot");
        if meta.machine.on_submitted(mask, status) {
            self.stats.in_flight += 1;
            Ok(())
        } else {
            self.stats.submit_failures += 1;
            Err(status)
        }
    }

    fn cancel(&mut self, index: u32) {
        let meta = self.pool.meta(index).expect("live slot");
        let (via, base) = (meta.via, meta.base);
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

    /// The registration's socket is gone: its handle value now names the new socket being
    /// registered, whose base socket is `new_base`. End it like a deregistration, except that a
    /// poll still out is cancelled through `new_base` — a handle the caller of `register` has just
    /// lent us (never through the old values, which may name anything now): if the old poll was
    /// re-armed on the new socket this finds it; otherwise it finds nothing, and the old socket's
    /// LOCAL_CLOSE ends the poll.
    fn socket_gone(&mut self, index: u32, new_base: RawSock) {
        let meta = self.pool.meta_mut(index).expect("live slot");
        let socket = meta.socket;
        if meta.via == PollVia::Socket {
            meta.base = new_base;
        }
        self.unmap(socket, index);
        self.end_registration(index);
        self.stats.closed_cleanups += 1;
    }

    /// Free a slot whose last packet was handled.
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
        self.pool.release(index);
    }

    /// Apply queued interest changes and re-arms: the submits and cancels gathered since the last
    /// dequeue, so each socket costs at most one NT call per poll.
    fn flush_updates(&mut self) {
        let mut queue = std::mem::take(&mut self.updates);
        for &(index, generation) in &queue {
            let Some(meta) = self.pool.meta_mut(index) else {
                continue;
            };
            if meta.generation != generation {
                continue; // freed (and maybe reused) since it was queued
            }
            meta.queued = false;
            match meta.machine.update() {
                Update::Nothing => {}
                Update::Cancel => self.cancel(index),
                Update::Submit(_) => {
                    if self.submit(index).is_err() {
                        let meta = self.pool.meta(index).expect("live slot");
                        if meta.machine.closed {
                            self.finish(index);
                        } else {
                            // Disarmed until the user reregisters: tell them, once.
                            self.stash.push_back(Stashed::Error { generation });
                        }
                    }
                }
            }
        }
        queue.clear();
        if self.updates.is_empty() {
            self.updates = queue; // keep the allocation
        }
    }

    /// Handle one packet; returns the event to deliver, if any.
    fn dispatch(&mut self, entry: CompletionEntry) -> Option<Event> {
        self.stats.packets += 1;
        if entry.key == WAKE_KEY {
            let waker = self.wakers.get(entry.apc_context)?;
            return waker.on_packet().then(|| Event::wake(waker.token));
        }
        // WRL-001 §1: the generation is checked before anything else about the state.
        let generation = entry.apc_context as u64;
        let index = (generation & ((1 << INDEX_BITS) - 1)) as u32;
        let live = self
            .pool
            .meta(index)
            .is_some_and(|m| m.generation == generation && m.machine.poll.in_flight());
        if !live {
            self.stats.stale_discarded += 1;
            return None;
        }
        let block = self.pool.block(index).expect("live slot");
        let meta = self.pool.meta(index).expect("live slot");
        let expected_key = match meta.via {
            PollVia::Socket => block.as_ptr() as usize,
            PollVia::Helper => HELPER_KEY,
        };
        self.stats.in_flight -= 1;
        let status = entry.status();
        let outcome = if entry.key != expected_key {
            // Our poll was issued on a handle value that now names another socket (ours, under
            // another key): the registered socket is gone. Deliver nothing from it.
            self.stats.misrouted += 1;
            let meta = self.pool.meta_mut(index).expect("live slot");
            meta.machine.closed = true;
            meta.machine.on_completion(status, PollEvents::LOCAL_CLOSE)
        } else {
            let reported = if status.is_success() {
                // SAFETY: this poll's packet has been dequeued, so the kernel is done with the
                // block; read through the raw pointer without keeping a reference.
                let info = unsafe { (*block.as_ptr()).info };
                let mut events = info.reported_events();
                if info.number_of_handles > 0 && info.handles[0].status.is_error() {
                    // A per-handle error status is the socket's error (a failed connect).
                    events |= PollEvents::CONNECT_FAIL;
                }
                events
            } else {
                PollEvents::NONE
            };
            let meta = self.pool.meta_mut(index).expect("live slot");
            meta.machine.on_completion(status, reported)
        };
        match outcome {
            Completed::Free => {
                self.finish(index);
                None
            }
            Completed::Deliver(afd) => {
                let meta = self.pool.meta(index).expect("live slot");
                let event =
                    (!afd.is_empty()).then(|| Event::from_afd(meta.token, afd, meta.interest));
                self.queue_update(index);
                if event.is_some() {
                    self.stats.events += 1;
                }
                event
            }
        }
    }

    /// Keep `event` (dequeued from `entry`) for the next poll. One stashed wake per waker covers
    /// every wake before it.
    fn stash_event(&mut self, event: Event, entry: &CompletionEntry) {
        let stashed = Stashed::new(event, entry);
        if event.is_wake()
            && self.stash.iter().any(
                |s| matches!(s, Stashed::Event(e) if e.is_wake() && e.token() == event.token()),
            )
        {
            return;
        }
        self.stash.push_back(stashed);
    }

    /// The live (not zombie) registration of `generation`, if any.
    fn live_meta(&self, generation: u64) -> Option<&pool::Meta> {
        let index = (generation & ((1 << INDEX_BITS) - 1)) as u32;
        self.pool
            .meta(index)
            .filter(|m| m.generation == generation && m.machine.life == Life::Active)
    }

    /// Turn a stashed item into the event to deliver now: with the registration's current token
    /// and interest, and nothing if the registration has ended meanwhile.
    fn unstash(&self, stashed: Stashed) -> Option<Event> {
        match stashed {
            Stashed::Event(ev) => Some(ev),
            Stashed::Ready { generation, afd } => {
                let m = self.live_meta(generation)?;
                let afd = afd.intersection(m.interest.afd_events().union(PollEvents::CONNECT_FAIL));
                (!afd.is_empty()).then(|| Event::from_afd(m.token, afd, m.interest))
            }
            Stashed::Error { generation } => {
                self.live_meta(generation).map(|m| Event::error(m.token))
            }
        }
    }

    /// Dequeue what is already queued (timeout 0) and keep the events for the next poll.
    fn drain_into_stash(&mut self) -> io::Result<()> {
        loop {
            self.stats.nt.dequeue += 1;
            let n = self
                .kernel
                .dequeue(&mut self.entries, Some(Duration::ZERO))?;
            for i in 0..n {
                let entry = self.entries[i];
                if let Some(ev) = self.dispatch(entry) {
                    self.stash_event(ev, &entry);
                }
            }
            if n < self.entries.len() {
                return Ok(());
            }
        }
    }

    /// Wait for events (up to `events.capacity()`), at most `timeout` (`None`: until one arrives;
    /// too large a duration, e.g. `Duration::MAX`, is the same as `None`).
    ///
    /// Before waiting it submits the re-arms and interest changes gathered since the last call
    /// (one NT call per socket at most), then dequeues a batch of packets in one NT call. Stale
    /// packets (previous incarnations) are discarded and counted, never delivered.
    ///
    /// # Errors
    /// `InvalidInput` if `events` has capacity 0; `NotConnected` after shutdown; the kernel's
    /// dequeue error (no packet is lost: they stay queued for the next call).
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// let mut events = Events::with_capacity(64);
    /// reactor.poll(&mut events, Some(Duration::ZERO))?; // nothing ready yet
    /// assert!(events.is_empty());
    /// reactor.kernel().set_readiness(s.0, PollEvents::RECEIVE);
    /// reactor.poll(&mut events, None)?;
    /// assert_eq!(events.iter().next().unwrap().token(), Token(1));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        events.clear();
        if events.capacity() == 0 {
            return Err(err(
                io::ErrorKind::InvalidInput,
                "afd-reactor: poll needs an Events buffer with capacity > 0",
            ));
        }
        self.check_running()?;
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            self.flush_updates();
            while events.room() > 0 {
                let Some(stashed) = self.stash.pop_front() else {
                    break;
                };
                if let Some(ev) = self.unstash(stashed) {
                    deliver(events, ev);
                }
            }
            let now = Instant::now();
            self.fire_timers(events, now);
            let room = events.room();
            if room == 0 {
                return Ok(());
            }
            let wait = if events.is_empty() {
                let until = match (deadline, self.timers.next_deadline()) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                until.map(|u| u.saturating_duration_since(now))
            } else {
                Some(Duration::ZERO)
            };
            let n = room.min(self.entries.len());
            self.stats.nt.dequeue += 1;
            let got = match self.kernel.dequeue(&mut self.entries[..n], wait) {
                Ok(got) => got,
                // Return what this call already collected rather than lose it; the packets stay
                // queued, and a persistent failure shows again on the next call.
                Err(_) if !events.is_empty() => return Ok(()),
                Err(e) => return Err(e),
            };
            for i in 0..got {
                let entry = self.entries[i];
                if let Some(ev) = self.dispatch(entry) {
                    if events.room() > 0 {
                        deliver(events, ev);
                    } else {
                        self.stash_event(ev, &entry);
                    }
                }
            }
            let now = Instant::now();
            self.fire_timers(events, now);
            if !events.is_empty() || !self.stash.is_empty() {
                return Ok(());
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(());
            }
        }
    }

    fn fire_timers(&mut self, events: &mut Events, now: Instant) {
        while events.room() > 0 {
            match self.timers.pop_due(now) {
                Some(token) => events.push(Event::timer(token)),
                None => break,
            }
        }
    }

    /// Tear down (WRL-001 §6): drain what is queued, cancel every pending poll, and drain until no
    /// poll is in flight or the configured bound passes (`Duration::MAX`: no bound). Afterwards
    /// `register`, `reregister`, `deregister`, `poll` and `waker` fail with `NotConnected`, and
    /// wakers stop posting. Called by `Drop` if not called before.
    ///
    /// # Errors
    /// `TimedOut` if polls were still in flight at the bound: the error's source is the
    /// [`Teardown`] report, and their buffers are leaked on purpose (never freed while the kernel
    /// may write them). Also the kernel's dequeue error (buffers then leaked likewise).
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?; // a poll is in flight
    /// let report = reactor.shutdown()?;
    /// assert_eq!((report.cancelled, report.leaked), (1, 0));
    /// assert_eq!(reactor.kernel().pending_polls(), 0); // the kernel holds nothing of ours
    /// # let _ = (PollEvents::NONE, Events::with_capacity(1), Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn shutdown(&mut self) -> io::Result<Teardown> {
        if self.shut_down {
            return Ok(Teardown::default());
        }
        self.shut_down = true;
        for w in &self.wakers {
            w.close();
        }
        let start = Instant::now();
        let mut report = Teardown::default();
        let packets_before = self.stats.packets;
        // 1. What is already queued (e.g. LOCAL_CLOSE of sockets the user closed) first, so no
        //    cancel is issued for a poll that has already ended.
        let result = self.drain_into_stash().and_then(|()| {
            // 2. Cancel the polls still pending; every registration becomes a zombie or is freed.
            //    Newest slot first, with a zero-timeout drain after every CANCEL_BATCH cancels,
            //    so cancelled requests are reaped while we go (Wine keeps a cancelled request
            //    on the process's list until this thread next enters a wait). Measured under
            //    Wine with 10,000 pending polls: 4.3 s before, 3.2 s after; the rest is Wine's
            //    per-completion cost, which closing the sockets pays as much. On Windows the
            //    drains merely start step 3 early.
            self.hinted = 0;
            let mut live: Vec<(u32, u64)> = self
                .by_socket
                .drain_indices()
                .into_iter()
                .map(|i| (i, self.pool.meta(i).map_or(0, |m| m.generation)))
                .collect();
            live.sort_unstable_by(|a, b| b.cmp(a));
            for (k, (index, generation)) in live.into_iter().enumerate() {
                // A drain below may have ended this registration already (e.g. a misrouted
                // packet); the generation tells.
                if self.pool.meta(index).map(|m| m.generation) != Some(generation) {
                    continue;
                }
                if self.end_registration(index) {
                    report.cancelled += 1;
                }
                if (k + 1) % CANCEL_BATCH == 0 {
                    self.drain_into_stash()?;
                }
            }
            // 3. Drain until nothing is in flight, waiting at most until the bound; past it, still
            //    take whatever is already queued (that costs no waiting).
            let bound = start.checked_add(self.config.teardown_timeout);
            while self.stats.in_flight > 0 {
                let wait = bound.map(|b| b.saturating_duration_since(Instant::now()));
                self.stats.nt.dequeue += 1;
                let n = self.kernel.dequeue(&mut self.entries, wait)?;
                for i in 0..n {
                    let _ = self.dispatch(self.entries[i]);
                }
                if n == 0 && wait.is_some_and(|w| w.is_zero()) {
                    break;
                }
            }
            Ok(())
        });
        self.stash.clear();
        report.drained = self.stats.packets - packets_before;
        report.leaked = self.stats.in_flight;
        report.elapsed = start.elapsed();
        if report.leaked > 0 {
            self.pool.leak();
        }
        result?;
        if report.leaked > 0 {
            return Err(io::Error::new(io::ErrorKind::TimedOut, report));
        }
        Ok(report)
    }

    /// Tear down without waiting: leak the buffers of every poll still in the kernel, on purpose,
    /// and return how many (DESIGN-NOTES §2.4: the kernel writes them whenever each poll ends, so
    /// they are never freed). For hard shutdowns; prefer [`shutdown`](Self::shutdown).
    /// # Examples
    /// ```
    /// use afd_reactor::afd::PollEvents;
    /// use afd_reactor::kernel::sim::SimKernel;
    /// use afd_reactor::{Events, Interest, Reactor, SimSocket, Token};
    /// use std::time::Duration;
    /// let mut reactor = Reactor::with_kernel(SimKernel::new(1));
    /// let s = SimSocket(reactor.kernel().open_socket());
    /// reactor.register(&s, Token(1), Interest::READABLE)?;
    /// assert_eq!(reactor.abandon(), 1); // one poll's buffers leaked on purpose
    /// # let _ = (PollEvents::NONE, Events::with_capacity(1), Duration::ZERO);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn abandon(mut self) -> usize {
        self.shut_down = true;
        for w in &self.wakers {
            w.close();
        }
        let leaked = self.stats.in_flight;
        if leaked > 0 {
            self.pool.leak();
        }
        leaked
    }
}

impl<K: Kernel> Drop for Reactor<K> {
    fn drop(&mut self) {
        if !self.shut_down
            && let Err(e) = self.shutdown()
        {
            // Nothing else can be done from Drop; the buffers are leaked, never freed.
            eprintln!("afd-reactor: teardown incomplete: {e}");
        }
        // The one rule the pool's memory depends on, whatever happened before (a panic in the
        // middle of a teardown, a failed dequeue): never free a block the kernel may still write.
        if self.stats.in_flight > 0 {
            self.pool.leak();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SimSocket;
    use crate::kernel::sim::SimKernel;

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
}
