//! The soak peer (Linux only): the client side of `scripts/soak.sh`.
//!
//! Keeps about N connections open to an echo server for a bounded time and, at random (seeded)
//! per connection:
//! - sends a burst of bytes and reads the echo back, verifying every byte: each connection
//!   incarnation sends a seeded pseudo-random byte stream, so the byte at stream offset `k` is
//!   known, and the echo must be exactly that stream, in order (a wrong, repeated, reordered or
//!   extra byte is a mismatch);
//! - stops reading for 100 ms–1 s while sending a large burst, so the server's writes hit
//!   `WouldBlock` (its backpressure path);
//! - half-closes (shutdown write) and reads until EOF: by then every byte sent must have been
//!   echoed ("nothing lost"), or it counts as lost;
//! - resets (SO_LINGER 0, then close);
//! - after a half-close or reset, reconnects, so about N stay open.
//!
//! Three phases:
//! 1. Ramp: open the N connections; no random action yet (they would slow the ramp down and
//!    churn connections before all are there). It ends when all N have echoed once, or at half
//!    of `--secs` at the latest.
//! 2. Soak: the random actions above, until `--secs`.
//! 3. Drain (bounded by `--drain-secs`): every open connection is half-closed and read until the
//!    server's EOF, with every byte verified, at most `--window` at a time. Closing all of them
//!    at once would make the server under Wine see thousands of closes at once, which wineserver
//!    handles in super-linear time (see `scripts/soak.sh`); the window paces the closes to what
//!    the server takes, and checks "nothing lost" on every connection once more.
//!
//! Connects (the initial N and every reconnect) go through the same kind of window: at most
//! `--window` connections are between "connect started" and "first echo byte verified", which
//! proves the server accepted them. So however slowly the server accepts, its backlog stays small.
//!
//! One thread, one mio `Poll` (epoll, edge-triggered): every handler reads and writes until
//! `WouldBlock`. Scheduled work (next action, end of a pause, reconnect, timeouts) sits in a
//! binary heap, tagged with the connection's incarnation so work for a closed one is dropped.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::client::{handshake_done, raise_fd_limit};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};

/// What one soak run does.
#[derive(Debug, Clone, PartialEq)]
pub struct SoakConfig {
    /// The echo server (`--addr`, required).
    pub addr: SocketAddr,
    /// Connections to keep open (`--connections`).
    pub connections: usize,
    /// How long to run, connect ramp included (`--secs`).
    pub secs: Duration,
    /// Seeds every random choice (`--seed`).
    pub seed: u64,
    /// Random actions per second over all connections (`--rate`).
    pub rate: f64,
    /// Connections being set up at once, and half-closed at once in the final drain
    /// (`--window`).
    pub window: usize,
    /// Connections with work in flight at once: bytes sent and not yet echoed, or half-closed
    /// and waiting for EOF (`--inflight`). An action that would start work on a connection waits
    /// while this many are busy (or while the connection itself is).
    pub inflight: usize,
    /// SO_RCVBUF of every socket, 0 for the default (`--rcvbuf`). Small, so that not reading
    /// quickly pushes the server into backpressure.
    pub rcvbuf: usize,
    /// Bound on the final drain, after `secs` (`--drain-secs`).
    pub drain_secs: Duration,
    /// Where to also write the summary JSON (`--json`).
    pub json: Option<PathBuf>,
}

pub const SOAK_USAGE: &str = "\
usage: soakpeer --addr IP:PORT [options]

Keeps N connections to an echo server busy with random bursts (every echoed byte verified),
pauses in reading (server backpressure), half-closes, resets and reconnects, for a bounded time.

options:
  --addr IP:PORT      echo server address (required)
  --connections N     connections to keep open (default 10000)
  --secs SECS         how long to run, connect ramp included (default 60)
  --seed N            seed of every random choice (default 1)
  --rate N            random actions per second over all connections (default 500)
  --window N          connections being set up (or drained) at once (default 64)
  --inflight N        connections with echoes outstanding at once (default 32)
  --rcvbuf BYTES      SO_RCVBUF of each socket, 0 = system default (default 16384)
  --drain-secs SECS   bound on the final drain after --secs (default 60)
  --json PATH         also write the summary JSON to PATH
  -h, --help          show this help

