//! The epoll kernel (Linux): the [`Kernel`] contract of an AFD poll and a completion port,
//! emulated on one epoll instance and an eventfd, through the crate's Linux layer (`linux`).
//!
//! # How the contract maps
//! | NT | here |
//! |---|---|
//! | associate a socket with the port | `EPOLL_CTL_ADD`, oneshot and armed for nothing, with data = (watch id, fd) |
//! | `IOCTL_AFD_POLL` | the poll is recorded; the descriptor is armed (`EPOLL_CTL_MOD`, `EPOLLONESHOT`) with the union of its polls' events, unless it already is |
//! | the poll completes | `epoll_wait` reports the descriptor: its block is written, then its packet is queued |
//! | `NtCancelIoFileEx` | the poll is taken out and its `CANCELLED` packet queued: no system call (the descriptor stays armed; if it fires, nothing is waiting and the event is dropped) |
//! | `NtRemoveIoCompletionEx` | packets queued here first, else one `epoll_wait` |
//! | `NtSetIoCompletion` | the wake's ApcContext is queued, and the eventfd written if the queue was empty |
//! | `LOCAL_CLOSE` | see below |
//! | a wait completion packet for a handle (`open_wait`) | the descriptor is duplicated (`fcntl(F_DUPFD_CLOEXEC)`); only the duplicate is used from then on |
//! | `NtAssociateWaitCompletionPacket` (`arm_wait`) | the duplicate is armed for `EPOLLIN`, oneshot (`EPOLL_CTL_ADD` the first time, `EPOLL_CTL_MOD` after), with data = bit 63 + the wait's index |
//! | the wait is satisfied | `epoll_wait` reports the duplicate: the wait's packet (`WAIT_KEY`) is queued, once per arming; **the signal is not consumed** |
//! | `NtCancelWaitCompletionPacket` (`cancel_wait`) | no system call: the wait is marked disarmed (its entry stays armed; if it fires, the event is dropped), or its packet is queued already |
//! | closing the wait packet (`close_wait`) | `EPOLL_CTL_DEL` and `close` of the duplicate |
//!
//! Events map to AFD's: `EPOLLIN` to `RECEIVE` (`ACCEPT` on a listener; armed only for the one it
//! stands for), `EPOLLOUT` to `SEND`, `EPOLLRDHUP` to `DISCONNECT`, `EPOLLPRI` to
//! `RECEIVE_EXPEDITED`. `EPOLLERR` with `EPOLLHUP` (a reset, or a failed connect) is
//! `CONNECT_FAIL` (alone, with an error status for the socket) on a TCP socket that never
//! completed a handshake (`TCP_INFO`: nothing it sent was ever acknowledged), and `ABORT` (alone)
//! otherwise, as
//! AFD reports them; the socket's error itself (`SO_ERROR`) is left for the user's `take_error`.
//! `EPOLLERR` alone (a UDP socket's ICMP error, an error queue) is not a reset: the poll is
//! answered with the readiness it asked for, so the next read or write says what happened.
//! `EPOLLHUP` alone is `DISCONNECT`, except on a stream socket that has not tried to connect yet
//! (Linux reports a hang-up for it): nothing is reported. Only events a poll asked for complete
//! it. Polls that an error or a hang-up does not answer (epoll reports those for as long as they
//! last) wait armed edge-triggered, so they hear of the socket's next change (a connect tried or
//! failing, a reset) without a system call while they wait.
//!
//! # Closed descriptors
//! Linux tells nobody when a descriptor is closed: its epoll entry just goes (unless a `dup` of it
//! keeps the file open, and then the entry stays, reporting under its old data). So the kernel
//! learns of a close when the descriptor number is used again:
//! - `associate` succeeding for a number this kernel watches means a new file got that number:
//!   the old file's polls complete with `LOCAL_CLOSE`, as on Windows when a socket is closed;
//! - arming a number whose file is gone (`ENOENT`: the number names a file this epoll does not
//!   watch; `EBADF`: it names nothing) does the same. A poll issued on the socket itself then
//!   completes at once with `LOCAL_CLOSE` (the registered socket is gone); a helper poll (the
//!   reactor's name for a poll of a socket it did not associate) adds the new file and goes on;
//! - an event carrying an old watch id (a closed file kept open by a `dup`) is dropped: it names
//!   no poll.
//!
//! # Waits
//! A wait ([`Kernel::open_wait`]) is for any descriptor epoll can watch, and is satisfied when
//! epoll reports it readable (or hung up, or in error: whatever it reports completes the wait,
//! which is oneshot): an eventfd while its counter is not zero, a pidfd (`pidfd_open`) once its
//! process has exited, a timerfd once it expired, a pipe's read end with data or no writer left.
//! Epoll refuses regular files and directories (`EPERM`): `arm_wait` fails with `InvalidInput`.
//!
//! **On Linux a wait never consumes the signal**, unlike a wait on an auto-reset event or a
//! semaphore on Windows: the eventfd's counter stays, and the user reads it (or a wait armed again
//! reports it again at once: the signal is a level). So `cancel_wait` never answers
//! [`WaitCancel::Consumed`]: a cancelled wait consumed nothing.
//!
//! The kernel keeps its own duplicate of the descriptor (the user may close theirs, and its number
//! may be reused) and watches that, under its own number; the duplicate is removed from the epoll
//! instance (`EPOLL_CTL_DEL`) before it is closed, since a user's descriptor for the same open
//! file would otherwise keep its entry alive. A duplicate's number was free, so if the kernel
//! watched that number for a socket, the socket is gone: its polls end with `LOCAL_CLOSE` (as when
//! `associate` reuses a number), and a later poll on the number is refused (`EPOLL_CTL_ADD` says
//! `EEXIST`), never armed over the wait's entry.
//!
//! A wait's epoll data is `WAIT_DATA` (bit 63) with the wait's index in the low 32 bits; a
//! watch's is `(watch id << 32) | fd` with watch ids kept below 2^31, and the eventfd's is
//! `u64::MAX` (bits 32 to 62 set, which a wait's never has): the three cannot collide.

