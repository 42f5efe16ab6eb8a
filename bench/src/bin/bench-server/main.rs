//! `bench-server` — the server side of the benchmark harness: on Windows (run under Wine by
//! `bench`), afd-reactor on NT, mio, polling and wepoll; on Linux (`bench --native`), afd-reactor
//! on epoll, mio and polling. And on both, the async stacks afd-async, smol and tokio (the
//! HTTP workload and the async echo: `asyncs.rs`).
//!
//! ```text
//! bench-server echo  --system S [--addr 127.0.0.1:0] [--sessions 1]
//! bench-server http  --system A [--addr 127.0.0.1:0] [--marks W,E]
//! bench-server micro --system S [--sockets 10000] [--churn-ops 5000] [--wakes 2000]
//!                               [--storm-wakes 10000] [--idle] [--idle-secs 1]
//!                               [--teardown-only] [--no-wait]
//! bench-server waits-signal --system afd|polling [--mode level|oneshot] [--signals 2000]
//!                                                [--warmup-signals 200]
//! bench-server waits-many   --system afd|polling [--mode level|oneshot] [--waitables 1000]
//! ```
//! The `waits-*` workloads (waitable handles, Windows only) are described in `waits.rs`.
//! `--teardown-only` registers the sockets and tears the poller down, nothing else; `--no-wait`
//! tears afd-reactor down without waiting for the kernel (`abandon`), as the peers' drops do.
//! S is one of afd, afd-helper, mio, polling, wepoll, or an async stack A: afd-async, smol,
//! tokio (`echo` and `http` only). `--marks W,E` stops at a mark after W, W+E and W+4E answered
//! HTTP requests (`mark name=http-0 requests=…`, …). Output is one record per line (see
//! `bench::Record`): `ready addr=… tid=…` (`http` adds `control=…`: a connection there ends
//! the server), `tid id=…` (an async server announces every thread of its process, again at
//! each mark and at the end), `mark name=…` (the server then waits for a line on stdin, so the
//! driver can count wineserver requests at that point), `idle` (`http`: no connection is open),
//! `result …`.

#[cfg(not(any(windows, target_os = "linux")))]
fn main() {
    eprintln!("bench-server runs on Windows (under Wine) and Linux; run it through `bench`");
    std::process::exit(2);
}

#[cfg(any(windows, target_os = "linux"))]
fn main() {
    if let Err(e) = server::run() {
        eprintln!("bench-server: {e}");
        std::process::exit(1);
    }
}

#[cfg(any(windows, target_os = "linux"))]
mod afd;
#[cfg(any(windows, target_os = "linux"))]
mod asyncs;
#[cfg(any(windows, target_os = "linux"))]
mod echo;
#[cfg(any(windows, target_os = "linux"))]
mod micro;
#[cfg(any(windows, target_os = "linux"))]
mod mio_sys;
#[cfg(any(windows, target_os = "linux"))]
mod polling_sys;
#[cfg(any(windows, target_os = "linux"))]
mod stacks;
#[cfg(any(windows, target_os = "linux"))]
mod sys;
#[cfg(windows)]
mod waits;
#[cfg(windows)]
mod wepoll_sys;

/// A global allocator that keeps a count of live heap bytes (for the heap workload).
#[cfg(any(windows, target_os = "linux"))]
mod alloc {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    static LIVE: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    // SAFETY: every call is forwarded unchanged to the system allocator; the counter is only
    // bookkeeping on the side.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `alloc`/`realloc` above with this layout.
            unsafe { System.dealloc(ptr, layout) };
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded with the caller's guarantees.
            let p = unsafe { System.realloc(ptr, layout, new_size) };
            if !p.is_null() {
                LIVE.fetch_add(new_size, Ordering::Relaxed);
                LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            }
            p
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Heap bytes currently allocated through Rust's allocator.
    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }
}

/// Prints one record line and flushes it.
#[cfg(any(windows, target_os = "linux"))]
fn record(fields: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "result {fields}");
    let _ = out.flush();
}

/// Announces the calling thread's id (the id wineserver's trace shows).
#[cfg(windows)]
fn thread_id() {
    use std::io::Write;
    // SAFETY: no arguments, no preconditions.
    let id = unsafe { windows_sys::Win32::System::Threading::GetCurrentThreadId() };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "tid id={id}");
    let _ = out.flush();
}

