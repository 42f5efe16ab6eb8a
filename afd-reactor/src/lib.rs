//! # afd-reactor
//!
//! A readiness event loop for Windows sockets, in the style of mio's `Poll`: register sockets
//! with a [`Token`] and an [`Interest`], call [`Reactor::poll`], and get back [`Event`]s that say
//! which sockets can be read or written, which timers fired, and which [`Waker`]s were woken.
//! It runs on one thread and talks to the Windows kernel directly (one `IOCTL_AFD_POLL` per
//! socket, an I/O completion port as the event queue), with no helper threads.
//!
//! ## What it promises
//! - **No stale event.** After [`deregister`](Reactor::deregister), no event ever arrives for
//!   that registration, not even when Windows hands its handle value to a new socket. Every
//!   request the reactor sends the kernel is tagged with the registration it belongs to, and
//!   anything that comes back untagged or out of date is dropped.
//! - **No memory freed while the kernel holds it.** A socket's poll buffer stays allocated until
//!   the kernel says it is done with it, even after `deregister` (the registration is then a
//!   *zombie*, counted in [`Stats`]). If the kernel never answers, the buffer is leaked, never
//!   freed.
//! - **Teardown drains.** [`shutdown`](Reactor::shutdown) (or dropping the reactor) cancels
//!   every pending poll and waits for the kernel to hand each buffer back, within a bound
//!   ([`Config::teardown_timeout`], 5 s), and reports what is left.
//! - **Few kernel calls.** One poll submission per event per socket, dequeues in batches
//!   of up to 256 packets, and one call for a `poll` that waits, however long it waits.
//!   [`Stats::nt`] counts every call by kind.
//! - **Safe to use.** No `unsafe` is needed to use it, and it is built so that nothing safe code
//!   can do (closing a socket while it is registered, say) causes undefined behaviour.
//!
//! ## A complete program
//! An echo server with a client on another thread; the client stops the server through a
//! [`Waker`] when it is done.
//! ```
//! # #[cfg(any(windows, target_os = "linux"))] mod program {
//! use afd_reactor::{Events, Interest, Reactor, Token};
//! use std::collections::HashMap;
//! use std::io::{self, Read, Write};
//! use std::net::{TcpListener, TcpStream};
//!
//! const LISTENER: Token = Token(0);
//! const STOP: Token = Token(1);
//!
//! fn main() -> io::Result<()> {
//!     let mut reactor = Reactor::new()?; // NtReactor on Windows, EpollReactor on Linux
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     listener.set_nonblocking(true)?;
//!     reactor.register(&listener, LISTENER, Interest::READABLE)?;
//!
//!     // A client on another thread: it sends a line, checks the echo, then stops the server.
//!     let addr = listener.local_addr()?;
//!     let stop = reactor.waker(STOP)?;
//!     let client = std::thread::spawn(move || -> io::Result<()> {
//!         let mut stream = TcpStream::connect(addr)?;
//!         stream.write_all(b"hello\n")?;
//!         let mut echo = [0; 6];
//!         stream.read_exact(&mut echo)?;
//!         assert_eq!(&echo, b"hello\n");
//!         stop.wake()
//!     });
//!
//!     let mut connections = HashMap::new();
//!     let mut next_token = 2;
//!     let mut events = Events::with_capacity(256);
//!     'serve: loop {
//!         reactor.poll(&mut events, None)?;
//!         for event in &events {
//!             match event.token() {
//!                 STOP if event.is_wake() => break 'serve,
//!                 LISTENER => loop {
//!                     // Accept until WouldBlock: one event may stand for several connections.
//!                     match listener.accept() {
//!                         Ok((stream, _)) => {
//!                             stream.set_nonblocking(true)?;
//!                             let token = Token(next_token);
//!                             next_token += 1;
//!                             reactor.register(&stream, token, Interest::READABLE)?;
//!                             connections.insert(token, stream);
//!                         }
//!                         Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
//!                         Err(e) if is_reset(&e) => continue, // gone before we accepted it
//!                         Err(e) => return Err(e),
//!                     }
//!                 },
//!                 token => {
//!                     let Some(stream) = connections.get_mut(&token) else { continue };
//!                     if event.is_reset() || !echo(stream)? {
//!                         // Closed by the peer: deregister first, then drop (close) it.
//!                         reactor.deregister(stream)?;
//!                         connections.remove(&token);
//!                     }
//!                 }
//!             }
//!         }
//!     }
//!     client.join().expect("client thread")?;
//!     for stream in connections.values() {
//!         reactor.deregister(stream)?;
//!     }
//!     reactor.deregister(&listener)?;
//!     Ok(()) // dropping the reactor tears it down
//! }
//!
//! /// Echoes what `stream` has to read; false once the peer has closed its side.
//! fn echo(stream: &mut TcpStream) -> io::Result<bool> {
//!     let mut buf = [0; 4096];
//!     loop {
//!         match stream.read(&mut buf) {
//!             Ok(0) => return Ok(false),
//!             // A real server keeps what does not fit in the socket's buffer (WouldBlock) and
//!             // asks for WRITABLE: see "Backpressure" below.
//!             Ok(n) => stream.write_all(&buf[..n])?,
//!             Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
//!             Err(e) if is_reset(&e) => return Ok(false), // a reset the event did not show
//!             Err(e) => return Err(e),
//!         }
//!     }
//! }
//!
//! fn is_reset(e: &io::Error) -> bool {
//!     use io::ErrorKind::{ConnectionAborted, ConnectionReset};
//!     matches!(e.kind(), ConnectionReset | ConnectionAborted)
//! }
//! # pub fn run() -> io::Result<()> { main() }
//! # }
//! # fn main() -> std::io::Result<()> {
//! #     #[cfg(any(windows, target_os = "linux"))]
//! #     program::run()?;
//! #     Ok(())
//! # }
//! ```
//!
//! ## Registering sockets
//! Anything that implements `AsSocket` can be registered: std's `TcpListener`, `TcpStream` and
//! `UdpSocket`, socket2's `Socket`, and so on (see [`Source`]). Put it in non-blocking mode first,
//! and read or write until `WouldBlock`.
//!
//! Tokens are yours to choose and keep apart: sockets, timers and wakers share one token space,
//! and the reactor does not check it. Every event still says where it comes from
//! ([`Event::is_timer`], [`Event::is_wake`], neither for a socket).
//!
//! ### Modes
//! | [`Mode`] | after an event | you call |
//! |---|---|---|
//! | `Level` (default) | re-armed with the same interest: a condition that still holds is reported again by the next `poll` | `reregister`, only to change the interest |
//! | `Oneshot` | disarmed | `reregister` or `rearm`, to hear anything more from the socket |
//! | `Edge` | the conditions just reported are disarmed; the others stay armed | [`rearm`](Reactor::rearm) for the readiness that returned `WouldBlock` |
//!
//! `Edge` in one sentence: each readiness is reported once, and once more after every `rearm` of
//! it, which you call when an operation returns `WouldBlock`. [`Mode`] sets it beside epoll's
//! `EPOLLET` and mio's contract.
//!
//! **Coming from mio?** mio's edge-triggered contract is "another event after you have seen
//! `WouldBlock`", and on Windows mio keeps it by re-arming inside its own `read` and `write`.
//! Here that call is yours: a program ported from mio that reads to `WouldBlock` and never calls
//! `rearm` never hears from that socket's readable side again. Use `Level` (the default) for
//! mio-like code that does not re-arm.
//!
//! ### Backpressure
//! Change what you ask for with [`reregister`](Reactor::reregister). Narrowing the interest (even
//! to [`Interest::NONE`], which pauses the registration) costs no kernel call; widening it
//! takes effect in the next `poll` call, before it waits. A writer that has more to send than the socket takes asks
//! for `READABLE | WRITABLE`, writes the rest when `is_writable`, and narrows back to `READABLE`
//! when done. A paused registration still reports a failed connect, and anything else that
//! still holds (a reset, a peer's close) is reported once it is widened again.
//!
//! ### What an event says
//! [`Event`]'s documentation has the full table. In short: data or a connection to accept is
//! `is_readable`; room to write or a finished connect is `is_writable`; the peer's FIN is
//! `is_readable` and `is_read_closed`; a reset is `is_reset` (read- and write-closed); a failed
//! connect is `is_error` (read- and write-closed; `take_error` says why). These flags say the
//! same on every Windows and under Wine, where a read does not: after a reset, a read fails
//! with `ConnectionReset` on Windows but usually returns `Ok(0)` under Wine 8.
//!
//! A reset can also come just after the event that woke you (say, an event for data that arrived
//! just before it), and then your read meets it first. So a server that closes a connection at
//! the end of its input treats `Ok(0)`, `ConnectionReset` and `ConnectionAborted` from a read
//! alike (counting resets by `is_reset` alone under-counts them). Don't count on data you had not
//! read when the reset came: Windows and Wine 10 discard it, Wine 8 still returns it.
//!
//! ### Half-close
//! A peer's FIN is a condition that holds for good, so in `Level` mode every `poll` reports it
//! again for as long as you ask for `READABLE`. When a read returns `Ok(0)` and you want to go
//! on writing to that peer (it only shut down its sending side), stop asking for `READABLE`: ask
//! for `WRITABLE` while you have something to write (a later reset is reported there, as
//! `is_reset`), and for [`Interest::NONE`] otherwise (a reset is then reported once you widen
//! again).
//! ```
//! # #[cfg(any(windows, target_os = "linux"))] fn main() -> std::io::Result<()> {
//! # use afd_reactor::{Interest, Reactor, Token};
//! # let mut reactor = Reactor::new()?;
//! # let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
//! # let stream = std::net::TcpStream::connect(listener.local_addr()?)?;
//! # reactor.register(&stream, Token(1), Interest::READABLE)?;
//! # let token = Token(1);
//! // After `read` returned Ok(0) on `stream`, with nothing left to write for now:
//! reactor.reregister(&stream, token, Interest::NONE)?;
//! # reactor.deregister(&stream)?;
//! # Ok(()) }
//! # #[cfg(not(any(windows, target_os = "linux")))] fn main() {}
//! ```
//!
//! ### Connecting without blocking
//! Start the connect (socket2's `Socket::connect` on a non-blocking socket returns
//! `WouldBlock`), register the socket for `WRITABLE`, and wait for its event: `is_error` means
//! the connect failed (check it first: a failed connect is reported as writable too, and
//! `take_error` says why); `is_writable` without `is_error` means it is connected. Then ask for
//! what you need next, usually `READABLE`.
//! ```
//! # #[cfg(windows)] mod example {
//! use afd_reactor::{Events, Interest, NtReactor, Token};
//! use socket2::{Domain, Socket, Type};
//! use std::io;
//! use std::net::{SocketAddr, TcpListener, TcpStream};
//! use std::time::Duration;
//!
//! /// Starts connecting to `addr` and registers the socket under `token`.
//! fn start_connect(
//!     reactor: &mut NtReactor,
//!     addr: SocketAddr,
//!     token: Token,
//! ) -> io::Result<TcpStream> {
//!     let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
//!     socket.set_nonblocking(true)?;
//!     match socket.connect(&addr.into()) {
//!         Ok(()) => {}
//!         Err(e) if e.kind() == io::ErrorKind::WouldBlock => {} // in progress
//!         Err(e) => return Err(e),
//!     }
//!     let stream = TcpStream::from(socket);
//!     reactor.register(&stream, token, Interest::WRITABLE)?;
//!     Ok(stream)
//! }
//!
//! /// Polls until `token`'s connect has finished: Ok once connected, the reason if it failed.
//! fn finish_connect(reactor: &mut NtReactor, stream: &TcpStream, token: Token) -> io::Result<()> {
//!     let mut events = Events::with_capacity(64);
//!     loop {
//!         reactor.poll(&mut events, Some(Duration::from_secs(10)))?;
//!         for event in events.iter().filter(|e| e.token() == token) {
//!             if event.is_error() {
//!                 let why = stream.take_error()?;
//!                 return Err(why.unwrap_or_else(|| io::ErrorKind::ConnectionRefused.into()));
//!             }
//!             if event.is_writable() {
//!                 return reactor.reregister(stream, token, Interest::READABLE);
//!             }
//!         }
//!     }
//! }
//!
//! fn main() -> io::Result<()> {
//!     let mut reactor = NtReactor::new()?;
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let stream = start_connect(&mut reactor, listener.local_addr()?, Token(1))?;
//!     finish_connect(&mut reactor, &stream, Token(1))?; // connected
//!     reactor.deregister(&stream)?;
//!
//!     let nobody = TcpListener::bind("127.0.0.1:0")?.local_addr()?; // closed at once
//!     let stream = start_connect(&mut reactor, nobody, Token(2))?;
//!     let refused = finish_connect(&mut reactor, &stream, Token(2)).unwrap_err();
//!     assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
//!     reactor.deregister(&stream)?;
//!     Ok(())
//! }
//! # pub fn run() -> io::Result<()> { main() }
//! # }
//! # fn main() -> std::io::Result<()> {
//! #     #[cfg(windows)]
//! #     example::run()?;
//! #     Ok(())
//! # }
//! ```
//!
//! ## Closing sockets
//! **Deregister a socket before you close (drop) it**, as with mio. If you don't, nothing unsafe
//! happens, and the reactor removes the registration when the kernel reports the close (no event
//! is delivered for it). A registration with no poll in the kernel (a `Oneshot` one after its
//! event, an `Edge` one whose every readiness was reported and not re-armed, one disarmed by an
//! error event) cannot hear of the close and stays until you
//! `deregister` it or shut the reactor down. Until the registration goes:
//! - the old token may still get events: ones the kernel queued before the close and, if the
//!   reactor re-armed on the handle value after Windows gave it to a new socket, that socket's
//!   readiness. Look tokens up in your own map and ignore the ones you no longer know;
//! - `register` of a new socket that got the same handle value may say `AlreadyExists`: call
//!   `deregister` with the new socket (it names the same value), then `register` it again. From
//!   then on, nothing of the old registration reaches the new one;
//! - if the value now names a socket that another runtime in your process has bound to its own
//!   completion port, a re-arm on it completes on that port, where that runtime does not expect
//!   it. That is the one way a broken contract reaches outside the reactor.
//!
//! Two more things to avoid on a registered socket:
//! - `CancelIoEx` on it (often done just before a close) also cancels the reactor's poll: you get
//!   one `is_error` event, and the registration stays quiet until you `reregister` it.
//! - Overlapped I/O: its completions arrive on the reactor's port, which drops them (the reactor
//!   takes only its own, tagged requests), so you would never see them.
//!
//! ## Timers and wakers
//! - [`Reactor::add_timer`]: an event after a delay, then every period if one is given. Ticks
//!   missed while your loop was busy are merged into one event, so a timer fires at most once
//!   per `poll`; a period of zero is refused.
//! - [`Reactor::waker`]: a [`Waker`] is `Send + Sync + Clone`; `wake` from any thread ends a
//!   `poll` in progress (or the next one) with one event, however many wakes came in between.
//!
//! ## Waitable handles
//! A child process ending, an event another component sets, a semaphore, a waitable timer: any
//! handle you can wait on ([`Waitable`]: every `AsHandle`; on Linux every `AsFd`, such as an
//! eventfd or a pidfd) can be registered with [`Reactor::register_waitable`]. Its object being
//! signaled is an event with [`Event::is_signaled`], through the same port and with the same
//! promises as sockets: no event after [`deregister_waitable`](Reactor::deregister_waitable),
//! nothing freed while the kernel or a thread-pool callback can touch it, teardown drains it.
//! - The reactor waits on its own duplicate of the handle: closing yours, or a new object getting
//!   its value, does not disturb the wait.
//! - A satisfied wait *consumes* the signal, as any wait does (an auto-reset event is reset, a
//!   semaphore count taken): the event you get is that signal, and if you deregister before it
//!   was delivered, `deregister_waitable` returns `true` so that you can pass it on (teardown
//!   counts them: [`Teardown::signals_lost`]). On Linux a wait consumes nothing (read the
//!   eventfd). One gap, on the thread-pool path only (Wine): a signal that comes as the wait is
//!   cancelled can be lost unreported (see `deregister_waitable`).
//! - In [`Mode::Level`] the wait is re-armed after each event; in [`Mode::Oneshot`] and
//!   [`Mode::Edge`], by [`reregister_waitable`](Reactor::reregister_waitable). An object that
//!   stays signaled (an ended process) is reported at every `poll` in `Level` mode: deregister
//!   it, or use `Oneshot`.
//! - On Windows 8 and later the reactor uses wait completion packets, which cost no thread;
//!   where ntdll lacks them (Wine) it uses a one-shot thread-pool wait per arming.
//!
//! Waiting for a child process (a `std::process::Child` is an `AsHandle` on Windows):
//! ```
//! # #[cfg(windows)] fn main() -> std::io::Result<()> {
//! use afd_reactor::{Events, Mode, Reactor, Token};
//! use std::process::Command;
//! use std::time::Duration;
//!
//! let mut reactor = Reactor::new()?;
//! let mut child = Command::new("cmd").args(["/C", "exit 3"]).spawn()?;
//! reactor.register_waitable_with_mode(&child, Token(7), Mode::Oneshot)?;
//! let mut events = Events::with_capacity(16);
//! 'wait: loop {
//!     reactor.poll(&mut events, Some(Duration::from_secs(10)))?;
//!     for event in &events {
//!         if event.token() == Token(7) && event.is_signaled() {
//!             break 'wait;
//!         }
//!     }
//! }
//! reactor.deregister_waitable(&child)?;
//! assert_eq!(child.wait()?.code(), Some(3)); // it has ended: this does not block
//! # Ok(()) }
//! # #[cfg(not(windows))] fn main() {}
//! ```
//!
//! ## Looking inside: [`Reactor::stats`]
//! After you `deregister` a socket whose poll was pending, `stats()` still shows a zombie and a
//! poll in flight: the reactor has cancelled the poll and waits for the kernel's answer, which
//! a later `poll` call (usually the next) collects. They are not leaks; `poll` or `shutdown`
//! clears them. `stats().nt` counts kernel calls by kind.
//!
//! ## Platforms
//! - **Windows** (64-bit; the Windows versions Rust's std supports): the real reactor,
//!   `NtReactor` ([`Reactor::new`]). Developed and tested under Wine 8 and Wine 10, where
//!   every test passes; see the repository's `docs/fidelity.md` for where Wine and Windows
//!   differ. One difference matters when you test backpressure under Wine: a socket's buffers
//!   are Linux's, which grow to several megabytes, so a slow reader takes a long time to
//!   fill them. Set `SO_SNDBUF` (socket2's `set_send_buffer_size`) to see backpressure sooner.
//! - **Linux**: the same reactor on epoll, `EpollReactor` ([`Reactor::new`]): the state
//!   machine, generations, zombies, modes, timers, wakers and teardown are the same code; the
//!   kernel below emulates the Windows contract on one epoll instance and an eventfd. It polls
//!   anything epoll can: sockets (every `AsFd` type), pipes, eventfds, timerfds, pidfds (readable
//!   when the process exits). Three differences from Windows:
//!   - Linux says nothing when a descriptor is closed, so a socket closed without `deregister`
//!     stays registered until its number is registered again (which ends the old registration,
//!     as on Windows) or the reactor shuts down. Deregister before you close, on every OS.
//!   - There are no completion ports to be bound to, no helper handles and no outside cancel.
//!   - A non-blocking connect reports `EINPROGRESS` (`raw_os_error() == Some(libc::EINPROGRESS)`),
//!     not `WouldBlock`; the reactor's events for it are the same.
//! - **Other platforms**: the crate builds, but has no real kernel. The simulated kernel
//!   (feature `test-rig`) runs everywhere.
//!
//! ## Testing your own code: feature `test-rig`
//! Off by default. It adds the simulated kernel (`afd_reactor::kernel::sim::SimKernel`, and
//! `afd_reactor::SimSocket` for its sockets): a deterministic, seeded model of the Windows kernel
//! in which a test makes sockets ready, closes them and injects faults, on any OS. Enable it in
//! your `[dev-dependencies]`; its items are documented when the docs are built with
//! `--features test-rig`. The examples in these docs that use it say so in their first line.
//!
//! ## How it is built
//! The repository's `docs/design.md` explains the rules the reactor follows and why: the layers
//! (public API and loop, the per-socket state machine, the [`kernel`] boundary with its real and
//! simulated implementations, and the [`afd`] definitions), tagged requests, zombies, the helper
//! handles for sockets another runtime owns, and teardown.
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("afd-reactor supports 64-bit targets only");