use super::slab::WaitSlab;
use super::{
    HELPER_KEY, Kernel, PollBlock, PollVia, Post, RawSock, RawWaitable, Submitted, WAIT_KEY,
    WAKE_KEY, WaitCancel, WaitId,
};
use crate::afd::{CompletionEntry, IoStatusBlock, NtStatus, PollEvents};
use crate::linux::{self, Epoll, EpollEvent, EventFd};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The epoll data of the eventfd.
const WAKE_DATA: u64 = u64::MAX;

/// The bit set in the epoll data of a wait's duplicate descriptor (with the wait's index in the low
/// 32 bits), and in no watch's data (watch ids stay below 2^31, [`WATCH_IDS`]). [`WAKE_DATA`] has it
/// too, but a wait's data never has bits 32 to 62, so the two differ.
const WAIT_DATA: u64 = 1 << 63;

/// The watch ids used (the high half of a watch's epoll data): 31 bits, so that a watch's data
/// never has [`WAIT_DATA`].
const WATCH_IDS: u32 = u32::MAX >> 1;

/// The per-socket status of a poll that reports `CONNECT_FAIL`
/// (`STATUS_CONNECTION_REFUSED`): the reactor reads a failed connect from it.
const CONNECTION_REFUSED: NtStatus = NtStatus(0xC000_0236_u32 as i32);

/// Most epoll events taken per `epoll_wait`.
const WAIT_BATCH: usize = 1024;

/// System calls the epoll kernel made, by kind (wakes by posters are counted apart, since they
/// are made on other threads).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Syscalls {
    /// `epoll_wait` calls.
    pub wait: u64,
    /// `EPOLL_CTL_ADD` calls (associating a socket, a helper poll of a new file, a wait's first
    /// arming).
    pub add: u64,
    /// `EPOLL_CTL_MOD` calls (arming a descriptor for a poll, arming a wait again).
    pub modify: u64,
    /// `EPOLL_CTL_DEL` calls (closing a wait that was ever armed).
    pub delete: u64,
    /// Duplications of a descriptor (`fcntl(F_DUPFD_CLOEXEC)`, one per `open_wait`).
    pub dup: u64,
    /// Closes of a duplicate (one per `close_wait`).
    pub close: u64,
    /// Probes of a descriptor with `getsockopt(TCP_INFO)`: is it a listener (once per watched
    /// file, at its first readability), did it ever connect (at an error).
    pub probe: u64,
    /// Reads of the eventfd (one per batch of wakes dequeued).
    pub wake_read: u64,
    /// Writes to the eventfd by posters (one per wake that found the wake queue empty).
    pub wake_write: u64,
}

impl Syscalls {
    /// All system calls together.
    pub fn total(&self) -> u64 {
        self.wait
            + self.add
            + self.modify
            + self.delete
            + self.dup
            + self.close
            + self.probe
            + self.wake_read
            + self.wake_write
    }
}

/// One poll the kernel holds.
#[derive(Debug)]
struct Pending {
    block: NonNull<PollBlock>,
    apc_context: usize,
    /// The key its packet carries: the association key, or [`HELPER_KEY`].
    key: usize,
    /// The AFD events it asked for.
    mask: PollEvents,
}

impl Watch {
    /// Record a poll. A watch holds one poll at a time in all but rare cases (a poll of a new
    /// file on a number whose old polls are still being ended), so room is made for exactly one
    /// at first: `Vec`'s usual first growth, to four, would quadruple the heap per registration.
    fn push(&mut self, pending: Pending) {
        if self.polls.capacity() == 0 {
            self.polls.reserve_exact(1);
        }
        self.polls.push(pending);
    }
}

/// A descriptor number this kernel watches, and the file it watched under that number.
#[derive(Debug)]
struct Watch {
    /// Distinguishes this file from earlier ones under the same number (the high half of the
    /// epoll data).
    id: u32,
    /// The key given to `associate`, if the file was associated (socket-direct polls report it).
    key: Option<usize>,
    polls: Vec<Pending>,
    /// A listening socket (readability is `ACCEPT`): asked of `TCP_INFO` at the first
    /// readability, not before (a registration that never becomes readable costs no probe).
    listener: Option<bool>,
    /// A hang-up of this file means the peer is gone (`DISCONNECT`): known once a probe found
    /// it is not a stream socket that never tried to connect, which it cannot become again; until
    /// then each hang-up is probed.
    hup_is_disconnect: bool,
    /// Armed edge-triggered (`EPOLLET`, not oneshot): the polls wait while a condition epoll
    /// reports for as long as it lasts (an error, a hang-up) answers none of them, and hear of
    /// the socket's next change. See `on_event`.
    quiet: bool,
}

