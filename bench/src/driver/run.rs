//! One run of a workload on one system.

use super::native::Strace;
use super::wine::{Server, Tally, Tracer};
use bench::{Record, System};
use loadgen::{Config, Session, Stop};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What counts the requests (under Wine) or the system calls (natively) of the server under test.
pub enum Counter {
    /// A tracing wineserver: every Wine process's requests.
    Wine(Tracer),
    /// `strace -f` around each server started with it.
    Native(Strace),
}

impl Counter {
    /// A snapshot of the counts so far, once they have settled.
    pub fn settle_and_count(&self) -> Tally {
        match self {
            Counter::Wine(t) => t.settle_and_count(),
            Counter::Native(s) => s.settle_and_count(),
        }
    }

    /// What one wake post is in the counts: wineserver's `add_completion` (`NtSetIoCompletion`),
    /// or natively a `write` (to an eventfd or a pipe: every system's waker writes one).
    fn post_kind(&self) -> &'static str {
        match self {
            Counter::Wine(_) => "add_completion",
            Counter::Native(_) => "write",
        }
    }
}

/// What the harness needs to know to run anything.
pub struct Env {
    /// Run the server natively (Linux, epoll) instead of under Wine.
    pub native: bool,
    pub root: PathBuf,
    pub exe: PathBuf,
    pub logs: PathBuf,
    pub in_flight: usize,
    /// Seconds of echo run before each measured echo segment (not counted).
    pub warmup: f64,
    pub sockets: usize,
    pub churn_ops: usize,
    pub wakes: usize,
    pub storm_wakes: usize,
    pub idle_secs: f64,
    /// Counter for log file names.
    pub runs: std::cell::Cell<u32>,
}

/// Figures of one run: name → value.
pub type Figures = BTreeMap<String, f64>;

impl Env {
    pub(super) fn start(
        &self,
        system: System,
        what: &str,
        extra: &[String],
        counter: Option<&Counter>,
    ) -> io::Result<Server> {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let mut args = vec![what.to_string(), "--system".into(), system.name().into()];
        args.extend_from_slice(extra);
        let log = self.logs.join(format!("{n:03}-{what}-{system}.log"));
        let strace = match counter {
            Some(Counter::Native(s)) => Some(s.next_log()),
            _ => None,
        };
        Server::start(
            &self.root,
            &self.exe,
            &args,
            &log,
            self.native,
            strace.as_deref(),
        )
    }

    fn load(&self, addr: SocketAddr, connections: usize) -> Config {
        let mut cfg = Config::new(addr);
        cfg.connections = connections;
        cfg.in_flight = Some(self.in_flight.min(connections));
        cfg.connect_timeout = Duration::from_secs(120);
        cfg
    }

    /// Echo throughput: connect, then ping-pong for `secs`.
    pub fn echo(&self, system: System, connections: usize, secs: f64) -> io::Result<Figures> {
        let mut server = self.start(system, "echo", &[], None)?;
        let addr = ready(&mut server)?;
        let mut session = Session::connect(self.load(addr, connections))?;
        // Right after 10,000 connects, Wine takes seconds to settle: measure after a warm-up.
        if self.warmup > 0.0 {
            session.run(Stop::After(Duration::from_secs_f64(self.warmup)))?;
        }
        let seg = session.run(Stop::After(Duration::from_secs_f64(secs)))?;
        let summary = session.finish();
        let done = expect(&mut server, "echo", Duration::from_secs(300))?;
        server.wait(Duration::from_secs(120))?;
        if summary.errors() > 0 || summary.connected < connections {
            return Err(io::Error::other(format!(
                "{system}: {} of {connections} connected, {} errors (mismatches {})",
                summary.connected,
                summary.errors(),
                summary.mismatches
            )));
        }
        let mut f = Figures::new();
        f.insert("echoes_per_sec".into(), seg.rate());
        f.insert("echoes".into(), seg.echoes as f64);
        f.insert("rtt_p50_us".into(), summary.rtt_p50_us as f64);
        f.insert("rtt_p99_us".into(), summary.rtt_p99_us as f64);
        f.insert("connect_secs".into(), summary.connect_time.as_secs_f64());
        // The reactor's own counters cover the whole run: warm-up echoes count too.
        if let Some(nt) = done.num("nt_total") {
            let all = (summary.echoes + summary.connected as u64).max(1) as f64;
            f.insert("nt_calls_per_echo".into(), nt / all);
        }
        Ok(f)
    }