Prints progress every 2 s on stderr and one line `soakpeer-summary {json}` on stdout.
exit status: 0 if no echo mismatched, nothing was lost and the server closed or reset no
connection on its own; 1 otherwise; 2 on a usage error (or on a platform other than Linux).";

/// Parses the arguments after the program name (`--flag value` or `--flag=value`); `Ok(None)`
/// for `--help`.
pub fn parse_soak_args<I: IntoIterator<Item = String>>(
    args: I,
) -> Result<Option<SoakConfig>, String> {
    let mut args = args.into_iter();
    let mut addr = None;
    let mut cfg = SoakConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        connections: 10_000,
        secs: Duration::from_secs(60),
        seed: 1,
        rate: 500.0,
        window: 64,
        inflight: 32,
        rcvbuf: 16 * 1024,
        drain_secs: Duration::from_secs(60),
        json: None,
    };
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let v = inline
            .or_else(|| args.next())
            .ok_or_else(|| format!("{flag} needs a value"))?;
        let int = |v: &str| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} {v:?}: want a non-negative integer"))
        };
        let positive = |v: &str| -> Result<f64, String> {
            match v.parse::<f64>() {
                Ok(x) if x > 0.0 && x.is_finite() && x < 1e9 => Ok(x),
                _ => Err(format!("{flag} {v:?}: want a positive number")),
            }
        };
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--addr {v:?}: {e} (want IP:PORT)"))?,
                )
            }
            "--connections" => cfg.connections = int(&v)?.max(1) as usize,
            "--secs" => cfg.secs = Duration::from_secs_f64(positive(&v)?),
            "--seed" => cfg.seed = int(&v)?,
            "--rate" => cfg.rate = positive(&v)?,
            "--window" => cfg.window = int(&v)?.max(1) as usize,
            "--inflight" => cfg.inflight = int(&v)?.max(1) as usize,
            "--rcvbuf" => cfg.rcvbuf = int(&v)? as usize,
            "--drain-secs" => cfg.drain_secs = Duration::from_secs_f64(positive(&v)?),
            "--json" => cfg.json = Some(PathBuf::from(v)),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    cfg.addr = addr.ok_or("--addr is required")?;
    Ok(Some(cfg))
}

/// What a soak run counted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SoakSummary {
    pub connections: usize,
    pub duration: Duration,
    pub seed: u64,
    /// Most connections open at once (handshake done).
    pub open_max: usize,
    pub open_at_end: usize,
    /// Connects whose handshake completed.
    pub connects_ok: u64,
    /// Connect attempts that failed (refused, error, or no handshake/first echo in 30 s).
    pub connect_failures: u64,
    /// Of those, the ones after the first connection succeeded (the server was up).
    pub connect_failures_after_start: u64,
    /// Connections opened to replace one we half-closed or reset.
    pub reconnects: u64,
    pub bursts: u64,
    pub bytes_sent: u64,
    /// Echoed bytes that matched what was sent.
    pub echo_bytes_verified: u64,
    /// Reads whose bytes were all verified.
    pub echo_reads_verified: u64,
    /// Reads with a wrong byte, or more bytes than were sent.
    pub mismatches: u64,
    /// Half-closes whose EOF came before every sent byte was echoed.
    pub lost_at_eof: u64,
    pub resets: u64,
    pub half_closes: u64,
    pub half_closes_completed: u64,
    /// Half-closed connections whose EOF did not come within 60 s.
    pub half_close_stuck: u64,
    /// Seconds until all N connections had echoed once (0: the ramp never completed).
    pub ramp_secs: f64,
    /// Connections half-closed in the final drain, and how many of those saw their EOF in time.
    pub drain_started: u64,
    pub drain_completed: u64,
    /// How long the drain took.
    pub drain_secs: f64,
    pub pauses: u64,
    /// Actions put off because the connection, or `--inflight` connections, were busy.
    pub deferred: u64,
    /// The server closed a connection we had not half-closed.
    pub server_closed: u64,
    /// The server reset a connection (ECONNRESET, EPIPE, …).
    pub server_resets: u64,
}

