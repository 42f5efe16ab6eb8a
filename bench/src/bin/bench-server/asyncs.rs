//! The async servers: the HTTP workload and the async echo, the same code on every async stack
//! (afd-async, smol, tokio), each run on one thread.
//!
//! A stack ([`Stack`]) only supplies what differs: how to run a future to completion with a
//! one-thread executor, how to accept, how to spawn a connection's task, and its stream's I/O
//! ([`Conn`]), each the way the stack's documentation shows. The accept loop, the sessions, the
//! HTTP handler and the echo handler are written once, here.
//!
//! - **HTTP** (`http_hello`): HTTP/1.1 keep-alive, requests without bodies. The handler reads into
//!   a buffer with the stack's `AsyncRead`-style `read`, counts the complete requests in it (each
//!   ends in `\r\n\r\n`; pipelined ones are counted all), writes one fixed response per request in
//!   a single `write_all`, and loops; it closes on EOF or on any error. This is how a server on
//!   the stack's stream API reads, so what the stack's `read` costs (a read that finds nothing,
//!   a re-arm) is part of what is measured.
//! - **Echo**: the semantics of the raw echo server (`echo.rs`): wait for readiness
//!   (`readable`), read once with a non-blocking read (a short read means drained for now;
//!   a stack whose contract is edge-triggered, tokio's, reads on until `WouldBlock`, as mio does
//!   in the raw rows), write back with `write_all`.
//!
//! The echo server exits once `sessions` sessions have come and gone (the number of open
//! connections fell back to zero that many times), as the raw one does; a connection counts as
//! open from its first byte received. The HTTP server exits when the driver connects to its
//! control address (`ready addr=… control=…`), once wrk is done: wrk tries the address with a
//! connection it closes at once, and a run's connections close in any order, so counting open
//! connections cannot tell where a wrk run ends. It prints `idle` whenever no connection is
//! open, so the driver can let a warm-up run's connections close before it measures. A control
//! connection that sends `r` instead restarts the count of connections answered (`result …
//! answered_conns=…`: the connections that had at least one request answered since), which
//! tells whether a stack served every connection or only some.

use bench::System;
use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// The fixed answer to every HTTP request.
pub const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!";

/// A connection on an async stack.
#[allow(async_fn_in_trait)] // a binary's own trait: its futures' bounds are not a promise
pub trait Conn {
    /// After a short read the stack reports the socket readable again only once a read has
    /// returned `WouldBlock` (tokio's contract): the echo reads until then.
    const EDGE: bool;
    /// Sets `TCP_NODELAY`, as the raw servers do.
    fn set_nodelay(&self) -> io::Result<()>;
    /// The stack's `AsyncRead::read`.
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// The stack's `AsyncWrite::write_all`.
    async fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Waits until the stack reports the socket readable.
    fn readable(&self) -> impl Future<Output = io::Result<()>>;
    /// One non-blocking read (`WouldBlock` when there is nothing).
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// What a connection's task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Http,
    Echo,
}

/// An async stack on one thread.
#[allow(async_fn_in_trait)] // as `Conn`
pub trait Stack: Sized + 'static {
    /// A listening socket in this stack's clothes.
    type Listener;
    /// A connection in this stack's clothes.
    type Stream: Conn + 'static;
    /// Builds the stack's runtime on this thread and runs `main(stack)` on it to completion.
    fn run<T, F: Future<Output = io::Result<T>>>(main: impl FnOnce(Self) -> F) -> io::Result<T>;
    /// Wraps a non-blocking listener.
    fn listener(&self, l: TcpListener) -> io::Result<Self::Listener>;
    /// Accepts one connection.
    async fn accept(&self, l: &Self::Listener) -> io::Result<Self::Stream>;
    /// Spawns the task of one connection: [`serve_conn`] on the stack's executor, detached.
    fn spawn_conn(&self, conn: Self::Stream, job: Job, shared: Arc<Shared>);
}

