//! A bounded-time soak server on afd-reactor: the server side of `scripts/soak.sh` ("10,000 sockets,
//! nothing lost"). On Windows (under Wine here) it runs on the NT kernel; on Linux, natively, on
//! epoll (`bash scripts/soak.sh --native`).
//!
//! ```text
//! soak_server [--addr 127.0.0.1:7300] [--secs 60] [--seed 1] [--wakers 3] [--tick-ms 100]
//!             [--chaos 0.05] [--sndbuf 32768] [--expect N] [--warmup SECS] [--ramp-by SECS]
//!             [--rss-pid PID] [--exit-when-idle]
//! ```
//! - `--secs`: hard bound on the run; then everything is deregistered and the reactor shut down.
//! - `--seed`: seeds every random choice (modes, pauses, waker intervals).
//! - `--wakers`: threads (2–4) that each call their own `Waker` at random intervals (1–20 ms).
//! - `--tick-ms`: period of the repeating check timer.
//! - `--chaos`: fraction of the connections whose interest or mode is changed per second.
//! - `--sndbuf`: `SO_SNDBUF` of accepted sockets (small, so that a peer that stops reading makes
//!   our writes hit `WouldBlock` soon; 0 keeps the default).
//! - `--expect N`: the peer's connection count; the RSS warm-up starts once 95% of it is reached
//!   (or at `--ramp-by` seconds if that never happens; default half of `--secs`).
//! - `--warmup`: warm-up before the RSS baseline (default max(2 s, 10% of `--secs`)).
//! - `--rss-pid` (Windows): the *Linux* pid of this Wine process. RSS is read from
//!   `Z:\proc\<pid>\status`; natively on Linux it is read from `/proc/self/status`.
//!   (`Z:\proc\self\status` does not work under Wine 8: files are opened by wineserver, so "self"
//!   is wineserver. `scripts/soak.sh` starts us with `bash -c 'exec … --rss-pid $$'`: wine execs
//!   in place, so that pid is ours.) Without it RSS is reported as 0.
//! - `--exit-when-idle`: end early once clients came and none has been connected for 2 s.
//!
//! What it does with each connection:
//! - echoes what it reads; Level and Oneshot connections read once per readable event, Edge ones
//!   up to `EDGE_READS` times (until `WouldBlock`), then re-arm with `reregister`;
//! - what cannot be written is kept, and the connection switches to WRITABLE only (backpressure)
//!   until it is flushed;
//! - at random (`--chaos`) pauses reading with `Interest::NONE` for 2–50 ms (a one-shot timer per
//!   connection resumes it), switches the connection's mode (Level / Oneshot / Edge), or
//!   deregisters it and registers it again at once under a new token (a zombie for the old
//!   registration; the new one goes through the `\Device\Afd` helper, since the socket stays
//!   associated with the port);
//! - a peer that half-closes (read 0) is flushed and then closed; a reset closes it; every socket
//!   is deregistered before it is closed (the reactor's contract).
//!
//! Checks (each failure is printed and counted; the exit status is 1 if any failed):
//! - at every tick: `stats().registered == connections held + 1` (the listener): states alive =
//!   registered;
//! - no event, in a later poll, for a connection we closed (stale delivery), and no readable or
//!   writable event outside the interest we last registered (after the poll we changed it in);
//! - no resume timer firing for a connection we closed (they are cancelled on close);
//! - `deregister` never fails for a connection we hold;
//! - at the end: one last wake per waker arrives (no wake lost), the reactor counted exactly the
//!   wakes our threads made, zombies drain to 0 with `late_packets == zombies_created`, only the
//!   listener is registered, and teardown leaks nothing.
//!
//! Output: a progress line on stderr every second; at the end `teardown: …` and one line
//! `soak-summary {json}` on stdout.

#[cfg(not(any(windows, target_os = "linux")))]
fn main() {
    eprintln!("soak_server runs on Windows (scripts/soak.sh, under Wine) and Linux");
    std::process::exit(2);
}