impl SoakSummary {
    /// No mismatch, nothing lost, no connection dropped by the server, and some echo verified.
    pub fn ok(&self) -> bool {
        self.mismatches == 0
            && self.lost_at_eof == 0
            && self.half_close_stuck == 0
            && self.drain_completed == self.drain_started
            && self.server_closed == 0
            && self.server_resets == 0
            && self.echo_bytes_verified > 0
    }

    pub fn to_json(&self) -> String {
        let mut s = String::from("{");
        let fields: [(&str, String); 29] = [
            ("connections", self.connections.to_string()),
            (
                "duration_secs",
                format!("{:.3}", self.duration.as_secs_f64()),
            ),
            ("seed", self.seed.to_string()),
            ("open_max", self.open_max.to_string()),
            ("open_at_end", self.open_at_end.to_string()),
            ("connects_ok", self.connects_ok.to_string()),
            ("connect_failures", self.connect_failures.to_string()),
            (
                "connect_failures_after_start",
                self.connect_failures_after_start.to_string(),
            ),
            ("reconnects", self.reconnects.to_string()),
            ("bursts", self.bursts.to_string()),
            ("bytes_sent", self.bytes_sent.to_string()),
            ("echo_bytes_verified", self.echo_bytes_verified.to_string()),
            ("echo_reads_verified", self.echo_reads_verified.to_string()),
            ("mismatches", self.mismatches.to_string()),
            ("lost_at_eof", self.lost_at_eof.to_string()),
            ("resets", self.resets.to_string()),
            ("half_closes", self.half_closes.to_string()),
            (
                "half_closes_completed",
                self.half_closes_completed.to_string(),
            ),
            ("half_close_stuck", self.half_close_stuck.to_string()),
            ("ramp_secs", format!("{:.3}", self.ramp_secs)),
            ("drain_started", self.drain_started.to_string()),
            ("drain_completed", self.drain_completed.to_string()),
            ("drain_secs", format!("{:.3}", self.drain_secs)),
            ("pauses", self.pauses.to_string()),
            ("deferred", self.deferred.to_string()),
            ("server_closed", self.server_closed.to_string()),
            ("server_resets", self.server_resets.to_string()),
            ("ok", self.ok().to_string()),
            ("rate_bytes_per_sec", {
                let secs = self.duration.as_secs_f64().max(1e-9);
                format!("{:.0}", self.echo_bytes_verified as f64 / secs)
            }),
        ];
        for (i, (k, v)) in fields.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(s, "{sep}\"{k}\":{v}");
        }
        s.push('}');
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Random numbers and the verified byte stream.

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64: small and seedable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Exponentially distributed with mean `mean` (actions then form a Poisson process).
    fn exp(&mut self, mean: Duration) -> Duration {
        let u = self.unit().max(1e-12);
        mean.mul_f64(-u.ln()).min(mean * 20)
    }
}

/// The byte at `offset` of the stream with seed `seed`.
fn stream_byte(seed: u64, offset: u64) -> u8 {
    let word = mix(seed ^ (offset >> 3).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (word >> ((offset & 7) * 8)) as u8
}

/// Fill `out` with the stream from `offset`.
fn fill_stream(seed: u64, offset: u64, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = stream_byte(seed, offset + i as u64);
    }
}

/// Whether `data` is the stream from `offset`.
fn matches_stream(seed: u64, offset: u64, data: &[u8]) -> bool {
    data.iter()
        .enumerate()
        .all(|(i, &b)| b == stream_byte(seed, offset + i as u64))
}

// ---------------------------------------------------------------------------------------------
// Connections.

/// Linux's EINPROGRESS (the same on every Linux architecture we build for).
const EINPROGRESS: i32 = 115;
/// Bytes every new connection sends first; their echo proves the server accepted it.
const HELLO: u64 = 16;
/// A connection must be echoing within this time of its connect.
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);
/// A half-closed connection must see EOF within this time.
const HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(60);
const RETRY_DELAY: Duration = Duration::from_millis(100);
const IO_CHUNK: usize = 64 * 1024;
/// File descriptors needed besides the sockets.
const SPARE_FDS: u64 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No socket: waiting to (re)connect.
    Idle,
    /// Handshake in progress.
    Connecting,
    /// Connected; `established` once the first echo byte came back.
    Open { established: bool },
    /// We shut down writing; reading until EOF.
    HalfClosed,
}