/// Announces the calling thread's id (the id strace shows: the kernel's thread id).
#[cfg(target_os = "linux")]
fn thread_id() {
    use std::io::Write;
    // SAFETY: no arguments, no preconditions.
    let id = unsafe { libc::gettid() };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "tid id={id}");
    let _ = out.flush();
}

/// Prints `mark name=…` and waits for one line on stdin: the driver counts the wineserver
/// requests (natively: system calls) so far, then lets us go on. With stdin closed it does not
/// wait.
#[cfg(any(windows, target_os = "linux"))]
fn mark(name: &str) {
    mark_fields(&format!("name={name}"));
}

/// [`mark`] with more fields: prints `mark {fields}` and waits for one line on stdin.
#[cfg(any(windows, target_os = "linux"))]
fn mark_fields(fields: &str) {
    use std::io::{BufRead, Write};
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "mark {fields}");
        let _ = out.flush();
    }
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

#[cfg(any(windows, target_os = "linux"))]
mod server {
    use super::micro::{self, Sizes};
    use super::sys::Sys;
    #[cfg(windows)]
    use super::wepoll_sys::Wepoll;
    use super::{afd::Afd, asyncs, echo, mio_sys::Mio, polling_sys::Polling};
    use super::{record, thread_id};
    use bench::System;
    use std::io;
    use std::net::TcpListener;

