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
    let mut session = Session::connect(cfg)?;
    let duration = session.cfg.duration;
    session.run(Stop::After(duration))?;
    Ok(session.finish())
}

/// When a measuring segment stops starting new messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stop {
    /// After this much time.
    After(Duration),
    /// After this many messages have been started.
    Echoes(u64),
}

/// What one measuring segment did. A segment ends with no message in flight: once it stops
/// starting messages, it waits for every outstanding echo (bounded by the connect timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Verified echoes completed in the segment.
    pub echoes: u64,
    /// From the first message started to the last echo back.
    pub duration: Duration,
}

impl Segment {
    /// Echoes per second over the segment.
    pub fn rate(&self) -> f64 {
        let secs = self.duration.as_secs_f64();
        if secs > 0.0 {
            self.echoes as f64 / secs
        } else {
            0.0
        }
    }
}

/// A set of established connections that can run several measuring segments in turn (the
/// benchmark harness counts the server's work between two segments of different lengths).
pub struct Session {
    cfg: Config,
    poll: Poll,
    conns: Vec<Option<Conn>>,
    errs: Errors,
    hist: Histogram,
    connected: usize,
    connect_time: Duration,
    echoes: u64,
    measured: Duration,
}

impl Session {
    /// Opens `cfg.connections` connections (each proven by one warm-up echo).
    pub fn connect(cfg: Config) -> io::Result<Session> {
        raise_fd_limit(cfg.connections, SPARE_FDS)?;
        let mut poll = Poll::new()?;
        let mut errs = Errors::default();
        let (conns, connect_time) = connect_all(&mut poll, &cfg, &mut errs)?;
        let connected = conns.iter().flatten().count();
        Ok(Session {
            cfg,
            poll,
            conns,
            errs,
            hist: Histogram::new(),
            connected,
            connect_time,
            echoes: 0,
            measured: Duration::ZERO,
        })
    }

    /// Connections established and still open.
    pub fn open(&self) -> usize {
        self.conns.iter().flatten().count()
    }

    /// Runs one measuring segment; its echoes also count towards the final [`Summary`].
    pub fn run(&mut self, stop: Stop) -> io::Result<Segment> {
        let segment = measure(
            &mut self.poll,
            &mut self.conns,
            &self.cfg,
            stop,
            &mut self.errs,
            &mut self.hist,
        )?;
        self.echoes += segment.echoes;
        self.measured += segment.duration;
        Ok(segment)
    }