/// Where a wait is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitState {
    /// Not armed: never armed, cancelled, or its packet dequeued.
    Idle,
    /// Armed with this ApcContext: the next epoll event for it queues its packet.
    Armed(usize),
    /// Its packet was queued, at this position in the ready queue's whole history (see
    /// `EpollKernel::ready_taken`): still there while the position is not yet taken; dequeued, and
    /// the wait idle, once it is.
    Reported(u64),
}

/// One wait the kernel keeps ([`Kernel::open_wait`]).
#[derive(Debug)]
struct Wait {
    /// The kernel's own duplicate of the user's descriptor.
    fd: OwnedFd,
    /// In the epoll set (added at the first arming, deleted at close).
    added: bool,
    state: WaitState,
}

/// What posters share with the kernel: the wakes not yet dequeued, and the eventfd.
#[derive(Debug)]
struct Wakes {
    eventfd: EventFd,
    queue: Mutex<Vec<usize>>,
    writes: AtomicU64,
}

/// Posts wake packets to an [`EpollKernel`] from any thread.
#[derive(Debug, Clone)]
pub struct EpollPoster(Arc<Wakes>);

impl Post for EpollPoster {
    fn post_wake(&self, apc_context: usize) -> io::Result<()> {
        let wakes = &self.0;
        let mut queue = wakes.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.push(apc_context);
        if queue.len() == 1 {
            // The queue was empty: the eventfd is (or is about to be) reset; signal it. Under the
            // lock, so the kernel's reset-then-drain cannot slip between the push and the write.
            wakes.writes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = wakes.eventfd.signal() {
                queue.pop();
                return Err(e);
            }
        }
        Ok(())
    }
}

/// The epoll kernel: one epoll instance, one eventfd for wakes.
///
/// Made by [`EpollReactor::new`](crate::EpollReactor); make it yourself only to count its system
/// calls ([`EpollKernel::syscalls`]).
#[derive(Debug)]
pub struct EpollKernel {
    epoll: Epoll,
    wakes: Arc<Wakes>,
    watches: HashMap<RawFd, Watch>,
    next_id: u32,
    /// Packets made without `epoll_wait` (cancels, closes, completions beyond the caller's room).
    ready: VecDeque<CompletionEntry>,
    events: Vec<EpollEvent>,
    calls: Syscalls,
    /// Epoll events that named an earlier file under a number (kept open by a `dup`), dropped.
    stale: u64,
    /// The waits, by [`WaitId`].
    waits: WaitSlab<Wait>,
    /// Packets taken from `ready` so far: a packet pushed when `ready_taken + ready.len()` was `n`
    /// is dequeued once `ready_taken > n`.
    ready_taken: u64,
    /// Epoll events for a wait that was not armed (cancelled), dropped.
    unarmed_wait_events: u64,
}

// SAFETY: the raw pointers in `watches` name poll blocks in the reactor's pool; the kernel writes
// them only while completing a poll, from whichever thread owns the kernel (it is not `Sync`), so
// moving the kernel (with its reactor) to another thread moves that duty with it. The rest of its
// state is owned (`Wakes` is shared only through the thread-safe poster).
unsafe impl Send for EpollKernel {}

/// A watch's epoll data: its id (below 2^31, so bit 63 is clear: not [`WAIT_DATA`]) and its
/// descriptor number.
fn data(id: u32, fd: RawFd) -> u64 {
    debug_assert!(id <= WATCH_IDS);
    (u64::from(id) << 32) | u64::from(fd as u32)
}

/// The epoll events to arm for polls asking for `mask` on a file that is a `listener` (`None`:
/// not known yet). Errors and hang-ups are always reported by epoll; `EPOLLERR` is named so that
/// an entry armed for them alone is enabled. `EPOLLIN` is armed only for the AFD event it will
/// stand for (`ACCEPT` on a listener, `RECEIVE` otherwise): armed for the other one, it would
/// report a readiness no poll wants, and fire again at once when re-armed.
fn epoll_events(mask: PollEvents, listener: Option<bool>) -> u32 {
    let mut events = (linux::EPOLLERR | linux::EPOLLONESHOT) as u32;
    let readable = match listener {
        Some(true) => PollEvents::ACCEPT,
        Some(false) => PollEvents::RECEIVE,
        None => PollEvents::RECEIVE | PollEvents::ACCEPT,
    };
    if mask.intersects(readable) {
        events |= linux::EPOLLIN as u32;
    }
    if mask.intersects(PollEvents::SEND) {
        events |= linux::EPOLLOUT as u32;
    }
    if mask.intersects(PollEvents::DISCONNECT) {
        events |= linux::EPOLLRDHUP as u32;
    }
    if mask.intersects(PollEvents::RECEIVE_EXPEDITED) {
        events |= linux::EPOLLPRI as u32;
    }
    events
}