/// A one-shot flag a task can wait for.
#[derive(Default)]
struct Signal {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().expect("signal lock").take() {
            w.wake();
        }
    }

    fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.set.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().expect("signal lock") = Some(cx.waker().clone());
            if self.set.load(Ordering::SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// What the connections share: the counts, the sessions, the marks.
pub struct Shared {
    open: AtomicUsize,
    sessions_left: AtomicUsize,
    sessions_done: AtomicUsize,
    done: Signal,
    accepted: AtomicU64,
    /// HTTP requests answered (their answers written).
    requests: AtomicU64,
    /// Answered-request counts at which to stop at a mark (`mark name=http-k requests=…`), in
    /// order; the index of the next one.
    marks: Vec<u64>,
    next_mark: AtomicUsize,
    /// Print `idle` whenever no connection is open (HTTP).
    report_idle: bool,
    /// Bumped by the driver (`r` on the control address) before a measured run, and the
    /// connections that had a request answered since.
    epoch: AtomicU64,
    answered_conns: AtomicU64,
}

impl Shared {
    fn new(sessions: usize, marks: Vec<u64>, report_idle: bool) -> Self {
        Shared {
            open: AtomicUsize::new(0),
            sessions_left: AtomicUsize::new(sessions),
            sessions_done: AtomicUsize::new(0),
            done: Signal::default(),
            accepted: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            marks,
            next_mark: AtomicUsize::new(0),
            report_idle,
            epoch: AtomicU64::new(0),
            answered_conns: AtomicU64::new(0),
        }
    }

    /// A connection received its first bytes: it is open.
    fn opened(&self) {
        self.open.fetch_add(1, Ordering::SeqCst);
    }

    /// An open connection ended: the end of a session when it was the last one open.
    fn closed(&self) {
        if self.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            if self.report_idle {
                // The driver waits for it between wrk's warm-up and its measured run.
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "idle");
                let _ = out.flush();
            }
            self.sessions_done.fetch_add(1, Ordering::SeqCst);
            if self.sessions_left.load(Ordering::SeqCst) > 0
                && self.sessions_left.fetch_sub(1, Ordering::SeqCst) == 1
            {
                self.done.set();
            }
        }
    }

    /// `n` more requests answered; stops at a mark when the count reaches the next one.
    fn answered(&self, n: u64) {
        let total = self.requests.fetch_add(n, Ordering::Relaxed) + n;
        let i = self.next_mark.load(Ordering::Relaxed);
        if let Some(&at) = self.marks.get(i)
            && total >= at
        {
            self.next_mark.store(i + 1, Ordering::Relaxed);
            // Every thread of the process (a stack may run one of its own): the driver counts
            // all of them.
            announce_threads();
            super::mark_fields(&format!("name=http-{i} requests={total}"));
        }
    }
}

/// The task of one connection.
pub async fn serve_conn<C: Conn>(conn: C, job: Job, shared: Arc<Shared>) {
    let mut open = false;
    match job {
        Job::Http => http(conn, &shared, &mut open).await,
        Job::Echo => echo(conn, &shared, &mut open).await,
    }
    if open {
        shared.closed();
    }
}

/// Counts the connection open at its first bytes.
fn first_bytes(shared: &Shared, open: &mut bool) {
    if !*open {
        *open = true;
        shared.opened();
    }
}