    /// Wineserver requests per echo: after connecting, a segment of `e` echoes and one of `3e`;
    /// the difference over `2e` echoes cancels every fixed cost.
    pub fn echo_traced(
        &self,
        tracer: &Counter,
        system: System,
        connections: usize,
        e: u64,
    ) -> io::Result<Figures> {
        let mut server = self.start(system, "echo", &[], Some(tracer))?;
        let addr = ready(&mut server)?;
        let mut session = Session::connect(self.load(addr, connections))?;
        // Wine's cost per event grows with the number of pending polls: fewer echoes at 10,000.
        let e = (e * 1000 / connections as u64).clamp(100.min(e), e);
        let t0 = tracer.settle_and_count();
        let a = session.run(Stop::Echoes(e))?;
        let t1 = tracer.settle_and_count();
        let b = session.run(Stop::Echoes(3 * e))?;
        let t2 = tracer.settle_and_count();
        let summary = session.finish();
        expect(&mut server, "echo", Duration::from_secs(300))?;
        let tids = server.tids.clone();
        server.wait(Duration::from_secs(120))?;
        if a.echoes != e || b.echoes != 3 * e || summary.errors() > 0 {
            return Err(io::Error::other(format!(
                "{system}: traced echo run lost echoes ({} of {e}, {} of {}; {} errors)",
                a.echoes,
                b.echoes,
                3 * e,
                summary.errors()
            )));
        }
        let (ta, tb) = (t1.since(&t0), t2.since(&t1));
        let per_echo = diff(tb.by_threads(&tids), ta.by_threads(&tids)) / (2 * e) as f64;
        let mut f = Figures::new();
        f.insert("requests_per_echo".into(), per_echo);
        for (kind, v) in kinds_diff(&tb, &ta, &tids) {
            f.insert(format!("kind.{kind}"), v / (2 * e) as f64);
        }
        Ok(f)
    }

    /// Only the teardown of `sockets` pending polls (after registering them), without waiting
    /// for the kernel where the system would wait (afd-reactor's `abandon`): the like-for-like
    /// figure beside the peers, whose drops never wait. Its time in ms.
    pub fn teardown_no_wait(&self, system: System) -> io::Result<Option<f64>> {
        let args = vec![
            "--sockets".to_string(),
            self.sockets.to_string(),
            "--teardown-only".into(),
            "--no-wait".into(),
        ];
        let mut server = self.start(system, "micro", &args, None)?;
        let r = expect(&mut server, "teardown", Duration::from_secs(600))?;
        server.wait(Duration::from_secs(120))?;
        Ok(r.num("total_ms"))
    }