/// What epoll's `events` for one file stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    /// The AFD events.
    afd: PollEvents,
    /// A condition epoll reports for as long as it lasts, whatever is armed (an error, a
    /// hang-up): re-arming would only report it again.
    lasting: bool,
    /// A hang-up of a TCP socket that has not tried to connect yet (Linux reports one for every
    /// socket in `TCP_CLOSE`): nothing to report, until it connects.
    unconnected: bool,
}

/// Read epoll's `events` for a file, asking `probe` (its `TCP_INFO`, `None` for anything but a
/// TCP socket) only when the answer depends on it: whether it is a `listener` (once, at its first
/// readability), and after an error or a hang-up; and `unconnected_stream` (is it a stream
/// socket, not TCP, never connected?) at a hang-up until `hup_is_disconnect` is known.
fn read_events(
    events: u32,
    listener: &mut Option<bool>,
    hup_is_disconnect: &mut bool,
    probe: &mut dyn FnMut() -> Option<linux::TcpInfo>,
    unconnected_stream: &mut dyn FnMut() -> bool,
) -> Reading {
    let has = |bit: libc::c_int| events & bit as u32 != 0;
    let (err, hup) = (has(linux::EPOLLERR), has(linux::EPOLLHUP));
    let mut reading = Reading {
        afd: PollEvents::NONE,
        lasting: err || hup,
        unconnected: false,
    };
    if err && hup {
        // A reset or a failed connect (Linux sets both): AFD reports either alone.
        let never_connected = probe().is_some_and(|i| i.never_connected());
        reading.afd = if never_connected {
            PollEvents::CONNECT_FAIL
        } else {
            PollEvents::ABORT
        };
        return reading;
    }
    // A hang-up alone of a stream socket that never connected has no peer behind it: Linux
    // reports one for every such socket. A TCP socket's connect wakes it (the SYN-ACK, or the
    // refusal): its polls wait quiet until then. A Unix socket's connect does not wake it, so
    // its readiness (writable) is still reported, only not as a peer's close.
    let mut hup_means_disconnect = hup;
    if hup && !err && !*hup_is_disconnect {
        match probe() {
            Some(tcp) if tcp.never_tried() => {
                reading.unconnected = true;
                return reading;
            }
            Some(_) => *hup_is_disconnect = true,
            None if unconnected_stream() => hup_means_disconnect = false,
            None => *hup_is_disconnect = true,
        }
    }
    if has(linux::EPOLLIN) {
        let is_listener =
            *listener.get_or_insert_with(|| probe().is_some_and(|i| i.state == linux::TCP_LISTEN));
        reading.afd |= if is_listener {
            PollEvents::ACCEPT
        } else {
            PollEvents::RECEIVE
        };
    }
    if has(linux::EPOLLOUT) {
        reading.afd |= PollEvents::SEND;
    }
    if has(linux::EPOLLRDHUP) || hup_means_disconnect {
        reading.afd |= PollEvents::DISCONNECT;
    }
    if has(linux::EPOLLPRI) {
        reading.afd |= PollEvents::RECEIVE_EXPEDITED;
    }
    if err {
        // An error alone (a UDP socket's ICMP error, a TCP error queue): not a reset. The socket
        // may be fine; its next read or write (or `take_error`) says what happened, so it is
        // reported as ready for whatever was asked (readable as what it stands for on this
        // file: AFD never reports ACCEPT but on a listener).
        let is_listener =
            *listener.get_or_insert_with(|| probe().is_some_and(|i| i.state == linux::TCP_LISTEN));
        let readable = if is_listener {
            PollEvents::ACCEPT
        } else {
            PollEvents::RECEIVE
        };
        reading.afd |= readable | PollEvents::SEND | PollEvents::RECEIVE_EXPEDITED;
    }
    reading
}

/// Write a finished poll's result into its block and make its packet.
///
/// # Safety
/// `pending` must be a poll this kernel held until now (taken out of its watch): its block is
/// valid for writes and untouched by the reactor until the packet is dequeued.
unsafe fn finish(pending: &Pending, status: NtStatus, reported: PollEvents) -> CompletionEntry {
    let p = pending.block.as_ptr();
    // SAFETY: forwarded contract; the writes go through the raw pointer and create no reference.
    unsafe {
        if reported.is_empty() {
            (*p).info.number_of_handles = 0;
        } else {
            (*p).info.number_of_handles = 1;
            (*p).info.handles[0].events = reported;
            (*p).info.handles[0].status = if reported.contains(PollEvents::CONNECT_FAIL) {
                CONNECTION_REFUSED
            } else {
                NtStatus::SUCCESS
            };
        }
        (&raw mut (*p).iosb).write(IoStatusBlock {
            status_or_pointer: status.0 as isize,
            information: 0,
        });
    }
    CompletionEntry {
        key: pending.key,
        apc_context: pending.apc_context,
        io_status: IoStatusBlock {
            status_or_pointer: status.0 as isize,
            information: 0,
        },
    }
}