struct Slot {
    stream: Option<TcpStream>,
    phase: Phase,
    /// Incarnation, bumped on every close; scheduled jobs of older ones are ignored.
    generation: u64,
    /// Seed of this incarnation's byte stream.
    pattern: u64,
    sent: u64,
    echoed: u64,
    burst_left: u64,
    paused: bool,
    /// Counted in the connect window.
    in_window: bool,
    ever_connected: bool,
    ever_established: bool,
    /// Counted in `Peer::busy`: echoes outstanding, or half-closed and waiting for EOF.
    busy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    /// Queue the slot for a connect (the window decides when).
    Connect,
    /// A random action.
    Action,
    /// End a reading pause.
    Resume,
    /// The connect did not finish (handshake and first echo) in time.
    ConnectTimeout,
    /// The half-close did not finish (EOF) in time.
    HalfCloseTimeout,
}

/// Jobs ordered by time: `(when, slot, generation, job)`.
type Schedule = BinaryHeap<Reverse<(Instant, usize, u64, Job)>>;

struct Peer {
    cfg: SoakConfig,
    poll: Poll,
    slots: Vec<Slot>,
    schedule: Schedule,
    /// Slots waiting for room in the connect window.
    waiting: VecDeque<usize>,
    in_window: usize,
    open: usize,
    rng: Rng,
    /// Mean time between two actions of one connection.
    action_mean: Duration,
    buf: Vec<u8>,
    s: SoakSummary,
    last_error: Option<String>,
    /// A connection succeeded once: the server is up.
    started: bool,
    /// Slots that have echoed at least once; the ramp ends when all N have.
    established_once: usize,
    /// Random actions have begun (the ramp is over).
    soaking: bool,
    /// The final drain is on: closed connections are not replaced.
    draining: bool,
    /// Connections half-closed and waiting for the server's EOF.
    half_closed: usize,
    /// Connections with work in flight (see `SoakConfig::inflight`).
    busy: usize,
}

/// Runs the soak and returns what it counted. Progress goes to stderr.
pub fn run_soak(cfg: SoakConfig) -> io::Result<SoakSummary> {
    raise_fd_limit(cfg.connections, SPARE_FDS)?;
    let n = cfg.connections;
    let action_mean = Duration::from_secs_f64(n as f64 / cfg.rate);
    let mut p = Peer {
        poll: Poll::new()?,
        slots: (0..n)
            .map(|_| Slot {
                stream: None,
                phase: Phase::Idle,
                generation: 0,
                pattern: 0,
                sent: 0,
                echoed: 0,
                burst_left: 0,
                paused: false,
                in_window: false,
                ever_connected: false,
                ever_established: false,
                busy: false,
            })
            .collect(),
        schedule: BinaryHeap::new(),
        waiting: (0..n).collect(),
        in_window: 0,
        open: 0,
        rng: Rng(cfg.seed ^ 0x2545_F491_4F6C_DD1D),
        action_mean,
        buf: vec![0; IO_CHUNK],
        s: SoakSummary {
            connections: n,
            seed: cfg.seed,
            ..SoakSummary::default()
        },
        last_error: None,
        started: false,
        established_once: 0,
        soaking: false,
        draining: false,
        half_closed: 0,
        busy: 0,
        cfg,
    };
    p.run()?;
    Ok(p.s)
}