pub mod afd;
pub mod kernel;
mod reactor;
#[cfg(feature = "test-rig")]
pub mod state;
#[cfg(not(feature = "test-rig"))]
mod state;

#[cfg(target_os = "linux")]
pub use reactor::EpollReactor;
#[cfg(windows)]
pub use reactor::NtReactor;
#[cfg(feature = "test-rig")]
pub use reactor::SimSocket;
#[cfg(feature = "test-rig")]
pub use reactor::SimWaitable;
pub use reactor::{
    Config, Event, Events, Interest, NtCalls, Reactor, Source, Stats, Teardown, TimerId, Token,
    Waitable, Waker,
};
pub use state::Mode;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(all(windows, feature = "test-rig"))]
pub mod nt;
#[cfg(all(windows, not(feature = "test-rig")))]
#[allow(dead_code, unused_imports)]
mod nt;

// Compile-time thread-safety contract (docs/design.md §10): the waker crosses threads, the reactor
// moves between threads (with a `Send` kernel) but is driven by one at a time.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Waker>();
    send_sync::<Token>();
    send_sync::<Interest>();
    send::<Events>();
    #[cfg(windows)]
    send::<Reactor<kernel::nt::NtKernel>>();
    #[cfg(target_os = "linux")]
    send::<Reactor<kernel::epoll::EpollKernel>>();

    // `Reactor` must not be `Sync`: if it were, the calls below would be ambiguous. (Checked for
    // each kernel there is: a generic `Reactor<K>` proves nothing.)
    #[cfg(any(windows, target_os = "linux", feature = "test-rig"))]
    {
        trait AmbiguousIfSync<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfSync<()> for T {}
        struct IsSync;
        impl<T: ?Sized + Sync> AmbiguousIfSync<IsSync> for T {}
        #[cfg(feature = "test-rig")]
        <Reactor<kernel::sim::SimKernel> as AmbiguousIfSync<_>>::check();
        #[cfg(windows)]
        <Reactor<kernel::nt::NtKernel> as AmbiguousIfSync<_>>::check();
        #[cfg(target_os = "linux")]
        <Reactor<kernel::epoll::EpollKernel> as AmbiguousIfSync<_>>::check();
    }
};