impl EpollKernel {
    /// A kernel with a fresh epoll instance and eventfd.
    ///
    /// # Errors
    /// The epoll instance or the eventfd could not be created (out of descriptors).
    pub fn new() -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let eventfd = EventFd::new()?;
        epoll.add(eventfd.raw(), linux::EPOLLIN as u32, WAKE_DATA)?;
        Ok(Self {
            epoll,
            wakes: Arc::new(Wakes {
                eventfd,
                queue: Mutex::new(Vec::new()),
                writes: AtomicU64::new(0),
            }),
            watches: HashMap::new(),
            next_id: 0,
            ready: VecDeque::new(),
            events: vec![EpollEvent { events: 0, u64: 0 }; WAIT_BATCH],
            calls: Syscalls::default(),
            stale: 0,
            waits: WaitSlab::default(),
            ready_taken: 0,
            unarmed_wait_events: 0,
        })
    }

    /// Epoll events dropped because they named an earlier file under a descriptor number (a
    /// closed descriptor whose file a `dup` kept open, and so in the epoll set).
    pub fn stale_events(&self) -> u64 {
        self.stale
    }

    /// Epoll events dropped because they named a wait that was not armed: one cancelled while its
    /// entry stayed armed (`cancel_wait` makes no system call), whose object was signaled later.
    pub fn unarmed_wait_events(&self) -> u64 {
        self.unarmed_wait_events
    }

    /// The system calls made so far, by kind.
    pub fn syscalls(&self) -> Syscalls {
        Syscalls {
            wake_write: self.wakes.writes.load(Ordering::Relaxed),
            ..self.calls
        }
    }

    fn new_watch(&mut self, key: Option<usize>) -> Watch {
        self.next_id = self.next_id.wrapping_add(1) & WATCH_IDS;
        Watch {
            id: self.next_id,
            key,
            polls: Vec::new(),
            listener: None,
            hup_is_disconnect: false,
            quiet: false,
        }
    }

    /// `watch`'s file is gone (closed): its polls complete with `LOCAL_CLOSE`.
    fn closed(&mut self, watch: Watch) {
        for pending in &watch.polls {
            // SAFETY: each poll was held by this kernel until now; the watch is dropped after.
            let entry = unsafe { finish(pending, NtStatus::SUCCESS, PollEvents::LOCAL_CLOSE) };
            self.ready.push_back(entry);
        }
    }

    /// Add `fd`'s current file to the epoll instance under a new watch, armed for `mask` (`None`:
    /// for nothing; oneshot, since Linux adds `EPOLLERR | EPOLLHUP` to every entry: at most one
    /// report, which no poll waits for, and the entry is disabled); an earlier watch of the
    /// number is closed.
    fn add(&mut self, fd: RawFd, key: Option<usize>, mask: Option<PollEvents>) -> io::Result<()> {
        let watch = self.new_watch(key);
        let events = mask.map_or(linux::EPOLLONESHOT as u32, |m| epoll_events(m, None));
        self.calls.add += 1;
        self.epoll.add(fd, events, data(watch.id, fd))?;
        if let Some(old) = self.watches.insert(fd, watch) {
            self.closed(old);
        }
        Ok(())
    }

    /// Arm `fd`'s entry for the union of its polls' events: oneshot, or with `quiet`
    /// edge-triggered (see `Watch::quiet`). Always a system call, even if the entry looks armed
    /// already: it is how the kernel learns that the number names another file now (`ENOENT`)
    /// or none (`EBADF`).
    fn arm_as(&mut self, fd: RawFd, quiet: bool) -> io::Result<()> {
        let watch = self.watches.get_mut(&fd).expect("armed after recording");
        let mask = watch
            .polls
            .iter()
            .fold(PollEvents::NONE, |m, p| m.union(p.mask));
        let mut events = epoll_events(mask, watch.listener);
        if quiet {
            events = (events & !(linux::EPOLLONESHOT as u32)) | linux::EPOLLET as u32;
        }
        self.calls.modify += 1;
        watch.quiet = quiet;
        self.epoll.modify(fd, events, data(watch.id, fd))
    }

    /// Arm `fd`'s entry, oneshot, for its polls.
    fn arm(&mut self, fd: RawFd) -> io::Result<()> {
        self.arm_as(fd, false)
    }

    /// One epoll event: complete the polls it answers.
    fn on_event(&mut self, event: EpollEvent) {
        let (id, fd) = ((event.u64 >> 32) as u32, event.u64 as u32 as RawFd);
        let Some(watch) = self.watches.get_mut(&fd).filter(|w| w.id == id) else {
            // An earlier file under this number, kept open by a `dup`: nothing waits on it.
            self.stale += 1;
            return;
        };
        let mut probes = 0;
        let mut info = None;
        let mut probe = || {
            *info.get_or_insert_with(|| {
                probes += 1;
                linux::tcp_info(fd)
            })
        };
        let mut stream_probes = 0;
        let mut unconnected_stream = || {
            let (unconnected, calls) = linux::unconnected_stream(fd);
            stream_probes += calls;
            unconnected
        };
        let reading = read_events(
            event.events,
            &mut watch.listener,
            &mut watch.hup_is_disconnect,
            &mut probe,
            &mut unconnected_stream,
        );
        self.calls.probe += probes + stream_probes;
        let mut answered = false;
        let mut i = 0;
        while i < watch.polls.len() {
            let got = reading.afd.intersection(watch.polls[i].mask);
            if got.is_empty() {
                i += 1;
                continue;
            }
            answered = true;
            let pending = watch.polls.swap_remove(i);
            // SAFETY: the poll was held by this kernel until `swap_remove` just now.
            let entry = unsafe { finish(&pending, NtStatus::SUCCESS, got) };
            self.ready.push_back(entry);
        }
        if watch.polls.is_empty() {
            if watch.quiet {
                // No poll waits on an edge-triggered entry any more: disarm it (oneshot, armed
                // for nothing), or each change of the socket would wake the wait for nobody.
                watch.quiet = false;
                self.calls.modify += 1;
                let (events, data) = (linux::EPOLLONESHOT as u32, data(watch.id, fd));
                if self.epoll.modify(fd, events, data).is_err() {
                    self.gone(fd);
                }
            }
            return;
        }
        let quiet = reading.lasting || reading.unconnected;
        if quiet && watch.quiet && !answered {
            // Already edge-triggered for these polls: they wait for the socket's next change.
            return;
        }
        // Polls this event did not answer wait on. After a condition epoll reports for as long
        // as it lasts (an error, a hang-up), a oneshot re-arm would report it again at once, for
        // ever: re-arm edge-triggered (for the polls left), which reports it once more (ignored,
        // being quiet now) and then only the socket's next change (a connect tried or failing, a
        // reset, data).
        if self.arm_as(fd, quiet).is_err() {
            self.gone(fd);
        }
    }

    /// `fd`'s watched file is gone: close its watch.
    fn gone(&mut self, fd: RawFd) {
        if let Some(watch) = self.watches.remove(&fd) {
            self.closed(watch);
        }
    }

    /// Where the open wait `id` is now (a reported wait whose packet was dequeued is idle), or a
    /// panic (a bug in the caller).
    #[track_caller]
    fn wait_state(&mut self, id: WaitId) -> WaitState {
        let taken = self.ready_taken;
        let wait = self.waits.get_mut(id);
        if matches!(wait.state, WaitState::Reported(at) if at < taken) {
            wait.state = WaitState::Idle;
        }
        wait.state
    }

    /// An epoll event for wait number `index`: its packet, if it is armed; dropped otherwise.
    fn on_wait_event(&mut self, index: u32) {
        let at = self.ready_taken + self.ready.len() as u64;
        let Some(wait) = self.waits.slot_mut(index) else {
            // Not possible (a wait's entry is deleted before its slot is freed); dropped anyway.
            self.unarmed_wait_events += 1;
            return;
        };
        let WaitState::Armed(apc_context) = wait.state else {
            // Cancelled while its entry stayed armed.
            self.unarmed_wait_events += 1;
            return;
        };
        wait.state = WaitState::Reported(at);
        self.ready.push_back(CompletionEntry {
            key: WAIT_KEY,
            apc_context,
            io_status: IoStatusBlock {
                status_or_pointer: 0,
                information: 0,
            },
        });
    }

    /// Dequeue the wakes posted so far.
    fn on_wake(&mut self) {
        self.calls.wake_read += 1;
        self.wakes.eventfd.reset();
        let posted = std::mem::take(
            &mut *self
                .wakes
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for apc_context in posted {
            self.ready.push_back(CompletionEntry {
                key: WAKE_KEY,
                apc_context,
                io_status: IoStatusBlock {
                    status_or_pointer: 0,
                    information: 0,
                },
            });
        }
    }

    fn take_ready(&mut self, out: &mut [CompletionEntry]) -> usize {
        let n = out.len().min(self.ready.len());
        for (slot, entry) in out.iter_mut().zip(self.ready.drain(..n)) {
            *slot = entry;
        }
        self.ready_taken += n as u64;
        n
    }
}

