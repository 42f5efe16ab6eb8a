//! The load generator proper (Linux only): one thread, one mio `Poll` (epoll, edge-triggered).
//!
//! 1. Connect phase: open the connections a window at a time, retrying failed (e.g. refused)
//!    connects until `--connect-timeout`. A connection counts as established once its TCP
//!    handshake is done *and* one warm-up echo has come back, which proves the server has
//!    `accept()`ed it; only then does it leave the window and let the next connect start.
//!    So we never have more than `CONNECT_WINDOW` connections sitting in the server's accept
//!    backlog, however slowly the server accepts.
//! 2. Measuring phase: every connection runs a closed loop: write one message, read the whole
//!    echo back, compare it byte for byte, record the round-trip time, write the next.
//! 3. Close every connection (plain close) and return the figures.

use std::collections::VecDeque;
use std::io::{self, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::{Config, Histogram, Summary};

/// At most this many connections are being set up (handshake + warm-up echo) at once.
const CONNECT_WINDOW: usize = 64;
/// How long to wait before retrying a failed connect attempt.
const RETRY_DELAY: Duration = Duration::from_millis(100);
/// File descriptors needed besides the sockets: stdio, the epoll fd, the JSON file, slack.
const SPARE_FDS: u64 = 32;

/// Runs the whole load test and returns its figures. Progress goes to stderr.
///
/// Fails if the file-descriptor limit cannot cover the connections or if not a single
/// connection could be established before `cfg.connect_timeout`.
pub fn run(cfg: Config) -> io::Result<Summary> {
    raise_fd_limit(cfg.connections, SPARE_FDS)?;
    let mut poll = Poll::new()?;
    let mut errs = Errors::default();

    let (mut conns, connect_time) = connect_all(&mut poll, &cfg, &mut errs)?;
    let connected = conns.iter().flatten().count();

    let mut hist = Histogram::new();
    let (echoes, duration) = measure(&mut poll, &mut conns, &cfg, &mut errs, &mut hist)?;
    let open_at_end = conns.iter().flatten().count();

    // Plain close: dropping a mio TcpStream closes the socket (and removes it from epoll).
    drop(conns);

    let secs = duration.as_secs_f64();
    Ok(Summary {
        addr: cfg.addr,
        size: cfg.size,
        connections: cfg.connections,
        connected,
        open_at_end,
        connect_time,
        duration,
        echoes,
        echoes_per_sec: if secs > 0.0 {
            echoes as f64 / secs
        } else {
            0.0
        },
        rtt_p50_us: hist.percentile(50.0),
        rtt_p90_us: hist.percentile(90.0),
        rtt_p99_us: hist.percentile(99.0),
        rtt_max_us: hist.max(),
        connect_failures: (cfg.connections - connected) as u64,
        connect_retries: errs.connect_retries,
        resets: errs.resets,
        eof: errs.eof,
        io_errors: errs.io_errors,
        mismatches: errs.mismatches,
    })
}

/// Error counters gathered during the run.
#[derive(Default)]
struct Errors {
    connect_retries: u64,
    resets: u64,
    eof: u64,
    io_errors: u64,
    mismatches: u64,
}

impl Errors {
    /// Counts an error that ended an established connection.
    fn count_lost(&mut self, e: &io::Error) {
        match e.kind() {
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe => self.resets += 1,
            io::ErrorKind::UnexpectedEof => self.eof += 1,
            _ => self.io_errors += 1,
        }
    }
}

/// Makes sure the soft RLIMIT_NOFILE covers the connections plus `spare` descriptors, raising it
/// up to the hard limit.
pub(crate) fn raise_fd_limit(connections: usize, spare: u64) -> io::Result<()> {
    let need = connections as u64 + spare;
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft >= need {
        return Ok(());
    }
    let soft = rlimit::increase_nofile_limit(u64::MAX)?;
    if soft < need {
        return Err(io::Error::other(format!(
            "{connections} connections need about {need} file descriptors, but the hard limit \
             (RLIMIT_NOFILE) is {hard}; raise it (ulimit -Hn) or use fewer connections"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One connection and its echo exchange.

/// An open connection and the message currently in flight on it.
struct Conn {
    stream: TcpStream,
    /// Index of the connection (also its mio token); part of every message.
    id: u32,
    /// Sequence number of the message in flight; part of every message.
    seq: u64,
    /// The message in flight, and how much of it has been written.
    sent: Vec<u8>,
    written: usize,
    /// The echo so far, and how much of it has been read.
    recv: Vec<u8>,
    read: usize,
    /// When the message in flight was started.
    started: Instant,
}

/// What `Conn::drive` achieved.
enum Step {
    /// Must wait for the socket to become readable or writable again.
    Blocked,
    /// The whole echo is back.
    Echoed { rtt: Duration, matched: bool },
}

impl Conn {
    fn new(stream: TcpStream, id: usize, size: usize) -> Self {
        Conn {
            stream,
            id: id as u32,
            seq: 0,
            sent: vec![0; size],
            written: 0,
            recv: vec![0; size],
            read: 0,
            started: Instant::now(),
        }
    }

    /// Starts the next message (call `drive` to send it).
    fn start_next(&mut self) {
        self.seq += 1;
        fill_message(&mut self.sent, self.id, self.seq);
        self.written = 0;
        self.read = 0;
        self.started = Instant::now();
    }

    /// Moves the exchange in flight forward as far as the socket allows without blocking.
    ///
    /// Writing and reading interleave, so a message bigger than the socket buffers cannot
    /// deadlock. We never read more than we have written, so bytes the server sends beyond the
    /// echo stay in the socket and show up as a mismatch on the next message.
    ///
    /// Edge-triggered readiness: each loop ends either at its goal or at `WouldBlock`, which
    /// guarantees a later event. `Blocked` with `read == written < len` only happens after the
    /// write loop hit `WouldBlock`, so a writable event will come.
    fn drive(&mut self) -> io::Result<Step> {
        while self.written < self.sent.len() {
            match self.stream.write(&self.sent[self.written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        while self.read < self.written {
            match self.stream.read(&mut self.recv[self.read..self.written]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
                Ok(n) => self.read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.read < self.sent.len() {
            return Ok(Step::Blocked);
        }
        Ok(Step::Echoed {
            rtt: self.started.elapsed(),
            matched: self.recv == self.sent,
        })
    }
}

/// Message contents: the sequence number (8 bytes, little-endian) and the connection id
/// (4 bytes), then a filler that depends on both, all cut to the message size. Consecutive
/// messages on a connection always differ, so a stale or repeated echo is caught too.
fn fill_message(buf: &mut [u8], id: u32, seq: u64) {
    let mut header = [0u8; 12];
    header[..8].copy_from_slice(&seq.to_le_bytes());
    header[8..].copy_from_slice(&id.to_le_bytes());
    for (i, b) in buf.iter_mut().enumerate() {
        *b = match header.get(i) {
            Some(&h) => h,
            None => (seq as u8).wrapping_add(i as u8) ^ (id as u8),
        };
    }
}

// ---------------------------------------------------------------------------------------------
// Connect phase.

/// Where each connection is in the connect phase.
enum Slot {
    /// Not started yet, waiting to retry, or given up.
    Idle,
    /// Non-blocking connect in progress.
    Connecting(TcpStream),
    /// Connected; the warm-up echo is in flight.
    WarmingUp(Conn),
    /// Established (warm-up echo verified).
    Ready(Conn),
}

/// State of the connect phase.
struct Connector {
    addr: SocketAddr,
    size: usize,
    slots: Vec<Slot>,
    /// Slots waiting to retry, with when; ordered by time since the delay is constant.
    retries: VecDeque<(Instant, usize)>,
    /// Slots started (including those waiting to retry) but not yet ready.
    in_window: usize,
    ready: usize,
    last_error: Option<io::Error>,
}

impl Connector {
    /// Starts a non-blocking connect for slot `i`.
    fn start(&mut self, registry: &Registry, i: usize, errs: &mut Errors) {
        let attempt = TcpStream::connect(self.addr).and_then(|mut s| {
            registry.register(&mut s, Token(i), Interest::READABLE | Interest::WRITABLE)?;
            Ok(s)
        });
        match attempt {
            Ok(s) => self.slots[i] = Slot::Connecting(s),
            Err(e) => self.retry_later(i, e, errs),
        }
    }

    /// Drops slot `i`'s attempt (closing its socket) and schedules another one.
    fn retry_later(&mut self, i: usize, e: io::Error, errs: &mut Errors) {
        errs.connect_retries += 1;
        self.last_error = Some(e);
        self.slots[i] = Slot::Idle;
        self.retries.push_back((Instant::now() + RETRY_DELAY, i));
    }

    /// Handles a readiness event for slot `i`.
    fn on_event(&mut self, i: usize, errs: &mut Errors) {
        match std::mem::replace(&mut self.slots[i], Slot::Idle) {
            Slot::Idle => {} // a late event for an attempt already dropped
            Slot::Connecting(s) => match handshake_done(&s) {
                Ok(false) => self.slots[i] = Slot::Connecting(s),
                Ok(true) => {
                    let mut conn = Conn::new(s, i, self.size);
                    conn.start_next();
                    self.warm_up(i, conn, errs);
                }
                Err(e) => self.retry_later(i, e, errs),
            },
            Slot::WarmingUp(conn) => self.warm_up(i, conn, errs),
            // Nothing to do until measuring starts; if the server closed it meanwhile, the
            // first exchange will find out (drive always tries to read).
            ready @ Slot::Ready(_) => self.slots[i] = ready,
        }
    }

    /// Moves slot `i`'s warm-up echo forward.
    fn warm_up(&mut self, i: usize, mut conn: Conn, errs: &mut Errors) {
        match conn.drive() {
            Ok(Step::Blocked) => self.slots[i] = Slot::WarmingUp(conn),
            Ok(Step::Echoed { matched, .. }) => {
                if !matched {
                    errs.mismatches += 1;
                }
                self.slots[i] = Slot::Ready(conn);
                self.in_window -= 1;
                self.ready += 1;
            }
            // The server dropped it before echoing (e.g. still starting up): try again.
            Err(e) => self.retry_later(i, e, errs),
        }
    }
}

/// Whether a non-blocking connect has finished (mio's recipe: `take_error`, then `peer_addr`).
pub(crate) fn handshake_done(s: &TcpStream) -> io::Result<bool> {
    if let Some(e) = s.take_error()? {
        return Err(e);
    }
    match s.peer_addr() {
        // While nobody listens on a port in the ephemeral range, a retried connect can pick
        // that very port as its source and connect to itself (TCP simultaneous open); it
        // would then "echo" perfectly. Treat that as refused.
        Ok(peer) if peer == s.local_addr()? => Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connected to itself (nobody listening yet)",
        )),
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Opens `cfg.connections` connections. Returns them indexed by token (`None` for any that
/// could not be established in time) and how long it took.
fn connect_all(
    poll: &mut Poll,
    cfg: &Config,
    errs: &mut Errors,
) -> io::Result<(Vec<Option<Conn>>, Duration)> {
    let n = cfg.connections;
    let begin = Instant::now();
    let deadline = begin + cfg.connect_timeout;
    let mut c = Connector {
        addr: cfg.addr,
        size: cfg.size,
        slots: (0..n).map(|_| Slot::Idle).collect(),
        retries: VecDeque::new(),
        in_window: 0,
        ready: 0,
        last_error: None,
    };
    let mut next_new = 0; // next slot never tried yet
    let mut events = Events::with_capacity(1024);
    let mut ticker = Ticker::new(begin);

    while c.ready < n {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        // Retries that are due, then new connects while the window has room.
        while let Some(&(at, i)) = c.retries.front() {
            if at > now {
                break;
            }
            c.retries.pop_front();
            c.start(poll.registry(), i, errs);
        }
        while c.in_window < CONNECT_WINDOW && next_new < n {
            c.in_window += 1;
            c.start(poll.registry(), next_new, errs);
            next_new += 1;
        }

        let mut wake = deadline.min(ticker.next);
        if let Some(&(at, _)) = c.retries.front() {
            wake = wake.min(at);
        }
        poll_events(poll, &mut events, wake)?;
        for event in events.iter() {
            c.on_event(event.token().0, errs);
        }

        if ticker.due() {
            ticker.show(&format!(
                "connecting: {}/{n} established, {} in progress, {} retries",
                c.ready, c.in_window, errs.connect_retries
            ));
        }
    }
    ticker.end_line();
    let took = begin.elapsed();

    let last_error = c
        .last_error
        .as_ref()
        .map_or_else(|| "none".to_string(), |e| e.to_string());
    if c.ready == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "no connection to {} established within {:.1} s (last error: {last_error})",
                cfg.addr,
                cfg.connect_timeout.as_secs_f64()
            ),
        ));
    }
    if c.ready < n {
        eprintln!(
            "warning: only {}/{n} connections established within {:.1} s (last error: {last_error}); \
             measuring with those",
            c.ready,
            cfg.connect_timeout.as_secs_f64()
        );
    } else {
        eprintln!(
            "connected {n}/{n} connections to {} in {:.3} s ({} connect retries)",
            cfg.addr,
            took.as_secs_f64(),
            errs.connect_retries
        );
    }
    // Keep the established ones; dropping the rest closes their sockets.
    let conns = c
        .slots
        .into_iter()
        .map(|slot| match slot {
            Slot::Ready(conn) => Some(conn),
            _ => None,
        })
        .collect();
    Ok((conns, took))
}

// ---------------------------------------------------------------------------------------------
// Measuring phase.

/// Keeps every connection busy until `cfg.duration` has passed (or every connection is lost).
/// Returns the number of verified echoes and the time actually spent.
fn measure(
    poll: &mut Poll,
    conns: &mut [Option<Conn>],
    cfg: &Config,
    errs: &mut Errors,
    hist: &mut Histogram,
) -> io::Result<(u64, Duration)> {
    let begin = Instant::now();
    let deadline = begin + cfg.duration;
    let mut echoes = 0u64;
    let mut open = conns.iter().flatten().count();
    let mut events = Events::with_capacity(1024);
    let mut ticker = Ticker::new(begin);
    let (mut last_at, mut last_echoes) = (begin, 0u64);

    for slot in conns.iter_mut() {
        if let Some(conn) = slot {
            conn.start_next();
            if !pump(slot, &mut echoes, hist, errs) {
                open -= 1;
            }
        }
    }
    while open > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        poll_events(poll, &mut events, deadline.min(ticker.next))?;
        for event in events.iter() {
            if !pump(&mut conns[event.token().0], &mut echoes, hist, errs) {
                open -= 1;
            }
        }

        if ticker.due() {
            let now = Instant::now();
            let rate = (echoes - last_echoes) as f64 / (now - last_at).as_secs_f64();
            (last_at, last_echoes) = (now, echoes);
            ticker.show(&format!(
                "{:>3.0}/{:.0} s  open {open}  echoes {echoes}  {rate:.0} echoes/s  rtt p50 {} us  p99 {} us",
                (now - begin).as_secs_f64(),
                cfg.duration.as_secs_f64(),
                hist.percentile(50.0),
                hist.percentile(99.0),
            ));
        }
    }
    let took = begin.elapsed();
    ticker.end_line();
    if open == 0 {
        eprintln!("every connection was lost; stopped early");
    }
    Ok((echoes, took))
}

/// Pushes one connection as far as it goes, starting the next message after each echo.
/// Returns false if the connection was lost (it is then closed and removed from `slot`).
fn pump(
    slot: &mut Option<Conn>,
    echoes: &mut u64,
    hist: &mut Histogram,
    errs: &mut Errors,
) -> bool {
    let Some(conn) = slot else { return true };
    loop {
        match conn.drive() {
            Ok(Step::Blocked) => return true,
            Ok(Step::Echoed { rtt, matched }) => {
                if matched {
                    *echoes += 1;
                    hist.record(rtt.as_micros() as u64);
                } else {
                    // Never ignored: counted, and the exit status reflects it.
                    errs.mismatches += 1;
                }
                conn.start_next();
            }
            Err(e) => {
                errs.count_lost(&e);
                *slot = None;
                return false;
            }
        }
    }
}

/// Waits for events until `wake` at the latest; a signal interrupting the wait is not an error.
fn poll_events(poll: &mut Poll, events: &mut Events, wake: Instant) -> io::Result<()> {
    let timeout = wake.saturating_duration_since(Instant::now());
    match poll.poll(events, Some(timeout)) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Progress output.

/// Paces the progress line on stderr: rewritten in place (`\r`) every second on a terminal,
/// otherwise a plain line every 2 s (so logs stay readable).
struct Ticker {
    tty: bool,
    interval: Duration,
    next: Instant,
    shown: bool,
}

impl Ticker {
    fn new(begin: Instant) -> Self {
        let tty = io::stderr().is_terminal();
        let interval = Duration::from_secs(if tty { 1 } else { 2 });
        Ticker {
            tty,
            interval,
            next: begin + interval,
            shown: false,
        }
    }

    /// Whether it is time for the next line (and if so, schedules the one after).
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if now < self.next {
            return false;
        }
        while self.next <= now {
            self.next += self.interval;
        }
        true
    }

    fn show(&mut self, line: &str) {
        if self.tty {
            // \x1b[K clears whatever a longer previous line left behind.
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
        self.shown = true;
    }

    /// Ends the in-place line, so that what follows starts on a fresh line.
    fn end_line(&self) {
        if self.tty && self.shown {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_seq_and_id_and_differ() {
        let mut a = vec![0; 64];
        let mut b = vec![0; 64];
        fill_message(&mut a, 7, 1);
        fill_message(&mut b, 7, 2);
        assert_eq!(&a[..8], &1u64.to_le_bytes());
        assert_eq!(&a[8..12], &7u32.to_le_bytes());
        assert_ne!(a, b);
        let mut tiny = vec![0; 1];
        fill_message(&mut tiny, 7, 3);
        assert_eq!(tiny, [3]);
    }
}