    /// Closes every connection, a window at a time (see [`close_paced`]), and returns the
    /// figures of all segments together.
    pub fn finish(mut self) -> Summary {
        let open_at_end = self.open();
        let deadline = Instant::now() + self.cfg.connect_timeout;
        close_paced(&mut self.poll, &mut self.conns, deadline);
        let cfg = self.cfg;
        let secs = self.measured.as_secs_f64();
        let (errs, hist) = (self.errs, self.hist);
        // Whatever the server did not close in time: dropping a mio TcpStream closes it.
        drop(self.conns);
        Summary {
            addr: cfg.addr,
            size: cfg.size,
            connections: cfg.connections,
            connected: self.connected,
            open_at_end,
            connect_time: self.connect_time,
            duration: self.measured,
            echoes: self.echoes,
            echoes_per_sec: if secs > 0.0 {
                self.echoes as f64 / secs
            } else {
                0.0
            },
            rtt_p50_us: hist.percentile(50.0),
            rtt_p90_us: hist.percentile(90.0),
            rtt_p99_us: hist.percentile(99.0),
            rtt_max_us: hist.max(),
            connect_failures: (cfg.connections - self.connected) as u64,
            connect_retries: errs.connect_retries,
            resets: errs.resets,
            eof: errs.eof,
            io_errors: errs.io_errors,
            mismatches: errs.mismatches,
        }
    }
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
    /// Whether a measured message is outstanding (warm-up echoes do not count).
    busy: bool,
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
            busy: false,
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
// Close phase.

/// Closes the connections at most `CONNECT_WINDOW` at a time: shut down the write half, wait
/// for the server to close its side (end of stream), then close.
///
/// Closing 10,000 connections at once is cheap for a server on Linux or Windows, but under
/// Wine it stalls wineserver for many minutes: every hung-up socket is reported to it again on
/// each turn of its main loop, and each report walks the list of every pending AFD poll, so
/// the server process that would read the end of stream and close gets almost no turn. Pacing
/// the close the way the connect phase is paced keeps the tail of a run short. Connections the
/// server has not closed by `deadline` are left in `conns` (the caller drops them).
fn close_paced(poll: &mut Poll, conns: &mut [Option<Conn>], deadline: Instant) {
    let mut waiting = (0..conns.len())
        .filter(|&i| conns[i].is_some())
        .collect::<VecDeque<_>>();
    let total = waiting.len();
    // Connections whose write half is shut, waiting for the server's end of stream.
    let mut shut = vec![false; conns.len()];
    let mut in_window = 0usize;
    let mut closed = 0usize;
    let mut events = Events::with_capacity(1024);
    let mut ticker = Ticker::new(Instant::now());
    let mut sink = [0u8; 4096];
    // Reads what is left; true once the server has closed (end of stream, or the connection
    // is gone), false while it has not (`WouldBlock`: an edge-triggered event will come).
    let mut server_done = |conn: &mut Conn| loop {
        match conn.stream.read(&mut sink) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break true,
        }
    };
    while closed < total {
        while in_window < CONNECT_WINDOW {
            let Some(i) = waiting.pop_front() else {
                break;
            };
            let Some(conn) = conns[i].as_mut() else {
                continue;
            };
            if conn.stream.shutdown(std::net::Shutdown::Write).is_err() || server_done(conn) {
                conns[i] = None;
                closed += 1;
            } else {
                shut[i] = true;
                in_window += 1;
            }
        }
        if closed == total || Instant::now() >= deadline {
            break;
        }
        // A failed wait ends the pacing early; the caller closes the rest at once.
        if poll_events(poll, &mut events, deadline.min(ticker.next)).is_err() {
            break;
        }
        for event in events.iter() {
            let i = event.token().0;
            if !shut.get(i).copied().unwrap_or(false) {
                continue;
            }
            if let Some(conn) = conns[i].as_mut()
                && server_done(conn)
            {
                conns[i] = None;
                shut[i] = false;
                in_window -= 1;
                closed += 1;
            }
        }
        if ticker.due() {
            ticker.show(&format!("closing: {closed}/{total} closed by the server"));
        }
    }
    ticker.end_line();
}

// ---------------------------------------------------------------------------------------------
// Measuring phase.

/// Which connections carry a message, and which wait for their turn.
struct Pacer {
    /// Connections with no message outstanding, oldest first (round robin).
    idle: VecDeque<usize>,
    outstanding: usize,
    limit: usize,
    started: u64,
    stop: Stop,
    deadline: Option<Instant>,
}

impl Pacer {
    /// Whether the segment's stop condition has been reached (no more messages start).
    fn stopped(&self) -> bool {
        match self.stop {
            Stop::Echoes(n) => self.started >= n,
            Stop::After(_) => self.deadline.is_none_or(|d| Instant::now() >= d),
        }
    }

    /// Whether another message may start now.
    fn may_start(&self) -> bool {
        !self.stopped() && self.outstanding < self.limit && !self.idle.is_empty()
    }
}