    fn bad(msg: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, msg)
    }

    struct Args {
        what: String,
        system: System,
        addr: String,
        sessions: usize,
        idle: bool,
        sizes: Sizes,
        /// HTTP requests before the first mark, and the length of the first segment.
        marks: Option<(u64, u64)>,
        /// The `waits-*` workloads: oneshot mode (else level), signals per segment, warm-up
        /// signals, waitables registered at once.
        oneshot: bool,
        signals: usize,
        warmup_signals: usize,
        waitables: usize,
    }

    fn args() -> io::Result<Args> {
        let mut it = std::env::args().skip(1);
        let what = it.next().ok_or_else(|| {
            bad("want `echo`, `http`, `micro`, `waits-signal` or `waits-many`".into())
        })?;
        let mut a = Args {
            what,
            system: System::Afd,
            addr: "127.0.0.1:0".into(),
            sessions: 1,
            idle: false,
            sizes: Sizes {
                sockets: 10_000,
                churn_ops: 5_000,
                wakes: 2_000,
                storm_wakes: 10_000,
                idle_secs: 1.0,
                teardown_only: false,
                teardown_wait: true,
            },
            marks: None,
            oneshot: false,
            signals: 2000,
            warmup_signals: 200,
            waitables: 1000,
        };
        while let Some(flag) = it.next() {
            // The switches, which take no value.
            match flag.as_str() {
                "--idle" => {
                    a.idle = true;
                    continue;
                }
                "--teardown-only" => {
                    a.sizes.teardown_only = true;
                    continue;
                }
                "--no-wait" => {
                    a.sizes.teardown_wait = false;
                    continue;
                }
                _ => {}
            }
            let v = it
                .next()
                .ok_or_else(|| bad(format!("{flag} needs a value")))?;
            let count = || -> io::Result<usize> {
                v.parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(format!("{flag} {v:?}: want a positive integer")))
            };
            match flag.as_str() {
                "--system" => {
                    a.system =
                        System::parse(&v).ok_or_else(|| bad(format!("unknown system {v:?}")))?
                }
                "--addr" => a.addr = v,
                "--marks" => {
                    let n: Vec<u64> = v.split(',').filter_map(|x| x.parse().ok()).collect();
                    match n[..] {
                        [w, e] if e > 0 => a.marks = Some((w, e)),
                        _ => return Err(bad(format!("--marks {v:?}: want W,E (E > 0)"))),
                    }
                }
                "--mode" => {
                    a.oneshot = match v.as_str() {
                        "level" => false,
                        "oneshot" => true,
                        _ => return Err(bad(format!("--mode {v:?}: want level or oneshot"))),
                    }
                }
                "--signals" => a.signals = count()?,
                "--warmup-signals" => a.warmup_signals = count()?,
                "--waitables" => a.waitables = count()?,
                "--sessions" => a.sessions = count()?,
                "--sockets" => a.sizes.sockets = count()?,
                "--churn-ops" => a.sizes.churn_ops = count()?,
                "--wakes" => a.sizes.wakes = count()?,
                "--storm-wakes" => a.sizes.storm_wakes = count()?,
                "--idle-secs" => {
                    a.sizes.idle_secs =
                        v.parse()
                            .ok()
                            .filter(|s: &f64| *s > 0.0 && s.is_finite())
                            .ok_or_else(|| bad(format!("--idle-secs {v:?}: want seconds")))?
                }
                _ => return Err(bad(format!("unknown argument {flag}"))),
            }
        }
        Ok(a)
    }

    pub fn run() -> io::Result<()> {
        let a = args()?;
        if a.what.starts_with("waits-") {
            return waits(&a);
        }
        if a.system.is_async() {
            return run_async(&a);
        }
        match a.system {
            System::Afd => go(&a, || Afd::new(false)),
            System::Mio => go(&a, Mio::new),
            System::Polling => go(&a, Polling::new),
            #[cfg(windows)]
            System::AfdHelper => go(&a, || Afd::new(true)),
            #[cfg(windows)]
            System::Wepoll => go(&a, Wepoll::new),
            #[cfg(not(windows))]
            System::AfdHelper | System::Wepoll => Err(bad(format!(
                "{} runs on Windows only (under Wine)",
                a.system
            ))),
            System::AfdAsync | System::Smol | System::Tokio => unreachable!("run_async"),
        }
    }

    /// The waitable-handle workloads (Windows only).
    #[cfg(windows)]
    fn waits(a: &Args) -> io::Result<()> {
        let w = super::waits::WaitArgs {
            oneshot: a.oneshot,
            signals: a.signals,
            warmup: a.warmup_signals,
            waitables: a.waitables,
        };
        super::waits::run(&a.what, a.system.name(), &w)
    }

    #[cfg(not(windows))]
    fn waits(a: &Args) -> io::Result<()> {
        let _ = (a.oneshot, a.signals, a.warmup_signals, a.waitables);
        Err(bad(format!("{} runs on Windows only (under Wine)", a.what)))
    }

    /// The HTTP workload or the async echo on an async stack.
    fn run_async(a: &Args) -> io::Result<()> {
        let listener = if a.what == "http" {
            // wrk opens all its connections at once: a backlog of 1,024 (tokio's own bind's;
            // std's is 128) lets 1,000 of them wait for accept instead of retrying their SYNs.
            use socket2::{Domain, Protocol, Socket, Type};
            let addr: std::net::SocketAddr = a
                .addr
                .parse()
                .map_err(|e| bad(format!("--addr {:?}: {e}", a.addr)))?;
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            s.bind(&addr.into())?;
            s.listen(1024)?;
            TcpListener::from(s)
        } else {
            TcpListener::bind(&a.addr)?
        };
        listener.set_nonblocking(true)?;
        let marks = match a.marks {
            Some((w, e)) => vec![w, w + e, w + 4 * e],
            None => Vec::new(),
        };
        let served = asyncs::run(a.system, &a.what, listener, a.sessions, marks)?;
        record(&format!(
            "workload={} accepted={} requests={} sessions={} answered_conns={}",
            a.what, served.accepted, served.requests, served.sessions, served.answered_conns
        ));
        Ok(())
    }

    fn go<S: Sys>(a: &Args, make: impl Fn() -> io::Result<S>) -> io::Result<()> {
        match a.what.as_str() {
            "echo" => {
                let listener = TcpListener::bind(&a.addr)?;
                listener.set_nonblocking(true)?;
                let addr = listener.local_addr()?;
                let mut sys = make()?;
                {
                    use std::io::Write;
                    println!("ready addr={addr}");
                    let _ = std::io::stdout().flush();
                }
                thread_id();
                let served = echo::serve(&mut sys, listener, a.sessions)?;
                record(&format!(
                    "workload=echo accepted={} events={} waits={} {}",
                    served.accepted,
                    served.events,
                    served.waits,
                    sys.counters()
                ));
                Ok(())
            }
            "micro" => {
                thread_id();
                let s = &a.sizes;
                if !s.teardown_only {
                    micro::wake(make()?, s.wakes)?;
                    micro::storm(make()?, s.storm_wakes)?;
                }
                micro::registered_set(make()?, s, a.idle)?;
                Ok(())
            }
            "http" => Err(bad(format!(
                "http runs on the async stacks (afd-async, smol, tokio), not {}",
                a.system
            ))),
            other => Err(bad(format!(
                "unknown workload {other:?}: want echo or micro"
            ))),
        }
    }
}