/// Where the first `\r\n\r\n` in `buf` ends.
fn request_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// The HTTP handler (module documentation).
async fn http<C: Conn>(mut conn: C, shared: &Shared, open: &mut bool) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut filled = 0;
    let mut out: Vec<u8> = Vec::with_capacity(RESPONSE.len() * 16);
    // The count of answered connections this one is in (none yet).
    let mut counted_in = u64::MAX;
    loop {
        if filled == buf.len() {
            return; // a request head larger than the buffer: not ours to serve
        }
        let n = match conn.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        first_bytes(shared, open);
        // A terminator may straddle two reads: look from 3 bytes before the new data.
        let mut scan = filled.saturating_sub(3);
        filled += n;
        let mut consumed = 0;
        let mut count = 0u64;
        while let Some(end) = request_end(&buf[scan..filled]) {
            consumed = scan + end;
            scan = consumed;
            count += 1;
        }
        if count == 0 {
            continue;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        out.clear();
        for _ in 0..count {
            out.extend_from_slice(RESPONSE);
        }
        if conn.write_all(&out).await.is_err() {
            return;
        }
        shared.answered(count);
        let epoch = shared.epoch.load(Ordering::Relaxed);
        if counted_in != epoch {
            counted_in = epoch;
            shared.answered_conns.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The echo handler (module documentation).
async fn echo<C: Conn>(mut conn: C, shared: &Shared, open: &mut bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if conn.readable().await.is_err() {
            return;
        }
        loop {
            match conn.try_read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    first_bytes(shared, open);
                    if conn.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    // A short read drained the socket for now (unless the stack is
                    // edge-triggered: then only WouldBlock re-arms it).
                    if !C::EDGE && n < buf.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// What the server did.
pub struct Served {
    pub accepted: u64,
    pub requests: u64,
    pub sessions: usize,
    /// Connections with a request answered since the driver's last `r`.
    pub answered_conns: u64,
}

/// Accepts connections and spawns their tasks until `sessions` sessions have ended, or with a
/// `control` listener until a connection comes to it.
async fn accept_loop<S: Stack>(
    stack: &S,
    listener: S::Listener,
    control: Option<S::Listener>,
    job: Job,
    shared: Arc<Shared>,
) -> io::Result<()> {
    // One future for the whole loop: the control listener is armed once.
    // A control connection that sends `r` starts a new count of the connections answered;
    // any other ends the server.
    let stop = async {
        match &control {
            Some(c) => loop {
                let Ok(mut conn) = stack.accept(c).await else {
                    break;
                };
                let mut b = [0u8; 1];
                match conn.read(&mut b).await {
                    Ok(1) if b[0] == b'r' => {
                        shared.epoch.fetch_add(1, Ordering::SeqCst);
                        shared.answered_conns.store(0, Ordering::SeqCst);
                    }
                    _ => break,
                }
            },
            None => shared.done.wait().await,
        }
        None
    };
    let mut stop = std::pin::pin!(stop);
    loop {
        let next =
            futures_lite::future::or(async { Some(stack.accept(&listener).await) }, stop.as_mut())
                .await;
        let conn = match next {
            None => return Ok(()),
            Some(Ok(conn)) => conn,
            // Gone before we accepted it.
            Some(Err(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                continue;
            }
            Some(Err(e)) => return Err(e),
        };
        conn.set_nodelay()?;
        shared.accepted.fetch_add(1, Ordering::Relaxed);
        stack.spawn_conn(conn, job, Arc::clone(&shared));
    }
}

/// Serves `job` on stack `S`: `ready addr=… [control=…]`, the threads, then the connections
/// until the end (the module documentation).
pub fn serve<S: Stack>(
    listener: TcpListener,
    job: Job,
    sessions: usize,
    marks: Vec<u64>,
) -> io::Result<Served> {
    let shared = Arc::new(Shared::new(sessions, marks, job == Job::Http));
    let addr = listener.local_addr()?;
    let control = match job {
        Job::Http => {
            let c = TcpListener::bind((addr.ip(), 0))?;
            c.set_nonblocking(true)?;
            Some(c)
        }
        Job::Echo => None,
    };
    let s = Arc::clone(&shared);
    S::run(move |stack| async move {
        // Wrapped first: a stack may start its threads with its first registration.
        let listener = stack.listener(listener)?;
        let mut ready = format!("ready addr={addr}");
        let control = match control {
            Some(c) => {
                ready += &format!(" control={}", c.local_addr()?);
                Some(stack.listener(c)?)
            }
            None => None,
        };
        {
            use std::io::Write;
            println!("{ready}");
            let _ = std::io::stdout().flush();
        }
        announce_threads();
        accept_loop(&stack, listener, control, job, s).await
    })?;
    announce_threads();
    Ok(Served {
        accepted: shared.accepted.load(Ordering::SeqCst),
        requests: shared.requests.load(Ordering::SeqCst),
        sessions: shared.sessions_done.load(Ordering::SeqCst),
        answered_conns: shared.answered_conns.load(Ordering::SeqCst),
    })
}

/// Runs workload `what` (`http` or `echo`) on the async stack `system`.
pub fn run(
    system: System,
    what: &str,
    listener: TcpListener,
    sessions: usize,
    marks: Vec<u64>,
) -> io::Result<Served> {
    let job = match what {
        "http" => Job::Http,
        "echo" => Job::Echo,
        other => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{system} runs the http and echo workloads, not {other:?}"),
            ));
        }
    };
    match system {
        System::AfdAsync => serve::<super::stacks::AfdAsync>(listener, job, sessions, marks),
        System::Smol => serve::<super::stacks::Smol>(listener, job, sessions, marks),
        System::Tokio => serve::<super::stacks::Tokio>(listener, job, sessions, marks),
        other => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{other} is not an async stack"),
        )),
    }
}

/// The ids of every thread of this process, as the driver's counter sees them (Windows thread
/// ids, natively kernel thread ids).
#[cfg(target_os = "linux")]
fn thread_ids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The ids of every thread of this process, as the driver's counter sees them (Windows thread
/// ids, natively kernel thread ids).
#[cfg(windows)]
pub fn thread_ids() -> Vec<u32> {
    use windows_sys::Win32::Foundation::{CloseHandle, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
    };
    use windows_sys::Win32::System::Threading::GetCurrentProcessId;
    let mut out = Vec::new();
    // SAFETY: no arguments, no preconditions.
    let pid = unsafe { GetCurrentProcessId() };
    // SAFETY: a plain call; the handle it returns is checked, used only below and closed once.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    if snap == INVALID_HANDLE_VALUE {
        return out;
    }
    let mut e = THREADENTRY32 {
        dwSize: std::mem::size_of::<THREADENTRY32>() as u32,
        cntUsage: 0,
        th32ThreadID: 0,
        th32OwnerProcessID: 0,
        tpBasePri: 0,
        tpDeltaPri: 0,
        dwFlags: 0,
    };
    // SAFETY: `snap` is the live snapshot handle above and `e` a writable THREADENTRY32 whose
    // dwSize is set, as Thread32First asks.
    let mut more = unsafe { Thread32First(snap, &mut e) } != 0;
    while more {
        if e.th32OwnerProcessID == pid {
            out.push(e.th32ThreadID);
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snap, &mut e) } != 0;
    }
    // SAFETY: `snap` is open and not used after this.
    unsafe { CloseHandle(snap) };
    out
}

/// Prints `tid id=…` for every thread of the process (the driver ignores repeats).
pub fn announce_threads() {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for id in thread_ids() {
        let _ = writeln!(out, "tid id={id}");
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::request_end;

    #[test]
    fn finds_request_ends() {
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(request_end(b"GET / HTTP/1.1\r\n\r"), None);
        assert_eq!(request_end(b"\r\n\r\nX"), Some(4));
    }
}