/// Runs one segment: messages start (round robin, at most `cfg.in_flight` outstanding) until
/// `stop`, then the outstanding ones are waited for. Returns the verified echoes and the time.
fn measure(
    poll: &mut Poll,
    conns: &mut [Option<Conn>],
    cfg: &Config,
    stop: Stop,
    errs: &mut Errors,
    hist: &mut Histogram,
) -> io::Result<Segment> {
    let begin = Instant::now();
    let mut pacer = Pacer {
        idle: (0..conns.len()).filter(|&i| conns[i].is_some()).collect(),
        outstanding: 0,
        limit: cfg.in_flight.unwrap_or(usize::MAX),
        started: 0,
        stop,
        deadline: match stop {
            Stop::After(d) => Some(begin + d),
            Stop::Echoes(_) => None,
        },
    };
    let mut echoes = 0u64;
    let mut events = Events::with_capacity(1024);
    let mut ticker = Ticker::new(begin);
    let (mut last_at, mut last_echoes) = (begin, 0u64);
    let mut drain_deadline = None;

    start_more(conns, &mut pacer, &mut echoes, hist, errs);
    while pacer.outstanding > 0 {
        let now = Instant::now();
        // Once no more messages may start, the outstanding ones get the connect timeout.
        let limit = if !pacer.stopped() {
            pacer.deadline.unwrap_or(ticker.next)
        } else {
            *drain_deadline.get_or_insert(now + cfg.connect_timeout)
        };
        if drain_deadline.is_some_and(|d| now >= d) {
            eprintln!(
                "{} echoes still outstanding {:.1} s after the segment ended; giving up on them",
                pacer.outstanding,
                cfg.connect_timeout.as_secs_f64()
            );
            break;
        }
        poll_events(poll, &mut events, limit.min(ticker.next))?;
        for event in events.iter() {
            let i = event.token().0;
            if conns[i].as_ref().is_some_and(|c| c.busy) {
                pump(conns, i, &mut pacer, &mut echoes, hist, errs);
            }
        }
        start_more(conns, &mut pacer, &mut echoes, hist, errs);

        if ticker.due() {
            let now = Instant::now();
            let rate = (echoes - last_echoes) as f64 / (now - last_at).as_secs_f64();
            (last_at, last_echoes) = (now, echoes);
            let goal = match stop {
                Stop::After(d) => format!(
                    "{:.0}/{:.0} s",
                    (now - begin).as_secs_f64(),
                    d.as_secs_f64()
                ),
                Stop::Echoes(n) => format!("{echoes}/{n} echoes"),
            };
            ticker.show(&format!(
                "{goal}  outstanding {}  echoes {echoes}  {rate:.0} echoes/s  rtt p50 {} us  p99 {} us",
                pacer.outstanding,
                hist.percentile(50.0),
                hist.percentile(99.0),
            ));
        }
    }
    let took = begin.elapsed();
    ticker.end_line();
    if conns.iter().all(Option::is_none) {
        eprintln!("every connection was lost; stopped early");
    }
    Ok(Segment {
        echoes,
        duration: took,
    })
}

/// Starts messages on idle connections while the pacer allows.
fn start_more(
    conns: &mut [Option<Conn>],
    pacer: &mut Pacer,
    echoes: &mut u64,
    hist: &mut Histogram,
    errs: &mut Errors,
) {
    while pacer.may_start() {
        let Some(i) = pacer.idle.pop_front() else {
            break;
        };
        let Some(conn) = conns[i].as_mut() else {
            continue;
        };
        conn.start_next();
        conn.busy = true;
        pacer.outstanding += 1;
        pacer.started += 1;
        pump(conns, i, pacer, echoes, hist, errs);
    }
}

/// Pushes connection `i`'s message as far as it goes. When its echo is complete the connection
/// goes to the back of the idle queue; if it is lost, it is closed and removed.
fn pump(
    conns: &mut [Option<Conn>],
    i: usize,
    pacer: &mut Pacer,
    echoes: &mut u64,
    hist: &mut Histogram,
    errs: &mut Errors,
) {
    let Some(conn) = conns[i].as_mut() else {
        return;
    };
    match conn.drive() {
        Ok(Step::Blocked) => {}
        Ok(Step::Echoed { rtt, matched }) => {
            if matched {
                *echoes += 1;
                hist.record(rtt.as_micros() as u64);
            } else {
                // Never ignored: counted, and the exit status reflects it.
                errs.mismatches += 1;
            }
            conn.busy = false;
            pacer.outstanding -= 1;
            pacer.idle.push_back(i);
        }
        Err(e) => {
            errs.count_lost(&e);
            conns[i] = None;
            pacer.outstanding -= 1;
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