fn status_of(e: &io::Error) -> NtStatus {
    match e.raw_os_error() {
        Some(libc::EBADF) => NtStatus::INVALID_HANDLE,
        Some(libc::ENOMEM) | Some(libc::ENOSPC) => NtStatus::INSUFFICIENT_RESOURCES,
        _ => NtStatus::INVALID_PARAMETER,
    }
}

// SAFETY: every packet `dequeue` returns is made here: a poll's packet only when the poll is taken
// out of its watch (completed by an epoll event, cancelled, or closed), after its block was
// written, once per poll `submit_poll` answered `Queued` (a poll answered `Completed` or `Refused`
// is never recorded); wake packets, key `WAKE_KEY`, carry only what `EpollPoster` queued. Blocks
// are written only by `finish`, for polls held until then. A wait's packet (`WAIT_KEY`, the
// arming's ApcContext) is made only by `on_wait_event`, for a wait `Armed` until then, which it
// leaves `Reported`: once per arming; `cancel_wait` answers `NotSignaled` only for a wait still
// `Armed`, which it leaves `Idle` (no packet after); epoll data with `WAIT_DATA` is only a wait's
// (watch ids stay below 2^31). A wait names no memory of the reactor's. No other code reaches the
// epoll instance.
unsafe impl Kernel for EpollKernel {
    type Poster = EpollPoster;