    /// The peerless workloads; with a tracer, also their wineserver requests.
    pub fn micro(&self, system: System, tracer: Option<&Counter>) -> io::Result<Figures> {
        let mut args = vec![
            "--sockets".to_string(),
            self.sockets.to_string(),
            "--churn-ops".into(),
            self.churn_ops.to_string(),
            "--wakes".into(),
            self.wakes.to_string(),
            "--storm-wakes".into(),
            self.storm_wakes.to_string(),
            "--idle-secs".into(),
            self.idle_secs.to_string(),
        ];
        if tracer.is_some() {
            args.push("--idle".into());
        }
        let mut server = self.start(system, "micro", &args, tracer)?;
        let mut marks: HashMap<String, Tally> = HashMap::new();
        let mut f = Figures::new();
        loop {
            let r = server.next(Duration::from_secs(600))?;
            match r.kind.as_str() {
                "mark" => {
                    if let Some(t) = tracer {
                        marks.insert(r.get("name").unwrap_or("").into(), t.settle_and_count());
                    }
                    server.go_on()?;
                }
                "result" => {
                    let w = r.get("workload").unwrap_or("");
                    let mut put = |k: &str, field: &str| {
                        if let Some(v) = r.num(field) {
                            f.insert(k.into(), v);
                        }
                    };
                    match w {
                        "wake" => {
                            put("wake_p10_us", "p10_us");
                            put("wake_p50_us", "p50_us");
                            put("wake_p90_us", "p90_us");
                        }
                        "storm" => {
                            put("storm_wakes", "wakes");
                            put("storm_wake_events", "wake_events");
                            put("storm_posts_counted", "nt_post");
                        }
                        "heap" => put("heap_bytes_per_socket", "bytes_per_socket"),
                        "churn" => put("churn_ops_per_sec", "ops_per_sec"),
                        "teardown" => {
                            put("teardown_poller_ms", "poller_ms");
                            put("teardown_ms", "total_ms");
                            put("teardown_waited", "waited");
                        }
                        _ => {}
                    }
                    if w == "teardown" {
                        break;
                    }
                }
                _ => {}
            }
        }
        let main_tid = server.tids.first().copied();
        server.wait(Duration::from_secs(120))?;
        if let Some(tracer) = tracer {
            let main: Vec<u32> = main_tid.into_iter().collect();
            let span =
                |a: &str, b: &str| -> Option<Tally> { Some(marks.get(b)?.since(marks.get(a)?)) };
            if let Some(storm) = span("storm-start", "storm-end") {
                // A wake post: wineserver's add_completion (NtSetIoCompletion), natively a
                // `write`; nothing else in the storm makes one.
                f.insert(
                    "storm_packets".into(),
                    storm.by_name(tracer.post_kind()) as f64,
                );
            }
            if let Some(churn) = span("churn-start", "churn-end") {
                f.insert(
                    "churn_requests_per_op".into(),
                    churn.by_threads(&main) as f64 / self.churn_ops as f64,
                );
                for (kind, n) in churn.kinds(&main) {
                    f.insert(
                        format!("churn_kind.{kind}"),
                        n as f64 / self.churn_ops as f64,
                    );
                }
            }
            if let (Some(a), Some(b)) = (span("idle-a", "idle-b"), span("idle-b", "idle-c")) {
                let d = diff(b.by_threads(&main), a.by_threads(&main));
                f.insert("idle_requests_per_sec".into(), d / (2.0 * self.idle_secs));
            }
        }
        Ok(f)
    }
}

/// `long - short` as a float (it can be negative by noise).
pub(super) fn diff(long: u64, short: u64) -> f64 {
    long as f64 - short as f64
}

/// Per-kind difference of two tallies for the given threads.
pub(super) fn kinds_diff(long: &Tally, short: &Tally, tids: &[u32]) -> Vec<(String, f64)> {
    let (l, s) = (long.kinds(tids), short.kinds(tids));
    let mut out: Vec<(String, f64)> = l
        .iter()
        .map(|(k, v)| (k.clone(), diff(*v, s.get(k).copied().unwrap_or(0))))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Waits for the server's `ready` record and returns its address.
pub(super) fn ready(server: &mut Server) -> io::Result<SocketAddr> {
    addr_of(&ready_record(server)?, "addr")
}

/// Waits for the server's `ready` record.
pub(super) fn ready_record(server: &mut Server) -> io::Result<Record> {
    let r = server.next(Duration::from_secs(120))?;
    if r.kind != "ready" {
        return Err(io::Error::other(format!("expected ready, got {r:?}")));
    }
    Ok(r)
}

/// The address in field `field` of record `r`.
pub(super) fn addr_of(r: &Record, field: &str) -> io::Result<SocketAddr> {
    r.get(field)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| io::Error::other(format!("{r:?} has no address {field}")))
}

/// Waits for the `result` record of `workload`.
pub(super) fn expect(server: &mut Server, workload: &str, timeout: Duration) -> io::Result<Record> {
    loop {
        let r = server.next(timeout)?;
        if r.kind == "result" && r.get("workload") == Some(workload) {
            return Ok(r);
        }
    }
}

/// Where the harness finds its files: the server (Windows, or `native`) and the logs, in cargo's
/// target directory (`CARGO_TARGET_DIR`, else `target`).
pub fn paths(root: &Path, native: bool) -> (PathBuf, PathBuf) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| root.join("target"), |d| root.join(d));
    let exe = if native {
        target.join("release/bench-server")
    } else {
        target.join("x86_64-pc-windows-gnu/release/bench-server.exe")
    };
    let logs = target.join("bench/logs");
    (exe, logs)
}