#[cfg(any(windows, target_os = "linux"))]
fn main() {
    match soak::run() {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("soak_server: FAILED: some checks failed (see soak-summary)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("soak_server: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(any(windows, target_os = "linux"))]
mod soak {
    #[cfg(target_os = "linux")]
    use afd_reactor::EpollReactor as R;
    #[cfg(windows)]
    use afd_reactor::NtReactor as R;
    use afd_reactor::{Event, Events, Interest, Mode, Stats, Teardown, TimerId, Token};
    use std::collections::{BTreeMap, HashSet};
    use std::io::{self, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    // Tokens: connections count up from 0 and are never reused; the fixed ones sit at the top.
    // Per-connection resume timers use the connection's own token (told apart by `is_timer`).
    const LISTENER: Token = Token(usize::MAX);
    const TICK: Token = Token(usize::MAX - 1);
    const WAKER_BASE: usize = usize::MAX - 16;
    const MAX_WAKERS: usize = 4;

    /// Edge connections read at most this many times per event before re-arming.
    const EDGE_READS: usize = 8;
    /// Read buffer; also bounds what one connection can owe its peer (we stop reading while we do).
    const READ_BUF: usize = 16 * 1024;
    /// Accepts per listener event (level-triggered: the rest are reported again).
    const ACCEPTS_PER_EVENT: usize = 128;
    /// Print at most this many lines per kind of check failure.
    const MAX_FAILURE_LINES: u64 = 10;

    struct Options {
        addr: String,
        secs: u64,
        seed: u64,
        wakers: usize,
        tick: Duration,
        chaos: f64,
        sndbuf: usize,
        expect: usize,
        warmup: Option<Duration>,
        ramp_by: Option<Duration>,
        rss_pid: Option<u32>,
        exit_when_idle: bool,
    }

    const USAGE: &str = "usage: soak_server [--addr IP:PORT] [--secs N] [--seed N] [--wakers 2-4] \
        [--tick-ms N] [--chaos FRACTION] [--sndbuf BYTES] [--expect N] [--warmup SECS] \
        [--ramp-by SECS] [--rss-pid PID] [--exit-when-idle]";

    fn options() -> io::Result<Options> {
        let mut o = Options {
            addr: "127.0.0.1:7300".into(),
            secs: 60,
            seed: 1,
            wakers: 3,
            tick: Duration::from_millis(100),
            chaos: 0.05,
            sndbuf: 32 * 1024,
            expect: 0,
            warmup: None,
            ramp_by: None,
            rss_pid: None,
            exit_when_idle: false,
        };
        let bad =
            |what: String| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}\n{USAGE}"));
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            if a == "--exit-when-idle" {
                o.exit_when_idle = true;
                continue;
            }
            if a == "-h" || a == "--help" {
                return Err(bad("help".into()));
            }
            let v = args
                .next()
                .ok_or_else(|| bad(format!("{a} needs a value")))?;
            let num = |v: &str| -> io::Result<u64> {
                v.parse()
                    .map_err(|_| bad(format!("{a} {v:?}: want a number")))
            };
            match a.as_str() {
                "--addr" => o.addr = v,
                "--secs" => o.secs = num(&v)?,
                "--seed" => o.seed = num(&v)?,
                "--wakers" => o.wakers = (num(&v)? as usize).clamp(2, MAX_WAKERS),
                "--tick-ms" => o.tick = Duration::from_millis(num(&v)?.max(1)),
                "--sndbuf" => o.sndbuf = num(&v)? as usize,
                "--expect" => o.expect = num(&v)? as usize,
                "--warmup" => o.warmup = Some(Duration::from_secs(num(&v)?)),
                "--ramp-by" => o.ramp_by = Some(Duration::from_secs(num(&v)?)),
                "--rss-pid" => o.rss_pid = Some(num(&v)? as u32),
                "--chaos" => {
                    o.chaos = v
                        .parse::<f64>()
                        .ok()
                        .filter(|c| (0.0..=1.0).contains(c))
                        .ok_or_else(|| bad(format!("--chaos {v:?}: want 0..1")))?
                }
                other => return Err(bad(format!("unknown argument {other}"))),
            }
        }
        Ok(o)
    }

    /// splitmix64: small, seedable, good enough to pick actions.
    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed ^ 0x5851_F42D_4C95_7F2D)
        }
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in `lo..=hi`.
        fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next() % (hi - lo + 1)
        }
        /// True with probability `p`.
        fn chance(&mut self, p: f64) -> bool {
            ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
        }
    }

    /// The Linux RSS of this process, in KiB: under Wine, of the Linux pid `pid` (see the module
    /// docs); natively, our own.
    fn rss_kib(pid: Option<u32>) -> u64 {
        let path = if cfg!(windows) {
            let Some(pid) = pid else { return 0 };
            format!(r"Z:\proc\{pid}\status")
        } else {
            "/proc/self/status".to_string()
        };
        let Ok(text) = std::fs::read_to_string(path) else {
            return 0;
        };
        text.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    fn mode_name(m: Mode) -> &'static str {
        match m {
            Mode::Level => "level",
            Mode::Oneshot => "oneshot",
            Mode::Edge => "edge",
        }
    }

    struct Conn {
        stream: TcpStream,
        /// Bytes read but not yet written back.
        pending: Vec<u8>,
        mode: Mode,
        /// The interest last given to the reactor.
        interest: Interest,
        /// The poll number in which `interest` was last changed (events of that poll may still
        /// reflect the previous interest).
        changed_at: u64,
        /// Reading paused (`Interest::NONE`) until this one-shot timer fires.
        paused: Option<TimerId>,
        /// The peer half-closed: flush what we owe, then close.
        read_closed: bool,
    }

    impl Conn {
        /// The interest this connection should have now.
        fn wanted(&self) -> Interest {
            if self.paused.is_some() {
                Interest::NONE
            } else if !self.pending.is_empty() {
                Interest::WRITABLE
            } else if self.read_closed {
                Interest::NONE
            } else {
                Interest::READABLE
            }
        }

        fn can_read(&self) -> bool {
            self.paused.is_none() && self.pending.is_empty() && !self.read_closed
        }
    }

    /// Why a connection was closed.
    #[derive(Clone, Copy)]
    enum Close {
        /// The peer half-closed; we flushed what we owed and closed our side.
        HalfClosed,
        /// A read or write failed (mostly: the peer reset it).
        IoError,
        /// The reactor reported an error event.
        ErrorEvent,
        /// The run ended.
        AtEnd,
    }

    /// Check failures, by kind. Any non-zero value fails the run.
    #[derive(Default)]
    struct Failures {
        registered_mismatch: u64,
        stale_delivered: u64,
        unwanted_events: u64,
        stale_timers: u64,
        deregister_failed: u64,
        register_afresh_failed: u64,
        lost_wakes: u64,
        wake_count_mismatch: u64,
        zombies_left: u64,
        late_packets_mismatch: u64,
        listener_only_at_end: u64,
        teardown_leaked: u64,
        waker_thread_failed: u64,
    }

    impl Failures {
        fn total(&self) -> u64 {
            self.registered_mismatch
                + self.stale_delivered
                + self.unwanted_events
                + self.stale_timers
                + self.deregister_failed
                + self.register_afresh_failed
                + self.lost_wakes
                + self.wake_count_mismatch
                + self.zombies_left
                + self.late_packets_mismatch
                + self.listener_only_at_end
                + self.teardown_leaked
                + self.waker_thread_failed
        }
    }

    /// Print a check failure (the first few of each kind) and count it.
    fn fail(counter: &mut u64, what: std::fmt::Arguments<'_>) {
        *counter += 1;
        if *counter <= MAX_FAILURE_LINES {
            eprintln!("[soak-server] CHECK FAILED: {what}");
        }
    }

    #[derive(Default)]
    struct Counters {
        accepted: u64,
        accept_errors: u64,
        register_errors: u64,
        conns_max: usize,
        closed_half: u64,
        closed_io_error: u64,
        closed_error_event: u64,
        closed_at_end: u64,
        /// Events for a connection closed earlier in the same poll's batch (legitimate).
        late_in_batch: u64,
        backpressure: u64,
        pauses: u64,
        resumes: u64,
        registered_afresh: u64,
        mode_switches: [u64; 3],
        accepted_by_mode: [u64; 3],
        bytes_echoed: u64,
        /// Events carrying AFD_POLL_ABORT (the peer reset the connection).
        abort_events: u64,
        /// Reads that returned 0 (EOF) after an ABORT event: a reset seen as a graceful close.
        reset_read_as_eof: u64,
        wake_events: [u64; MAX_WAKERS],
        checks: u64,
        zombies_max: usize,
    }

    fn mode_index(m: Mode) -> usize {
        match m {
            Mode::Level => 0,
            Mode::Oneshot => 1,
            Mode::Edge => 2,
        }
    }

    /// RSS samples: the baseline after warm-up, and the last one of the steady state.
    #[derive(Default)]
    struct Rss {
        start_kib: u64,
        start_at: Option<Duration>,
        /// Connections held when the baseline was taken.
        start_conns: usize,
        /// The last sample taken while at least 90% of `start_conns` were still held.
        end_kib: u64,
        max_kib: u64,
        slots_start: usize,
    }

    /// The waker threads: each calls its own `Waker` at random intervals until told to stop.
    struct WakerThreads {
        stop: Arc<AtomicBool>,
        calls: Arc<AtomicU64>,
        errors: Arc<AtomicU64>,
        handles: Vec<JoinHandle<()>>,
    }

    fn spawn_wakers(
        reactor: &mut R,
        n: usize,
        seed: u64,
    ) -> io::Result<(WakerThreads, Vec<afd_reactor::Waker>)> {
        let mut t = WakerThreads {
            stop: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(AtomicU64::new(0)),
            handles: Vec::new(),
        };
        let mut kept = Vec::new();
        for i in 0..n {
            let waker = reactor.waker(Token(WAKER_BASE + i))?;
            kept.push(waker.clone());
            let (stop, calls, errors) = (t.stop.clone(), t.calls.clone(), t.errors.clone());
            let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(i as u64 + 1));
            let handle = std::thread::Builder::new()
                .name(format!("waker-{i}"))
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(rng.range(1, 20)));
                        calls.fetch_add(1, Ordering::Relaxed);
                        if waker.wake().is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })?;
            t.handles.push(handle);
        }
        Ok((t, kept))
    }

    pub fn run() -> io::Result<bool> {
        let o = options()?;
        let mut reactor = R::new()?;
        let listener = TcpListener::bind(&o.addr)?;
        listener.set_nonblocking(true)?;
        reactor.register(&listener, LISTENER, Interest::READABLE)?;
        println!("listening on {}", listener.local_addr()?);
        reactor.add_timer(TICK, o.tick, Some(o.tick))?;
        let (wakers, kept_wakers) = spawn_wakers(&mut reactor, o.wakers, o.seed)?;

        let mut s = Soak {
            rng: Rng::new(o.seed),
            reactor,
            listener,
            conns: BTreeMap::new(),
            next_id: 0,
            buf: vec![0; READ_BUF],
            poll_no: 0,
            closed_this_poll: HashSet::new(),
            c: Counters::default(),
            f: Failures::default(),
            rss: Rss::default(),
            start: Instant::now(),
            ramp_at: None,
            o,
        };
        let rss_at_start = rss_kib(s.o.rss_pid);
        s.rss.max_kib = rss_at_start;
        s.main_loop()?;
        s.finish(wakers, kept_wakers, rss_at_start)
    }

    struct Soak {
        o: Options,
        rng: Rng,
        reactor: R,
        listener: TcpListener,
        /// Every connection we hold, each registered under `Token(id)`.
        conns: BTreeMap<usize, Conn>,
        next_id: usize,
        buf: Vec<u8>,
        /// Incremented per `poll` call.
        poll_no: u64,
        /// Connections closed while handling the current poll's events.
        closed_this_poll: HashSet<usize>,
        c: Counters,
        f: Failures,
        rss: Rss,
        start: Instant,
        /// When the connection count first reached 95% of `--expect`.
        ramp_at: Option<Instant>,
    }

    impl Soak {
        fn main_loop(&mut self) -> io::Result<()> {
            let deadline = self.start + Duration::from_secs(self.o.secs);
            let mut events = Events::with_capacity(1024);
            let mut last_second = (Instant::now(), self.reactor.stats());
            let mut idle_since: Option<Instant> = None;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                self.reactor.poll(
                    &mut events,
                    Some((deadline - now).min(Duration::from_millis(500))),
                )?;
                self.poll_no += 1;
                self.closed_this_poll.clear();
                for event in events.iter() {
                    let token = event.token();
                    if token == TICK && event.is_timer() {
                        self.on_tick()?;
                        // The progress line rides on the tick, once a second.
                        if last_second.0.elapsed() >= Duration::from_secs(1) {
                            self.progress(&mut last_second);
                        }
                    } else if event.is_wake() {
                        let i = token.0.wrapping_sub(WAKER_BASE);
                        if let Some(n) = self.c.wake_events.get_mut(i) {
                            *n += 1;
                        }
                    } else if token == LISTENER {
                        self.accept_some()?;
                    } else if event.is_timer() {
                        self.on_resume_timer(token.0)?;
                    } else {
                        self.on_socket_event(token.0, event)?;
                    }
                }
                if self.o.exit_when_idle && self.c.accepted > 0 && self.conns.is_empty() {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= Duration::from_secs(2) {
                        eprintln!("[soak-server] every client has gone: ending early");
                        break;
                    }
                } else {
                    idle_since = None;
                }
            }
            Ok(())
        }

        fn accept_some(&mut self) -> io::Result<()> {
            for _ in 0..ACCEPTS_PER_EVENT {
                let stream = match self.listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // E.g. a connection reset before we took it, or out of descriptors:
                        // count it and try again on the next (level-triggered) event.
                        self.c.accept_errors += 1;
                        if self.c.accept_errors <= MAX_FAILURE_LINES {
                            eprintln!("[soak-server] accept: {e}");
                        }
                        return Ok(());
                    }
                };
                self.c.accepted += 1;
                let id = self.next_id;
                self.next_id += 1;
                let mode = match self.rng.range(0, 9) {
                    0..=5 => Mode::Level,
                    6 | 7 => Mode::Oneshot,
                    _ => Mode::Edge,
                };
                let setup = stream
                    .set_nonblocking(true)
                    .and_then(|()| stream.set_nodelay(true))
                    .and_then(|()| {
                        if self.o.sndbuf > 0 {
                            socket2::SockRef::from(&stream).set_send_buffer_size(self.o.sndbuf)
                        } else {
                            Ok(())
                        }
                    })
                    .and_then(|()| {
                        self.reactor.register_with_mode(
                            &stream,
                            Token(id),
                            Interest::READABLE,
                            mode,
                        )
                    });
                if let Err(e) = setup {
                    // Never registered: closing it needs no deregister.
                    self.c.register_errors += 1;
                    if self.c.register_errors <= MAX_FAILURE_LINES {
                        eprintln!("[soak-server] setting up an accepted socket: {e}");
                    }
                    continue;
                }
                self.c.accepted_by_mode[mode_index(mode)] += 1;
                self.conns.insert(
                    id,
                    Conn {
                        stream,
                        pending: Vec::new(),
                        mode,
                        interest: Interest::READABLE,
                        changed_at: self.poll_no,
                        paused: None,
                        read_closed: false,
                    },
                );
                self.c.conns_max = self.c.conns_max.max(self.conns.len());
            }
            Ok(())
        }

        /// A token we do not hold got an event: fine if we closed it while handling this very
        /// poll's batch, a stale delivery otherwise.
        fn unknown_token(&mut self, id: usize, what: &str) {
            if self.closed_this_poll.contains(&id) {
                self.c.late_in_batch += 1;
            } else if what == "timer" {
                fail(
                    &mut self.f.stale_timers,
                    format_args!("timer event for connection {id}, closed in an earlier poll"),
                );
            } else {
                fail(
                    &mut self.f.stale_delivered,
                    format_args!("{what} for connection {id}, closed in an earlier poll"),
                );
            }
        }

        fn on_socket_event(&mut self, id: usize, event: &Event) -> io::Result<()> {
            let poll_no = self.poll_no;
            let Some(conn) = self.conns.get_mut(&id) else {
                self.unknown_token(id, &format!("{event:?}"));
                return Ok(());
            };
            if conn.changed_at < poll_no
                && ((event.is_readable() && !conn.interest.is_readable())
                    || (event.is_writable() && !conn.interest.is_writable()))
            {
                fail(
                    &mut self.f.unwanted_events,
                    format_args!(
                        "{event:?} for connection {id} registered for {} ({})",
                        interest_name(conn.interest),
                        mode_name(conn.mode)
                    ),
                );
            }
            let outcome = handle_event(conn, event, &mut self.buf, &mut self.c);
            match outcome {
                Some(why) => self.close(id, why),
                None => rearm(&mut self.reactor, id, conn, poll_no, false),
            }
        }

        fn on_resume_timer(&mut self, id: usize) -> io::Result<()> {
            let poll_no = self.poll_no;
            let Some(conn) = self.conns.get_mut(&id) else {
                self.unknown_token(id, "timer");
                return Ok(());
            };
            if conn.paused.take().is_some() {
                self.c.resumes += 1;
                rearm(&mut self.reactor, id, conn, poll_no, true)?;
            }
            Ok(())
        }

        /// Deregister, then close (the reactor's contract).
        fn close(&mut self, id: usize, why: Close) -> io::Result<()> {
            let Some(conn) = self.conns.remove(&id) else {
                return Ok(());
            };
            if let Some(timer) = conn.paused {
                self.reactor.cancel_timer(timer);
            }
            if let Err(e) = self.reactor.deregister(&conn.stream) {
                fail(
                    &mut self.f.deregister_failed,
                    format_args!("deregister of connection {id}: {e}"),
                );
            }
            drop(conn);
            self.closed_this_poll.insert(id);
            match why {
                Close::HalfClosed => self.c.closed_half += 1,
                Close::IoError => self.c.closed_io_error += 1,
                Close::ErrorEvent => self.c.closed_error_event += 1,
                Close::AtEnd => self.c.closed_at_end += 1,
            }
            Ok(())
        }

        /// The repeating timer: the registered-vs-alive check, then random interest/mode changes.
        fn on_tick(&mut self) -> io::Result<()> {
            let st = self.reactor.stats();
            self.c.checks += 1;
            self.c.zombies_max = self.c.zombies_max.max(st.zombies);
            if st.registered != self.conns.len() + 1 {
                fail(
                    &mut self.f.registered_mismatch,
                    format_args!(
                        "at {:.1}s the reactor has {} registrations, we hold {} connections + 1 listener",
                        self.start.elapsed().as_secs_f64(),
                        st.registered,
                        self.conns.len()
                    ),
                );
            }
            let p = self.o.chaos * self.o.tick.as_secs_f64();
            let poll_no = self.poll_no;
            let mut fresh = Vec::new();
            for (&id, conn) in self.conns.iter_mut() {
                if !self.rng.chance(p) {
                    continue;
                }
                let r = self.rng.range(0, 9);
                if r < 2 {
                    fresh.push(id); // below: the map cannot change while we iterate it
                } else if r < 5 {
                    if conn.paused.is_none() && !conn.read_closed {
                        let pause = Duration::from_millis(self.rng.range(2, 50));
                        conn.paused = Some(self.reactor.add_timer(Token(id), pause, None)?);
                        self.c.pauses += 1;
                        rearm(&mut self.reactor, id, conn, poll_no, true)?;
                    }
                } else {
                    let others = match conn.mode {
                        Mode::Level => [Mode::Oneshot, Mode::Edge],
                        Mode::Oneshot => [Mode::Level, Mode::Edge],
                        Mode::Edge => [Mode::Level, Mode::Oneshot],
                    };
                    conn.mode = others[self.rng.range(0, 1) as usize];
                    self.c.mode_switches[mode_index(conn.mode)] += 1;
                    rearm(&mut self.reactor, id, conn, poll_no, true)?;
                }
            }
            for id in fresh {
                self.register_afresh(id);
            }
            Ok(())
        }

        /// Deregister a connection and register it again at once, under a new token. Its pending
        /// poll is cancelled, so the old registration lives on as a zombie until the cancelled
        /// poll's packet arrives; the socket is still associated with the completion port, so the
        /// new registration goes through the reactor's `\Device\Afd` helper. No event may reach
        /// the old token after this poll.
        fn register_afresh(&mut self, id: usize) {
            let Some(mut conn) = self.conns.remove(&id) else {
                return;
            };
            if let Some(timer) = conn.paused.take() {
                self.reactor.cancel_timer(timer);
            }
            if let Err(e) = self.reactor.deregister(&conn.stream) {
                fail(
                    &mut self.f.deregister_failed,
                    format_args!("deregister of connection {id} (to register it afresh): {e}"),
                );
            }
            self.closed_this_poll.insert(id);
            let new_id = self.next_id;
            self.next_id += 1;
            let want = conn.wanted();
            match self
                .reactor
                .register_with_mode(&conn.stream, Token(new_id), want, conn.mode)
            {
                Ok(()) => {
                    self.c.registered_afresh += 1;
                    conn.interest = want;
                    conn.changed_at = self.poll_no;
                    self.conns.insert(new_id, conn);
                }
                Err(e) => {
                    // Not registered any more: closing it needs no deregister. The peer will see
                    // it closed, which it counts as a failure: so this is one too.
                    fail(
                        &mut self.f.register_afresh_failed,
                        format_args!("registering connection {id} afresh as {new_id}: {e}"),
                    );
                }
            }
        }

        /// Once a second: RSS sample (warm-up bookkeeping) and the progress line.
        fn progress(&mut self, last: &mut (Instant, Stats)) {
            let now = Instant::now();
            let st = self.reactor.stats();
            let rss = rss_kib(self.o.rss_pid);
            self.rss.max_kib = self.rss.max_kib.max(rss);
            self.sample_rss(rss, &st);
            let secs = (now - last.0).as_secs_f64().max(1e-6);
            let ev_rate = (st.events - last.1.events) as f64 / secs;
            let wake_events: u64 = self.c.wake_events.iter().sum();
            eprintln!(
                "[soak-server] {:>6.1}s conns {:>5} events/s {:>6.0} stale {:>5} registered {:>5} \
                 alive {:>5}+1 zombies {:>4} wakes {}/{} rss {} KiB",
                self.start.elapsed().as_secs_f64(),
                self.conns.len(),
                ev_rate,
                st.stale_discarded,
                st.registered,
                self.conns.len(),
                st.zombies,
                wake_events,
                st.wakes,
                rss,
            );
            *last = (now, st);
        }

        /// RSS baseline after the warm-up, then the last steady-state sample.
        fn sample_rss(&mut self, rss: u64, st: &Stats) {
            let elapsed = self.start.elapsed();
            let run = Duration::from_secs(self.o.secs);
            let warmup = self
                .o
                .warmup
                .unwrap_or_else(|| (run / 10).max(Duration::from_secs(2)));
            let n = self.conns.len();
            if self.ramp_at.is_none() && n * 100 >= self.o.expect * 95 && n > 0 {
                self.ramp_at = Some(Instant::now());
            }
            if self.rss.start_at.is_none() {
                // Warm-up counts from the end of the connection ramp (or from the start if the
                // ramp never completes within half the run).
                let from = match self.ramp_at {
                    Some(t) => t.duration_since(self.start),
                    None if elapsed >= self.o.ramp_by.unwrap_or(run / 2) => elapsed,
                    None => return,
                };
                if elapsed >= from + warmup && rss > 0 {
                    self.rss.start_kib = rss;
                    self.rss.start_at = Some(elapsed);
                    self.rss.start_conns = n;
                    self.rss.end_kib = rss;
                    self.rss.slots_start = st.slots;
                }
            } else if n * 10 >= self.rss.start_conns * 9 {
                self.rss.end_kib = rss;
            }
        }

        /// End of the run: close everything, stop the wakers and check that nothing is left.
        fn finish(
            mut self,
            wakers: WakerThreads,
            kept_wakers: Vec<afd_reactor::Waker>,
            rss_at_start: u64,
        ) -> io::Result<bool> {
            let duration = self.start.elapsed();
            let conns_at_end = self.conns.len();
            let ids: Vec<usize> = self.conns.keys().copied().collect();
            for id in ids {
                self.close(id, Close::AtEnd)?;
            }
            let rss_before_teardown = rss_kib(self.o.rss_pid);

            // Stop the waker threads, then send one last wake per waker: each must arrive.
            wakers.stop.store(true, Ordering::Relaxed);
            for h in wakers.handles {
                if h.join().is_err() {
                    fail(
                        &mut self.f.waker_thread_failed,
                        format_args!("a waker thread panicked"),
                    );
                }
            }
            let mut final_wake = vec![false; kept_wakers.len()];
            for w in &kept_wakers {
                w.wake()?;
            }
            let wake_calls = wakers.calls.load(Ordering::Relaxed) + kept_wakers.len() as u64;

            // Drain: the final wakes, and every zombie's last packet (bounded). Every connection
            // was deregistered before this point, so any connection event from here on is stale.
            self.closed_this_poll.clear();
            let mut events = Events::with_capacity(1024);
            let bound = Instant::now() + Duration::from_secs(5);
            loop {
                let zombies = self.reactor.stats().zombies;
                if (final_wake.iter().all(|&w| w) && zombies == 0) || Instant::now() >= bound {
                    break;
                }
                self.reactor
                    .poll(&mut events, Some(Duration::from_millis(50)))?;
                self.poll_no += 1;
                for event in events.iter() {
                    let i = event.token().0.wrapping_sub(WAKER_BASE);
                    if event.is_wake() && i < final_wake.len() {
                        final_wake[i] = true;
                        self.c.wake_events[i] += 1;
                    } else if event.token() != LISTENER && event.token() != TICK {
                        // No connection is left: any connection event now is stale.
                        self.unknown_token(event.token().0, &format!("{event:?}"));
                    }
                }
            }
            for (i, got) in final_wake.iter().enumerate() {
                if !got {
                    fail(
                        &mut self.f.lost_wakes,
                        format_args!("the last wake of waker {i} never arrived"),
                    );
                }
            }

            let st = self.reactor.stats();
            if st.wakes != wake_calls {
                fail(
                    &mut self.f.wake_count_mismatch,
                    format_args!(
                        "the reactor counted {} wakes, our threads made {wake_calls}",
                        st.wakes
                    ),
                );
            }
            if st.registered != 1 {
                fail(
                    &mut self.f.listener_only_at_end,
                    format_args!(
                        "{} registrations left after closing every connection (want 1: the listener)",
                        st.registered
                    ),
                );
            }
            if st.zombies != 0 {
                fail(
                    &mut self.f.zombies_left,
                    format_args!("{} zombies left after 5 s of draining", st.zombies),
                );
            }
            if st.zombies == 0 && st.late_packets != st.zombies_created {
                fail(
                    &mut self.f.late_packets_mismatch,
                    format_args!(
                        "{} zombies created but {} late packets",
                        st.zombies_created, st.late_packets
                    ),
                );
            }

            if let Err(e) = self.reactor.deregister(&self.listener) {
                fail(
                    &mut self.f.deregister_failed,
                    format_args!("deregister of the listener: {e}"),
                );
            }
            let teardown = match self.reactor.shutdown() {
                Ok(report) => report,
                Err(e) => {
                    let report = e
                        .get_ref()
                        .and_then(|r| r.downcast_ref::<Teardown>())
                        .copied();
                    match report {
                        Some(report) => report,
                        None => return Err(e),
                    }
                }
            };
            if teardown.leaked > 0 {
                fail(
                    &mut self.f.teardown_leaked,
                    format_args!("teardown: {teardown}"),
                );
            }
            println!("teardown: {teardown}");
            let end = self.reactor.stats();
            self.print_summary(
                &end,
                &teardown,
                duration,
                conns_at_end,
                wake_calls,
                rss_at_start,
                rss_before_teardown,
                wakers.errors.load(Ordering::Relaxed),
            );
            Ok(self.f.total() == 0)
        }

        #[allow(clippy::too_many_arguments)]
        fn print_summary(
            &self,
            st: &Stats,
            teardown: &Teardown,
            duration: Duration,
            conns_at_end: usize,
            wake_calls: u64,
            rss_at_start: u64,
            rss_final: u64,
            wake_errors: u64,
        ) {
            let (c, f, r) = (&self.c, &self.f, &self.rss);
            let growth = if r.start_kib > 0 {
                (r.end_kib as f64 - r.start_kib as f64) * 100.0 / r.start_kib as f64
            } else {
                0.0
            };
            let nt = &st.nt;
            let fields: Vec<(&str, String)> = vec![
                ("duration_secs", format!("{:.3}", duration.as_secs_f64())),
                ("seed", self.o.seed.to_string()),
                ("connections_max", c.conns_max.to_string()),
                ("connections_at_end", conns_at_end.to_string()),
                ("accepted_total", c.accepted.to_string()),
                ("accepted_level", c.accepted_by_mode[0].to_string()),
                ("accepted_oneshot", c.accepted_by_mode[1].to_string()),
                ("accepted_edge", c.accepted_by_mode[2].to_string()),
                ("accept_errors", c.accept_errors.to_string()),
                ("register_errors", c.register_errors.to_string()),
                ("closed_half_close", c.closed_half.to_string()),
                ("closed_io_error", c.closed_io_error.to_string()),
                ("closed_error_event", c.closed_error_event.to_string()),
                ("closed_at_end", c.closed_at_end.to_string()),
                ("bytes_echoed", c.bytes_echoed.to_string()),
                ("backpressure", c.backpressure.to_string()),
                ("abort_events", c.abort_events.to_string()),
                ("reset_read_as_eof", c.reset_read_as_eof.to_string()),
                ("pauses", c.pauses.to_string()),
                ("resumes", c.resumes.to_string()),
                ("registered_afresh", c.registered_afresh.to_string()),
                ("to_level", c.mode_switches[0].to_string()),
                ("to_oneshot", c.mode_switches[1].to_string()),
                ("to_edge", c.mode_switches[2].to_string()),
                ("events", st.events.to_string()),
                (
                    "events_per_sec",
                    format!("{:.0}", st.events as f64 / duration.as_secs_f64().max(1e-6)),
                ),
                ("packets", st.packets.to_string()),
                ("stale_discarded", st.stale_discarded.to_string()),
                ("misrouted", st.misrouted.to_string()),
                ("closed_cleanups", st.closed_cleanups.to_string()),
                ("submit_failures", st.submit_failures.to_string()),
                ("late_in_batch", c.late_in_batch.to_string()),
                ("zombies_max", c.zombies_max.to_string()),
                ("zombies_created", st.zombies_created.to_string()),
                ("late_packets", st.late_packets.to_string()),
                ("slots_start", r.slots_start.to_string()),
                ("slots_end", st.slots.to_string()),
                ("checks", c.checks.to_string()),
                ("check_failures", f.total().to_string()),
                (
                    "fail_registered_mismatch",
                    f.registered_mismatch.to_string(),
                ),
                ("fail_stale_delivered", f.stale_delivered.to_string()),
                ("fail_unwanted_events", f.unwanted_events.to_string()),
                ("fail_stale_timers", f.stale_timers.to_string()),
                ("fail_deregister", f.deregister_failed.to_string()),
                ("fail_register_afresh", f.register_afresh_failed.to_string()),
                ("fail_lost_wakes", f.lost_wakes.to_string()),
                ("fail_wake_count", f.wake_count_mismatch.to_string()),
                ("fail_zombies_left", f.zombies_left.to_string()),
                ("fail_late_packets", f.late_packets_mismatch.to_string()),
                ("fail_listener_only", f.listener_only_at_end.to_string()),
                ("fail_teardown_leaked", f.teardown_leaked.to_string()),
                ("fail_waker_thread", f.waker_thread_failed.to_string()),
                ("rss_at_launch_kib", rss_at_start.to_string()),
                ("rss_start_kib", r.start_kib.to_string()),
                (
                    "rss_start_at_secs",
                    format!("{:.1}", r.start_at.map_or(0.0, |d| d.as_secs_f64())),
                ),
                ("rss_start_conns", r.start_conns.to_string()),
                ("rss_end_kib", r.end_kib.to_string()),
                ("rss_growth_pct", format!("{growth:.2}")),
                ("rss_max_kib", r.max_kib.to_string()),
                ("rss_final_kib", rss_final.to_string()),
                ("nt_submit", nt.submit.to_string()),
                ("nt_cancel", nt.cancel.to_string()),
                ("nt_dequeue", nt.dequeue.to_string()),
                ("nt_associate", nt.associate.to_string()),
                ("nt_base_socket", nt.base_socket.to_string()),
                ("nt_post", nt.post.to_string()),
                ("nt_total", nt.total().to_string()),
                ("wakes_called", wake_calls.to_string()),
                ("wakes_counted_by_reactor", st.wakes.to_string()),
                ("wake_errors", wake_errors.to_string()),
                ("wake_events", c.wake_events.iter().sum::<u64>().to_string()),
                ("teardown_cancelled", teardown.cancelled.to_string()),
                ("teardown_drained", teardown.drained.to_string()),
                ("teardown_leaked", teardown.leaked.to_string()),
                (
                    "teardown_ms",
                    format!("{:.3}", teardown.elapsed.as_secs_f64() * 1e3),
                ),
            ];
            let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            println!("soak-summary {{{}}}", body.join(","));
        }
    }

    fn interest_name(i: Interest) -> &'static str {
        match (i.is_readable(), i.is_writable()) {
            (true, true) => "READABLE|WRITABLE",
            (true, false) => "READABLE",
            (false, true) => "WRITABLE",
            (false, false) => "NONE",
        }
    }

    /// Handle one readiness event; returns why to close the connection, if it must be.
    fn handle_event(
        conn: &mut Conn,
        event: &Event,
        buf: &mut [u8],
        c: &mut Counters,
    ) -> Option<Close> {
        if event.is_error() {
            return Some(Close::ErrorEvent);
        }
        if event.is_write_closed() {
            c.abort_events += 1;
        }
        if event.is_writable() && !conn.pending.is_empty() && !flush(conn) {
            return Some(Close::IoError);
        }
        if event.is_readable() && conn.can_read() {
            // Level and Oneshot: one read per event (the condition is reported again if data is
            // left). Edge: read on, up to EDGE_READS, and stop at WouldBlock.
            let reads = if conn.mode == Mode::Edge {
                EDGE_READS
            } else {
                1
            };
            for _ in 0..reads {
                match conn.stream.read(buf) {
                    Ok(0) => {
                        if event.is_write_closed() {
                            c.reset_read_as_eof += 1;
                        }
                        conn.read_closed = true;
                        break;
                    }
                    Ok(n) => {
                        c.bytes_echoed += n as u64;
                        if !write_or_keep(conn, &buf[..n]) {
                            return Some(Close::IoError);
                        }
                        if !conn.pending.is_empty() {
                            c.backpressure += 1;
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Some(Close::IoError),
                }
            }
        }
        if conn.read_closed && conn.pending.is_empty() {
            return Some(Close::HalfClosed);
        }
        None
    }

    /// Give the reactor the interest the connection wants now. Level registrations are only
    /// touched when the interest changes; Oneshot and Edge ones are re-armed after every event
    /// (`force` re-arms whatever the mode, e.g. after a mode switch).
    fn rearm(
        reactor: &mut R,
        id: usize,
        conn: &mut Conn,
        poll_no: u64,
        force: bool,
    ) -> io::Result<()> {
        let want = conn.wanted();
        if force || conn.mode != Mode::Level || want != conn.interest {
            reactor.reregister_with_mode(&conn.stream, Token(id), want, conn.mode)?;
            if want != conn.interest {
                conn.interest = want;
                conn.changed_at = poll_no;
            }
        }
        Ok(())
    }

    /// Write `data`, keeping what the socket would not take. False if the connection failed.
    fn write_or_keep(conn: &mut Conn, data: &[u8]) -> bool {
        if !conn.pending.is_empty() {
            conn.pending.extend_from_slice(data);
            return true;
        }
        let mut off = 0;
        while off < data.len() {
            match conn.stream.write(&data[off..]) {
                Ok(0) => return false,
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.pending.extend_from_slice(&data[off..]);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Send what we owe, until done or `WouldBlock`. False if the connection failed.
    fn flush(conn: &mut Conn) -> bool {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        // Give the buffer back: with thousands of connections, capacities kept from past
        // backpressure would look like growth.
        conn.pending = Vec::new();
        true
    }
}