    // epoll reports an eventfd, a pidfd or a pipe readable without taking anything from it.
    const WAITS_CONSUME: bool = false;

    /// There are no layered providers on Linux: the base is the descriptor itself. It is not
    /// probed here, even with `verify`: the next call proves it (`associate`'s `EPOLL_CTL_ADD`
    /// refuses a closed descriptor or a file epoll cannot poll, and so does a helper poll's).
    fn base_socket(&mut self, socket: RawSock, _verify: bool) -> io::Result<RawSock> {
        match RawFd::try_from(socket) {
            Ok(fd) if fd >= 0 => Ok(socket),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "afd-reactor: not a socket: not a file descriptor",
            )),
        }
    }

    fn associate(&mut self, socket: RawSock, key: usize) -> io::Result<()> {
        let fd = socket as RawFd;
        match self.add(fd, Some(key), None) {
            Ok(()) => Ok(()),
            Err(e) => Err(match e.raw_os_error() {
                Some(libc::EEXIST) => io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    "afd-reactor: this descriptor's file is already associated",
                ),
                Some(libc::EPERM) => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "afd-reactor: not a socket, nor any file epoll can poll (it refuses regular \
                     files and directories)",
                ),
                Some(libc::EBADF) => io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "afd-reactor: not a socket: not an open file descriptor",
                ),
                _ => e,
            }),
        }
    }

    unsafe fn submit_poll(
        &mut self,
        via: PollVia,
        socket: RawSock,
        block: NonNull<PollBlock>,
        apc_context: usize,
    ) -> Submitted {
        // SAFETY: the block is valid for reads (the caller's contract); read it into a copy.
        let info = unsafe { (&raw const (*block.as_ptr()).info).read() };
        let mask = info.handles[0].events;
        let fd = socket as RawFd;
        let key = match via {
            PollVia::Helper(_) => HELPER_KEY,
            PollVia::Socket => match self.watches.get(&fd).and_then(|w| w.key) {
                Some(key) => key,
                None => return Submitted::Refused(NtStatus::INVALID_PARAMETER),
            },
        };
        let pending = Pending {
            block,
            apc_context,
            key,
            mask,
        };
        if via != PollVia::Socket && !self.watches.contains_key(&fd) {
            // A helper poll of a file not yet watched: add it, armed.
            if let Err(e) = self.add(fd, None, Some(mask)) {
                return Submitted::Refused(status_of(&e));
            }
            self.watches.get_mut(&fd).expect("added").push(pending);
            return Submitted::Queued;
        }
        self.watches
            .get_mut(&fd)
            .expect("checked above")
            .push(pending);
        let Err(e) = self.arm(fd) else {
            return Submitted::Queued;
        };
        // The watched file is gone. Take this poll back out; the others complete with
        // LOCAL_CLOSE, as on Windows when a socket is closed.
        let mut watch = self.watches.remove(&fd).expect("watched");
        let mine = watch.polls.pop().expect("pushed above");
        self.closed(watch);
        match via {
            PollVia::Socket => {
                // The registered socket is gone: its poll completes at once with LOCAL_CLOSE.
                // SAFETY: the poll was never recorded as queued; its block is ours to write.
                let _ = unsafe { finish(&mine, NtStatus::SUCCESS, PollEvents::LOCAL_CLOSE) };
                Submitted::Completed
            }
            PollVia::Helper(_) if e.raw_os_error() == Some(libc::ENOENT) => {
                // The number names a new file: watch it instead.
                if let Err(e) = self.add(fd, None, Some(mask)) {
                    return Submitted::Refused(status_of(&e));
                }
                self.watches.get_mut(&fd).expect("added").push(mine);
                Submitted::Queued
            }
            PollVia::Helper(_) => Submitted::Refused(status_of(&e)),
        }
    }

    fn cancel(&mut self, _via: PollVia, socket: RawSock, block: NonNull<PollBlock>) -> NtStatus {
        let Some(watch) = self.watches.get_mut(&(socket as RawFd)) else {
            return NtStatus::NOT_FOUND;
        };
        let Some(i) = watch.polls.iter().position(|p| p.block == block) else {
            return NtStatus::NOT_FOUND;
        };
        let pending = watch.polls.swap_remove(i);
        // The entry stays armed: if it fires, no poll waits and the event is dropped. Disarming
        // would cost a system call per cancel.
        // SAFETY: the poll was held by this kernel until `swap_remove` just now.
        let entry = unsafe { finish(&pending, NtStatus::CANCELLED, PollEvents::NONE) };
        self.ready.push_back(entry);
        NtStatus::SUCCESS
    }

    fn dequeue(
        &mut self,
        out: &mut [CompletionEntry],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        if !self.ready.is_empty() || out.is_empty() {
            return Ok(self.take_ready(out));
        }
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            let wait = match deadline {
                None if timeout.is_none() => None,
                None => Some(Duration::MAX),
                Some(d) => Some(d.saturating_duration_since(Instant::now())),
            };
            let room = out.len().min(WAIT_BATCH);
            let mut events = std::mem::take(&mut self.events);
            self.calls.wait += 1;
            let n = match self.epoll.wait(&mut events[..room], wait) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
                Err(e) => {
                    self.events = events;
                    return Err(e);
                }
            };
            for &event in &events[..n] {
                if event.u64 == WAKE_DATA {
                    self.on_wake();
                } else if event.u64 & WAIT_DATA != 0 {
                    self.on_wait_event(event.u64 as u32);
                } else {
                    self.on_event(event);
                }
            }
            self.events = events;
            let taken = self.take_ready(out);
            let timed_out = deadline.is_some_and(|d| Instant::now() >= d);
            if taken > 0 || timed_out {
                return Ok(taken);
            }
        }
    }

    fn poster(&self) -> EpollPoster {
        EpollPoster(Arc::clone(&self.wakes))
    }

    /// Duplicates the descriptor (one system call); nothing is added to the epoll set yet, so a
    /// file epoll cannot watch is found only by `arm_wait`.
    fn open_wait(&mut self, handle: RawWaitable) -> io::Result<WaitId> {
        let invalid = || {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "afd-reactor: cannot wait: not an open file descriptor",
            )
        };
        let fd = match RawFd::try_from(handle as i64) {
            Ok(fd) if fd >= 0 => fd,
            _ => return Err(invalid()),
        };
        self.calls.dup += 1;
        let dup = linux::dup_cloexec(fd).map_err(|e| match e.raw_os_error() {
            Some(libc::EBADF) => invalid(),
            _ => e,
        })?;
        // The duplicate's number was free: a socket this kernel watched under it is gone. End its
        // polls now (as `associate` on a reused number does), so no poll is ever armed on the
        // number while the wait holds it.
        self.gone(dup.as_raw_fd());
        let wait = Wait {
            fd: dup,
            added: false,
            state: WaitState::Idle,
        };
        self.waits.insert(wait)
    }

    /// One system call: `EPOLL_CTL_ADD` the first time, `EPOLL_CTL_MOD` after (oneshot, for
    /// `EPOLLIN`). A descriptor readable now is reported by the next `epoll_wait`.
    fn arm_wait(&mut self, id: WaitId, apc_context: usize) -> io::Result<()> {
        let state = self.wait_state(id);
        assert!(
            state == WaitState::Idle,
            "afd-reactor bug: arming {id:?}, which is armed or has a packet to come ({state:?})"
        );
        let events = (linux::EPOLLIN | linux::EPOLLONESHOT) as u32;
        let data = WAIT_DATA | u64::from(id.0);
        let wait = self.waits.get_mut(id);
        let fd = wait.fd.as_raw_fd();
        if wait.added {
            self.calls.modify += 1;
            self.epoll.modify(fd, events, data)?;
        } else {
            self.calls.add += 1;
            match self.epoll.add(fd, events, data) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    // The same open file under the same number is in the set already: a watch's
                    // entry, left by a closed descriptor whose file another kept open (its watch
                    // ended in `open_wait`). Take the entry over.
                    self.calls.modify += 1;
                    self.epoll.modify(fd, events, data)?;
                }
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "afd-reactor: cannot wait on this file: epoll cannot watch it (it refuses \
                         regular files and directories)",
                    ));
                }
                Err(e) => return Err(e),
            }
            wait.added = true;
        }
        wait.state = WaitState::Armed(apc_context);
        Ok(())
    }

    /// No system call. An armed wait is marked idle and its entry left armed: if the object is
    /// signaled later, the event is dropped (`unarmed_wait_events`), as the kernel does for
    /// cancelled polls; disarming it (`EPOLL_CTL_MOD` to no events) would cost a call per cancel,
    /// and the next arming re-arms the entry anyway. Never [`WaitCancel::Consumed`]: a wait
    /// consumes nothing on Linux.
    fn cancel_wait(&mut self, id: WaitId) -> WaitCancel {
        let state = self.wait_state(id);
        let wait = self.waits.get_mut(id);
        match state {
            WaitState::Armed(_) => {
                wait.state = WaitState::Idle;
                WaitCancel::NotSignaled
            }
            WaitState::Reported(_) => WaitCancel::Queued,
            WaitState::Idle => panic!("afd-reactor bug: cancelling {id:?}, which is not armed"),
        }
    }

    /// `EPOLL_CTL_DEL` (if the wait was ever armed), then `close` of the duplicate: after a
    /// `close` alone, a user's descriptor for the same open file would keep the entry alive.
    fn close_wait(&mut self, id: WaitId) {
        let state = self.wait_state(id);
        assert!(
            state == WaitState::Idle,
            "afd-reactor bug: closing {id:?}, whose packet may still come ({state:?})"
        );
        let wait = self.waits.remove(id);
        if wait.added {
            self.calls.delete += 1;
            // Cannot fail: the duplicate is open and in the set, under this number.
            let deleted = self.epoll.delete(wait.fd.as_raw_fd());
            debug_assert!(deleted.is_ok(), "EPOLL_CTL_DEL of a wait: {deleted:?}");
        }
        self.calls.close += 1;
        drop(wait.fd);
    }
}