impl Peer {
    fn run(&mut self) -> io::Result<()> {
        let begin = Instant::now();
        let deadline = begin + self.cfg.secs;
        let mut events = Events::with_capacity(4096);
        let mut next_progress = begin + Duration::from_secs(2);
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if !self.soaking
                && (self.established_once == self.cfg.connections
                    || now >= begin + self.cfg.secs / 2)
            {
                self.soaking = true;
                if self.established_once == self.cfg.connections {
                    self.s.ramp_secs = begin.elapsed().as_secs_f64();
                }
                eprintln!(
                    "[soakpeer] {:>5.1}s ramp over: {} of {} connections established; random actions begin",
                    begin.elapsed().as_secs_f64(),
                    self.established_once,
                    self.cfg.connections
                );
            }
            // Due jobs, then connects while the window has room.
            while let Some(&Reverse((at, i, generation, job))) = self.schedule.peek() {
                if at > now {
                    break;
                }
                self.schedule.pop();
                if self.slots[i].generation == generation {
                    self.on_job(i, job);
                }
            }
            while self.in_window < self.cfg.window {
                let Some(i) = self.waiting.pop_front() else {
                    break;
                };
                self.start_connect(i);
            }

            let mut wake = deadline.min(next_progress);
            if let Some(&Reverse((at, ..))) = self.schedule.peek() {
                wake = wake.min(at);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.drive(event.token().0);
            }

            if Instant::now() >= next_progress {
                next_progress += Duration::from_secs(2);
                self.progress(begin);
            }
        }
        self.s.duration = begin.elapsed();
        self.s.open_at_end = self.open;
        self.drain(&mut events)?;
        // Whatever is left (the drain's bound passed) is closed as is.
        for slot in &mut self.slots {
            slot.stream = None;
        }
        if let Some(e) = &self.last_error {
            eprintln!("[soakpeer] last connect error: {e}");
        }
        Ok(())
    }

    /// The final drain: half-close every open connection, at most `window` at a time, and read
    /// each until the server's EOF, verifying every byte; connections still being set up are
    /// dropped. Bounded by `drain_secs`.
    fn drain(&mut self, events: &mut Events) -> io::Result<()> {
        let begin = Instant::now();
        let deadline = begin + self.cfg.drain_secs;
        self.draining = true;
        let mut queue = VecDeque::new();
        for i in 0..self.slots.len() {
            match self.slots[i].phase {
                Phase::Open { established: true } => queue.push_back(i),
                // Already waiting for its EOF: part of the drain too.
                Phase::HalfClosed => self.s.drain_started += 1,
                _ => self.close(i),
            }
        }
        eprintln!(
            "[soakpeer] draining: half-closing {} connections, {} at a time",
            queue.len(),
            self.cfg.window
        );
        let mut next_progress = begin + Duration::from_secs(2);
        while (!queue.is_empty() || self.half_closed > 0) && Instant::now() < deadline {
            while self.half_closed < self.cfg.window {
                let Some(i) = queue.pop_front() else { break };
                self.s.drain_started += 1;
                self.half_close(i);
            }
            let timeout = deadline
                .min(next_progress)
                .saturating_duration_since(Instant::now());
            match self.poll.poll(events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            for event in events.iter() {
                self.drive(event.token().0);
            }
            if Instant::now() >= next_progress {
                next_progress += Duration::from_secs(2);
                eprintln!(
                    "[soakpeer] draining {:>5.1}s: {} left, {} waiting for EOF, {} done",
                    begin.elapsed().as_secs_f64(),
                    queue.len(),
                    self.half_closed,
                    self.s.drain_completed
                );
            }
        }
        self.s.drain_secs = begin.elapsed().as_secs_f64();
        if !queue.is_empty() || self.half_closed > 0 {
            eprintln!(
                "[soakpeer] drain bound ({:.0} s) passed: {} connections not drained",
                self.cfg.drain_secs.as_secs_f64(),
                queue.len() + self.half_closed
            );
        }
        Ok(())
    }

    /// Shut down our sending side; the connection then reads until the server's EOF.
    fn half_close(&mut self, i: usize) {
        self.s.half_closes += 1;
        let slot = &mut self.slots[i];
        slot.burst_left = 0;
        slot.paused = false;
        slot.phase = Phase::HalfClosed;
        self.half_closed += 1;
        if let Some(stream) = &slot.stream
            && stream.shutdown(Shutdown::Write).is_err()
        {
            self.s.server_resets += 1;
            self.close_and_replace(i);
            return;
        }
        self.at(i, HALF_CLOSE_TIMEOUT, Job::HalfCloseTimeout);
        self.drive(i);
    }

    fn progress(&self, begin: Instant) {
        let s = &self.s;
        let mb = |b: u64| b as f64 / 1e6;
        eprintln!(
            "[soakpeer] {:>5.1}s open {:>5} (setting up {:>3}, busy {:>3}) sent {:.1} MB echoed {:.1} MB \
             verified, mismatches {} lost {} resets {} half-closes {}/{} pauses {} reconnects {} \
             connect failures {} server-closed {}/{}",
            begin.elapsed().as_secs_f64(),
            self.open,
            self.in_window,
            self.busy,
            mb(s.bytes_sent),
            mb(s.echo_bytes_verified),
            s.mismatches,
            s.lost_at_eof,
            s.resets,
            s.half_closes_completed,
            s.half_closes,
            s.pauses,
            s.reconnects,
            s.connect_failures,
            s.server_closed,
            s.server_resets,
        );
    }

    fn at(&mut self, i: usize, after: Duration, job: Job) {
        let generation = self.slots[i].generation;
        self.schedule
            .push(Reverse((Instant::now() + after, i, generation, job)));
    }

    fn on_job(&mut self, i: usize, job: Job) {
        match job {
            Job::Connect => self.waiting.push_back(i),
            Job::Action => self.action(i),
            Job::Resume => {
                self.slots[i].paused = false;
                self.drive(i);
            }
            Job::ConnectTimeout => {
                if matches!(
                    self.slots[i].phase,
                    Phase::Connecting | Phase::Open { established: false }
                ) {
                    self.connect_failed(i, "no handshake or first echo within 30 s".into());
                }
            }
            Job::HalfCloseTimeout => {
                if self.slots[i].phase == Phase::HalfClosed {
                    self.s.half_close_stuck += 1;
                    eprintln!("[soakpeer] connection {i}: no EOF within 60 s of our half-close");
                    self.close_and_replace(i);
                }
            }
        }
    }

    /// Start a non-blocking connect for slot `i` (a new incarnation).
    fn start_connect(&mut self, i: usize) {
        let addr = self.cfg.addr;
        let rcvbuf = self.cfg.rcvbuf;
        let attempt = (|| -> io::Result<TcpStream> {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_nonblocking(true)?;
            socket.set_tcp_nodelay(true)?;
            if rcvbuf > 0 {
                socket.set_recv_buffer_size(rcvbuf)?;
            }
            match socket.connect(&addr.into()) {
                Ok(()) => {}
                // A non-blocking connect is under way (`ErrorKind::InProgress` is not stable yet).
                Err(e) if e.raw_os_error() == Some(EINPROGRESS) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let mut stream = TcpStream::from_std(socket.into());
            self.poll.registry().register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            Ok(stream)
        })();
        let pattern = self.rng.next();
        let slot = &mut self.slots[i];
        slot.in_window = true;
        self.in_window += 1;
        match attempt {
            Ok(stream) => {
                slot.stream = Some(stream);
                slot.phase = Phase::Connecting;
                slot.pattern = pattern;
                slot.sent = 0;
                slot.echoed = 0;
                slot.burst_left = 0;
                slot.paused = false;
                self.at(i, ESTABLISH_TIMEOUT, Job::ConnectTimeout);
            }
            Err(e) => self.connect_failed(i, e.to_string()),
        }
    }

    /// A connect attempt failed: count it and retry later.
    fn connect_failed(&mut self, i: usize, why: String) {
        self.s.connect_failures += 1;
        if self.started {
            self.s.connect_failures_after_start += 1;
        }
        self.last_error = Some(why);
        self.close(i);
        self.at(i, RETRY_DELAY, Job::Connect);
    }

    /// Close slot `i`'s socket (if any) and forget its scheduled jobs.
    fn close(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        if slot.in_window {
            slot.in_window = false;
            self.in_window -= 1;
        }
        if matches!(slot.phase, Phase::Open { .. } | Phase::HalfClosed) {
            self.open -= 1;
        }
        if slot.phase == Phase::HalfClosed {
            self.half_closed -= 1;
        }
        if slot.busy {
            slot.busy = false;
            self.busy -= 1;
        }
        slot.stream = None; // closes the socket (and takes it out of epoll)
        slot.phase = Phase::Idle;
        slot.generation += 1;
    }

    /// Close slot `i` and open a new connection in its place soon.
    fn close_and_replace(&mut self, i: usize) {
        self.close(i);
        if self.draining {
            return;
        }
        let delay = Duration::from_millis(self.rng.range(0, 50));
        self.at(i, delay, Job::Connect);
    }

    /// A random action on an established connection; schedules the next one.
    fn action(&mut self, i: usize) {
        if self.slots[i].phase != (Phase::Open { established: true }) || self.draining {
            return;
        }
        if !self.soaking {
            // Still ramping up: try again later.
            let next = self.rng.exp(self.action_mean);
            self.at(i, next, Job::Action);
            return;
        }
        let r = self.rng.range(0, 99);
        // Bursts, pauses and half-closes start work that the server must finish; under Wine its
        // cost grows fast with the number of polls completing at once (see scripts/soak.sh), so
        // at most `inflight` connections have work in flight. Resets need no echo: any time.
        if r < 78 && (self.slots[i].busy || self.busy >= self.cfg.inflight) {
            self.s.deferred += 1;
            let next = self.rng.exp(self.action_mean);
            self.at(i, next, Job::Action);
            return;
        }
        match r {
            // A burst: mostly small, sometimes up to 64 KiB.
            0..=59 => {
                let size = if self.rng.chance(0.8) {
                    self.rng.range(1, 4096)
                } else {
                    self.rng.range(4096, 64 * 1024)
                };
                self.s.bursts += 1;
                self.slots[i].burst_left += size;
            }
            // Stop reading for a while and send more than the buffers between us hold, so the
            // server's writes hit WouldBlock.
            60..=69 => {
                self.s.pauses += 1;
                self.s.bursts += 1;
                let size = self.rng.range(128 * 1024, 256 * 1024);
                let pause = Duration::from_millis(self.rng.range(100, 1000));
                let slot = &mut self.slots[i];
                slot.paused = true;
                slot.burst_left += size;
                self.at(i, pause, Job::Resume);
            }
            // Half-close: no more sending; read everything back until EOF.
            70..=77 => {
                self.half_close(i);
                return;
            }
            // Reset: SO_LINGER 0, then close.
            78..=85 => {
                self.s.resets += 1;
                if let Some(stream) = &self.slots[i].stream {
                    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
                }
                self.close_and_replace(i);
                return;
            }
            _ => {} // stay idle this time
        }
        let next = self.rng.exp(self.action_mean);
        self.at(i, next, Job::Action);
        self.drive(i);
    }

    /// Move slot `i` forward as far as the socket allows (edge-triggered: until WouldBlock).
    fn drive(&mut self, i: usize) {
        if self.slots[i].phase == Phase::Connecting {
            let Some(stream) = &self.slots[i].stream else {
                return;
            };
            match handshake_done(stream) {
                Ok(false) => return,
                Ok(true) => {
                    self.started = true;
                    self.s.connects_ok += 1;
                    self.open += 1;
                    self.s.open_max = self.s.open_max.max(self.open);
                    let slot = &mut self.slots[i];
                    if slot.ever_connected {
                        self.s.reconnects += 1;
                    }
                    slot.ever_connected = true;
                    slot.phase = Phase::Open { established: false };
                    slot.burst_left = HELLO;
                }
                Err(e) => {
                    self.connect_failed(i, e.to_string());
                    return;
                }
            }
        }
        if self.slots[i].phase == Phase::Idle {
            return;
        }
        if let Err(e) = self.write_some(i) {
            self.lost(i, &e);
            return;
        }
        if !self.slots[i].paused {
            self.read_some(i);
        }
        self.refresh_busy(i);
    }

    /// Keep `busy` in step with slot `i`: busy while bytes await their echo, or half-closed.
    fn refresh_busy(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let now = match slot.phase {
            Phase::HalfClosed => true,
            Phase::Open { established: true } => slot.burst_left > 0 || slot.echoed < slot.sent,
            _ => false,
        };
        if now != slot.busy {
            slot.busy = now;
            if now {
                self.busy += 1;
            } else {
                self.busy -= 1;
            }
        }
    }

    /// Send the burst in progress until done or WouldBlock.
    fn write_some(&mut self, i: usize) -> io::Result<()> {
        let slot = &mut self.slots[i];
        let Some(stream) = slot.stream.as_mut() else {
            return Ok(());
        };
        if !matches!(slot.phase, Phase::Open { .. }) {
            return Ok(());
        }
        while slot.burst_left > 0 {
            let n = (slot.burst_left as usize).min(self.buf.len());
            fill_stream(slot.pattern, slot.sent, &mut self.buf[..n]);
            match stream.write(&self.buf[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => {
                    slot.sent += w as u64;
                    slot.burst_left -= w as u64;
                    self.s.bytes_sent += w as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Read and verify until WouldBlock; handles EOF and errors.
    fn read_some(&mut self, i: usize) {
        loop {
            let slot = &mut self.slots[i];
            let Some(stream) = slot.stream.as_mut() else {
                return;
            };
            match stream.read(&mut self.buf) {
                Ok(0) => {
                    if slot.phase == Phase::HalfClosed {
                        self.s.half_closes_completed += 1;
                        if self.draining {
                            self.s.drain_completed += 1;
                        }
                        if slot.echoed != slot.sent {
                            self.s.lost_at_eof += 1;
                            eprintln!(
                                "[soakpeer] connection {i}: EOF after {} of {} bytes echoed",
                                slot.echoed, slot.sent
                            );
                        }
                    } else {
                        self.s.server_closed += 1;
                    }
                    self.close_and_replace(i);
                    return;
                }
                Ok(n) => {
                    let data = &self.buf[..n];
                    let ok = slot.echoed + n as u64 <= slot.sent
                        && matches_stream(slot.pattern, slot.echoed, data);
                    if !ok {
                        self.s.mismatches += 1;
                        eprintln!(
                            "[soakpeer] connection {i}: echo mismatch at offset {} ({n} bytes read, {} sent)",
                            slot.echoed, slot.sent
                        );
                        self.close_and_replace(i);
                        return;
                    }
                    slot.echoed += n as u64;
                    self.s.echo_bytes_verified += n as u64;
                    self.s.echo_reads_verified += 1;
                    if slot.phase == (Phase::Open { established: false }) {
                        // The server accepted and echoes: leave the connect window.
                        slot.phase = Phase::Open { established: true };
                        slot.in_window = false;
                        self.in_window -= 1;
                        if !slot.ever_established {
                            slot.ever_established = true;
                            self.established_once += 1;
                        }
                        let first = self.rng.exp(self.action_mean);
                        self.at(i, first, Job::Action);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.lost(i, &e);
                    return;
                }
            }
        }
    }

    /// An I/O error ended slot `i`'s connection.
    fn lost(&mut self, i: usize, e: &io::Error) {
        match self.slots[i].phase {
            Phase::Connecting | Phase::Open { established: false } => {
                self.connect_failed(i, e.to_string());
            }
            _ => {
                self.s.server_resets += 1;
                if self.s.server_resets <= 10 {
                    eprintln!("[soakpeer] connection {i}: {e}");
                }
                self.close_and_replace(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_deterministic_and_position_dependent() {
        let mut a = vec![0; 100];
        fill_stream(7, 0, &mut a);
        assert!(matches_stream(7, 0, &a));
        assert!(matches_stream(7, 10, &a[10..]));
        assert!(!matches_stream(7, 11, &a[10..]), "shifted by one byte");
        assert!(!matches_stream(8, 0, &a), "another incarnation's stream");
        let mut b = a.clone();
        b[50] ^= 1;
        assert!(!matches_stream(7, 0, &b));
    }

    #[test]
    fn args() {
        let parse = |v: &[&str]| parse_soak_args(v.iter().map(|s| s.to_string()));
        let cfg = parse(&["--addr", "127.0.0.1:9", "--connections=5", "--secs", "1.5"])
            .unwrap()
            .unwrap();
        assert_eq!(cfg.connections, 5);
        assert_eq!(cfg.secs, Duration::from_millis(1500));
        assert_eq!(cfg.window, 64);
        assert_eq!(parse(&["--help"]), Ok(None));
        assert!(parse(&[]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:9", "--rate", "0"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:9", "--bogus", "1"]).is_err());
    }

    #[test]
    fn summary_json_is_one_object() {
        let s = SoakSummary::default();
        let j = s.to_json();
        assert!(j.starts_with('{') && j.ends_with('}'));
        assert!(j.contains("\"mismatches\":0"));
        assert!(j.contains("\"ok\":false"), "no echo verified is not ok");
    }
}
