//! `bench` — runs afd-reactor (socket-direct and helper path), mio, polling and wepoll through
//! the same workloads under Wine, side by side, and the async stacks (afd-async, smol, tokio)
//! through an HTTP workload (wrk) and the echo, and reports. See `USAGE`, or run
//! `bash scripts/bench.sh` (which builds everything first).

#[cfg(target_os = "linux")]
mod driver;

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
const USAGE: &str = "\
usage: bench [options]

Runs each system in turn, in rounds that each start with the next system (A B C, B C A,
C A B, ...), through:
  echo ping-pong over each connection count (native load generator, --in-flight messages
  outstanding at a time), wake latency (p10/p50/p90) and a 4-thread wake storm,
  register+deregister churn with --sockets registered, heap bytes per registration, and
  teardown with every poll pending (afd waits for every packet; the peers do not, so afd's
  teardown is also timed without waiting, `abandon`, for a like-for-like row). Then, once
  per system under a tracing wineserver: wineserver requests per echo, per churn operation,
  per idle second, and the wake packets of the storm.

The async stacks (afd-async, smol, tokio; each on one thread) run the echo beside the raw
systems, and an HTTP workload: wrk -t2 -cN -dS --latency (--timeout 30s) against one
http_hello server (keep-alive, a fixed 13-byte body) per --http-conns count, after a warm-up
run of wrk (--warmup, rounded to whole seconds; 0 for none) whose connections the server
lets close first; requests/s and latency p50/p75/p90/p99, mean and largest from wrk, and the
measured run's connections that had a request answered from the server. Then, traced:
wineserver requests (natively: system calls, with strace and with perf) per HTTP request,
from the server's marks after W, W+E and W+4E answered requests while wrk runs
(E = --trace-requests, W = max(E, 2 x connections)).

A comparison is stated only where the per-round ratios all fall on one side of 1 (or of
the target); otherwise the table marks it a tie.

options:
  --rounds N          rounds of the timed workloads (default 3)
  --secs S            measuring time of each echo run (default 2)
  --conns A,B         connection counts (default 1000; with 10,000 each run takes ~35 s
                      under Wine, mostly connecting, so use it with --echo-only)
  --in-flight N       messages outstanding at once (default 100)
  --warmup S          echo seconds before each measured echo run, not counted (default 1)
  --echo-only         only the echo workload (e.g. for --conns 10000, which does not fit
                      the default run's time); the async stacks' echo rows too
  --http-only         only the HTTP workload (the async stacks)
  --no-http           no HTTP workload
  --http-conns A,B    wrk's connection counts (default 100,1000)
  --http-secs S       wrk's measured run, whole seconds (default 10 under Wine, 5 natively)
  --trace-requests N  HTTP requests in the short traced segment (default 2000; the long one
                      is 3 times that)
  --trace-echoes N    echoes in the short traced segment at 1,000 connections, scaled by
                      1000/conns (at least 100); the long segment is 3 times that (default 2000)
  --sockets N         registered sockets for churn/heap/teardown/idle (default 10000)
  --churn-ops N       register+deregister operations (default 2000)
  --systems a,b,...   subset of afd,afd-helper,mio,polling,wepoll and of the async stacks
                      afd-async,smol,tokio (default all; natively afd, mio, polling and the
                      async stacks)
  --no-trace          skip the wineserver request counts
  --wine 8|10         the Wine to run under (default: AFD_WINE, else 8): 8 is the host's,
                      10 the Debian 13 chroot scripts/setup.sh builds (see scripts/wine.sh)
  --native            run the servers natively on Linux instead: afd-reactor on epoll, mio
                      and polling (default systems) and the async stacks; system calls are
                      counted with strace -f where wineserver requests are counted under
                      Wine, and HTTP's also with perf, which does not slow the server
  --quick             tiny sizes, one round (a smoke test of the harness)
  --waits             only the waitable-handle benchmark (issue 15; under Wine): afd-reactor's
                      register_waitable against polling's add_waitable, each in level and
                      oneshot mode: wineserver requests and NT calls per signal of an
                      auto-reset event (set by the polling thread, and by another thread),
                      threads and heap for --waitables registrations; writes report.md and
                      results.json to --out (default rounds: 5)
  --wait-signals N    signals in the short traced segment of --waits (the long one is 3 times
                      that; default 2000)
  --waitables N       waitables registered at once for --waits' thread and heap counts
                      (default 1000)
  --out DIR           where results.json, chart.svg, http_chart.svg and table.txt go
                      (default target/bench)";

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("bench drives Wine from Linux; run it on Linux (bash scripts/bench.sh)");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
fn main() {
    if let Err(e) = linux::run() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::USAGE;
    use crate::driver::http::wrk_present;
    use crate::driver::native::Strace;
    use crate::driver::perf;
    use crate::driver::report::Results;
    use crate::driver::run::{Counter, Env, Figures, paths};
    use crate::driver::waits::{self, WaitOpts};
    use crate::driver::wine::{Tracer, kill_wineserver, wine_version};
    use bench::System;
    use std::collections::BTreeMap;
    use std::io;
    use std::path::PathBuf;
    use std::time::Instant;

    struct Opts {
        rounds: usize,
        secs: f64,
        conns: Vec<usize>,
        in_flight: usize,
        warmup: f64,
        echo_only: bool,
        trace_echoes: u64,
        sockets: usize,
        churn_ops: usize,
        wakes: usize,
        storm_wakes: usize,
        idle_secs: f64,
        systems: Vec<System>,
        /// The async stacks (echo rows and the HTTP workload).
        async_systems: Vec<System>,
        http: bool,
        http_only: bool,
        http_conns: Vec<usize>,
        /// wrk's measured run; by default 10 s under Wine (its stall when 1,000 connections
        /// start at once lasts seconds), 5 s natively.
        http_secs: Option<u64>,
        trace_requests: u64,
        trace: bool,
        native: bool,
        out: PathBuf,
        out_given: bool,
        rounds_given: bool,
        waits: bool,
        wait_signals: usize,
        waitables: usize,
    }

    fn bad(msg: String) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{msg}\n\n{USAGE}"))
    }

    fn opts() -> io::Result<Opts> {
        let mut o = Opts {
            rounds: 3,
            secs: 2.0,
            // 10,000 works (`--conns 10000 --echo-only`, ~12 minutes for 3 rounds) but does not
            // fit the default run's 15-minute budget too (see the README).
            conns: vec![1000],
            in_flight: 100,
            warmup: 1.0,
            echo_only: false,
            trace_echoes: 2000,
            sockets: 10_000,
            churn_ops: 2000,
            wakes: 1000,
            storm_wakes: 10_000,
            idle_secs: 1.0,
            systems: System::ALL.to_vec(),
            async_systems: System::ASYNC.to_vec(),
            http: true,
            http_only: false,
            http_conns: vec![100, 1000],
            http_secs: None,
            trace_requests: 2000,
            trace: true,
            native: false,
            out: PathBuf::from("target/bench"),
            out_given: false,
            rounds_given: false,
            waits: false,
            wait_signals: 2000,
            waitables: 1000,
        };
        let mut systems_given = false;
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                "--no-trace" => {
                    o.trace = false;
                    continue;
                }
                "--echo-only" => {
                    o.echo_only = true;
                    o.http = false;
                    continue;
                }
                "--http-only" => {
                    o.http_only = true;
                    continue;
                }
                "--no-http" => {
                    o.http = false;
                    continue;
                }
                "--native" => {
                    o.native = true;
                    continue;
                }
                "--waits" => {
                    o.waits = true;
                    continue;
                }
                "--quick" => {
                    (o.rounds, o.secs, o.conns, o.in_flight) = (1, 1.0, vec![50], 20);
                    o.warmup = 0.2;
                    (o.trace_echoes, o.sockets, o.churn_ops) = (200, 300, 100);
                    (o.wakes, o.storm_wakes, o.idle_secs) = (100, 1000, 0.3);
                    (o.http_conns, o.http_secs, o.trace_requests) = (vec![50], Some(1), 200);
                    (o.wait_signals, o.waitables) = (100, 100);
                    o.rounds_given = true;
                    continue;
                }
                _ => {}
            }
            let v = it
                .next()
                .ok_or_else(|| bad(format!("{flag} needs a value")))?;
            let count = |v: &str| -> io::Result<usize> {
                v.parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(format!("{flag} {v:?}: want a positive integer")))
            };
            match flag.as_str() {
                "--rounds" => {
                    o.rounds = count(&v)?;
                    o.rounds_given = true;
                }
                "--wait-signals" => o.wait_signals = count(&v)?,
                "--waitables" => o.waitables = count(&v)?,
                "--secs" => {
                    o.secs = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0 && s.is_finite())
                        .ok_or_else(|| bad(format!("--secs {v:?}: want seconds")))?
                }
                "--warmup" => {
                    o.warmup = v
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s >= 0.0 && s.is_finite())
                        .ok_or_else(|| bad(format!("--warmup {v:?}: want seconds (0 or more)")))?
                }
                "--conns" => o.conns = v.split(',').map(count).collect::<io::Result<_>>()?,
                "--in-flight" => o.in_flight = count(&v)?,
                "--trace-echoes" => o.trace_echoes = count(&v)? as u64,
                "--sockets" => o.sockets = count(&v)?,
                "--churn-ops" => o.churn_ops = count(&v)?,
                "--http-conns" => {
                    o.http_conns = v.split(',').map(count).collect::<io::Result<_>>()?;
                    if let Some(n) = o.http_conns.iter().find(|&&n| n < 2) {
                        return Err(bad(format!(
                            "--http-conns {n}: wrk's 2 threads want 2 or more"
                        )));
                    }
                }
                "--http-secs" => o.http_secs = Some(count(&v)? as u64),
                "--trace-requests" => o.trace_requests = count(&v)? as u64,
                "--systems" => {
                    systems_given = true;
                    let all: Vec<System> = v
                        .split(',')
                        .map(|s| {
                            System::parse(s).ok_or_else(|| bad(format!("unknown system {s:?}")))
                        })
                        .collect::<io::Result<_>>()?;
                    o.systems = all.iter().copied().filter(|s| !s.is_async()).collect();
                    o.async_systems = all.into_iter().filter(|s| s.is_async()).collect();
                }
                "--out" => {
                    o.out = PathBuf::from(v);
                    o.out_given = true;
                }
                "--wine" => {
                    if v != "8" && v != "10" {
                        return Err(bad(format!("--wine {v:?}: want 8 or 10")));
                    }
                    // SAFETY: options are read on the main thread before any other thread
                    // exists, so nothing reads the environment concurrently.
                    unsafe { std::env::set_var("AFD_WINE", &v) };
                }
                _ => return Err(bad(format!("unknown argument {flag}"))),
            }
        }
        if o.http_only && !o.http {
            return Err(bad("--http-only with --no-http or --echo-only".into()));
        }
        if o.waits && o.native {
            return Err(bad(
                "--waits runs under Wine only (not with --native)".into()
            ));
        }
        if o.waits && !o.rounds_given {
            o.rounds = 5;
        }
        if o.native {
            let native_only = |s: &System| matches!(s, System::Afd | System::Mio | System::Polling);
            if !systems_given {
                o.systems.retain(native_only);
            } else if let Some(s) = o.systems.iter().find(|s| !native_only(s)) {
                return Err(bad(format!("--native: {s} runs under Wine only")));
            }
        }
        Ok(o)
    }

    /// What the native servers run on: "Linux 6.1.0, epoll".
    fn native_kernel() -> String {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        format!("Linux {}, epoll", release.trim())
    }

    /// `systems` rotated left by `by` (modulo its length).
    pub(crate) fn rotated(systems: &[System], by: usize) -> Vec<System> {
        let mut v = systems.to_vec();
        if !v.is_empty() {
            let k = by % v.len();
            v.rotate_left(k);
        }
        v
    }

    /// The per-kind request counts among `f`'s figures named `prefix` + kind (rounded-away
    /// kinds, below 0.01 per event, left out).
    fn by_kind(f: &Figures, prefix: &str) -> BTreeMap<String, f64> {
        f.iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(prefix)?.to_string(), *v)))
            .filter(|(_, v)| v.abs() >= 0.01)
            .collect()
    }

    /// Keeps the figures of one run under `prefix_size` names.
    fn keep(r: &mut Results, sys: System, f: &Figures, pairs: &[(&str, String)]) {
        for (from, to) in pairs {
            if let Some(v) = f.get(*from) {
                r.push(to, sys, *v);
            }
        }
    }

    pub fn run() -> io::Result<()> {
        let o = opts()?;
        let http_secs = o.http_secs.unwrap_or(if o.native { 5 } else { 10 });
        let begin = Instant::now();
        let root = std::env::current_dir()?;
        let (exe, logs) = paths(&root, o.native);
        if !exe.exists() {
            let target = if o.native {
                ""
            } else {
                " --target x86_64-pc-windows-gnu"
            };
            return Err(io::Error::other(format!(
                "{} is missing: build it with `cargo build --release -p bench{target}` \
                 (scripts/bench.sh does)",
                exe.display()
            )));
        }
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&o.out)?;
        let wine = if o.native {
            native_kernel()
        } else {
            wine_version(&root)?
        };
        if o.waits {
            let out = if o.out_given {
                o.out.clone()
            } else {
                PathBuf::from("target/bench-waits")
            };
            let w = WaitOpts {
                rounds: o.rounds,
                signals: o.wait_signals,
                warmup: (o.wait_signals / 10).max(10),
                waitables: o.waitables,
                out,
                command: std::iter::once("bench".to_string())
                    .chain(std::env::args().skip(1))
                    .collect::<Vec<_>>()
                    .join(" "),
            };
            return waits::run(&root, &exe, &logs, &wine, &w);
        }
        let env = Env {
            native: o.native,
            root,
            exe,
            logs,
            in_flight: o.in_flight,
            warmup: o.warmup,
            sockets: o.sockets,
            churn_ops: o.churn_ops,
            wakes: o.wakes,
            storm_wakes: o.storm_wakes,
            idle_secs: o.idle_secs,
            runs: Default::default(),
        };
        // What runs: the raw systems' echo and micro workloads, unless only HTTP is asked for;
        // the async stacks' echo; their HTTP workload.
        let raw: &[System] = if o.http_only { &[] } else { &o.systems };
        let echo_async: &[System] = if o.http_only { &[] } else { &o.async_systems };
        let http_systems: &[System] = if o.http { &o.async_systems } else { &[] };
        if !http_systems.is_empty() && !wrk_present() {
            return Err(io::Error::other(
                "wrk is missing (the HTTP workload runs it): run bash scripts/setup.sh, or pass \
                 --no-http",
            ));
        }
        let echo_systems: Vec<System> = raw.iter().chain(echo_async).copied().collect();
        let mut r = Results {
            systems: raw.to_vec(),
            async_systems: o.async_systems.clone(),
            sizes: o.conns.clone(),
            http_sizes: if http_systems.is_empty() {
                Vec::new()
            } else {
                o.http_conns.clone()
            },
            native: o.native,
            ..Default::default()
        };
        r.config = vec![
            (
                if o.native { "kernel" } else { "wine" }.into(),
                wine.clone(),
            ),
            ("rounds".into(), o.rounds.to_string()),
            ("echo_secs".into(), o.secs.to_string()),
            ("connections".into(), format!("{:?}", o.conns)),
            ("in_flight".into(), o.in_flight.to_string()),
            ("warmup_secs".into(), o.warmup.to_string()),
            ("message_bytes".into(), "64".into()),
            (
                "trace_echoes".into(),
                format!("{} and {}", o.trace_echoes, 3 * o.trace_echoes),
            ),
            ("sockets".into(), o.sockets.to_string()),
            (
                "async_systems".into(),
                o.async_systems
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("http_connections".into(), format!("{:?}", r.http_sizes)),
            ("http_secs".into(), http_secs.to_string()),
            (
                "http_client".into(),
                "wrk -t2 --latency --timeout 30s".into(),
            ),
            (
                "trace_requests".into(),
                format!("{} and {}", o.trace_requests, 3 * o.trace_requests),
            ),
            ("churn_ops".into(), o.churn_ops.to_string()),
            (
                "storm".into(),
                format!("4 threads x {} wakes", o.storm_wakes),
            ),
            (
                "cores".into(),
                std::thread::available_parallelism()
                    .map_or(0, |n| n.get())
                    .to_string(),
            ),
        ];
        let say = |msg: String| eprintln!("[bench {:>5.0}s] {msg}", begin.elapsed().as_secs_f64());
        say(format!("under {wine}"));

        // The peerless workloads, unless only the echo (or only HTTP) is asked for.
        let micro_systems: &[System] = if o.echo_only { &[] } else { raw };
        // wrk's warm-up run, in whole seconds.
        let http_warmup = o.warmup.round() as u64;
        // Start from a fresh (untraced) wineserver.
        if !o.native {
            kill_wineserver(&env.root);
        }
        for round in 1..=o.rounds {
            // Each round starts with the next system (A B C, B C A, C A B, ...), so that no system
            // always runs first, right after the previous round's teardowns.
            let order = rotated(&echo_systems, round - 1);
            let micro_order = rotated(micro_systems, round - 1);
            let http_order = rotated(http_systems, round - 1);
            for &n in &o.conns {
                for &sys in &order {
                    let f = env.echo(sys, n, o.secs)?;
                    say(format!(
                        "round {round}/{}: echo {n} conns on {sys}: {:.0} echoes/s",
                        o.rounds, f["echoes_per_sec"]
                    ));
                    keep(
                        &mut r,
                        sys,
                        &f,
                        &[
                            ("echoes_per_sec", format!("echo_{n}")),
                            ("nt_calls_per_echo", format!("nt_calls_per_echo_{n}")),
                        ],
                    );
                }
            }
            for &n in &r.http_sizes.clone() {
                for &sys in &http_order {
                    let f = env.http(sys, n, http_secs, http_warmup)?;
                    let ms = |k: &str| f.get(k).map_or("n/a".into(), |v| format!("{v:.3} ms"));
                    say(format!(
                        "round {round}/{}: http {n} conns on {sys}: {:.0} requests/s, {} of {n} conns answered, p50 {}, p99 {}, {} errors{}",
                        o.rounds,
                        f["requests_per_sec"],
                        f.get("answered_conns")
                            .map_or("?".into(), |v| format!("{v:.0}")),
                        ms("p50_ms"),
                        ms("p99_ms"),
                        f["errors"],
                        if f.contains_key("p50_ms") {
                            ""
                        } else {
                            " (NO REQUEST ANSWERED)"
                        }
                    ));
                    keep(
                        &mut r,
                        sys,
                        &f,
                        &[
                            ("requests_per_sec", format!("http_rps_{n}")),
                            ("p50_ms", format!("http_p50_ms_{n}")),
                            ("p75_ms", format!("http_p75_ms_{n}")),
                            ("p90_ms", format!("http_p90_ms_{n}")),
                            ("p99_ms", format!("http_p99_ms_{n}")),
                            ("mean_ms", format!("http_mean_ms_{n}")),
                            ("max_ms", format!("http_max_ms_{n}")),
                            ("errors", format!("http_errors_{n}")),
                            ("answered_conns", format!("http_answered_conns_{n}")),
                        ],
                    );
                }
            }
            for &sys in &micro_order {
                let f = env.micro(sys, None)?;
                say(format!(
                    "round {round}/{}: micro on {sys}: churn {:.0} ops/s, teardown {:.0} ms, heap {:.1} B/socket",
                    o.rounds,
                    f.get("churn_ops_per_sec").copied().unwrap_or(f64::NAN),
                    f.get("teardown_ms").copied().unwrap_or(f64::NAN),
                    f.get("heap_bytes_per_socket").copied().unwrap_or(f64::NAN),
                ));
                keep(
                    &mut r,
                    sys,
                    &f,
                    &[
                        ("wake_p10_us", "wake_p10_us".into()),
                        ("wake_p50_us", "wake_p50_us".into()),
                        ("wake_p90_us", "wake_p90_us".into()),
                        ("churn_ops_per_sec", "churn_ops_per_sec".into()),
                        ("teardown_ms", "teardown_ms".into()),
                    ],
                );
                // Like for like: a teardown that does not wait for the kernel. The peers' own
                // teardown is that already; afd's is timed again with `abandon`.
                let mut no_wait = f.get("teardown_ms").copied();
                if f.get("teardown_waited") == Some(&1.0) {
                    r.waits_at_teardown.insert(sys);
                    no_wait = env.teardown_no_wait(sys)?;
                    say(format!(
                        "round {round}/{}: teardown without waiting on {sys}: {:.0} ms",
                        o.rounds,
                        no_wait.unwrap_or(f64::NAN)
                    ));
                }
                if let Some(ms) = no_wait {
                    r.push("teardown_no_wait_ms", sys, ms);
                }
                // Exact, not timed: once.
                // wepoll allocates with C's malloc, which the counting allocator cannot see.
                if round == 1 && sys != System::Wepoll {
                    keep(
                        &mut r,
                        sys,
                        &f,
                        &[("heap_bytes_per_socket", "heap_bytes_per_socket".into())],
                    );
                }
            }
        }

        if o.trace {
            let tracer = if o.native {
                say("counting system calls (strace -f; this run is not timed)".into());
                Counter::Native(Strace::new(env.logs.clone()))
            } else {
                say(
                    "counting wineserver requests (tracing wineserver; this run is not timed)"
                        .into(),
                );
                Counter::Wine(Tracer::start(&env.root)?)
            };
            for &n in &o.conns {
                for &sys in &echo_systems {
                    let f = env.echo_traced(&tracer, sys, n, o.trace_echoes)?;
                    say(format!(
                        "traced echo {n} conns on {sys}: {:.2} requests/echo",
                        f["requests_per_echo"]
                    ));
                    r.push(
                        &format!("requests_per_echo_{n}"),
                        sys,
                        f["requests_per_echo"],
                    );
                    r.kinds
                        .entry(n)
                        .or_default()
                        .insert(sys, by_kind(&f, "kind."));
                }
            }
            // Natively perf counts HTTP's system calls too, without slowing the server; its
            // count is the figure, strace's is kept beside it (driver/perf.rs says why).
            let perf_too = o.native && !http_systems.is_empty() && perf::available();
            if o.native && !http_systems.is_empty() && !perf_too {
                say("perf cannot count system calls here: HTTP's are strace's only".into());
            }
            for &n in &r.http_sizes.clone() {
                let e = o.trace_requests;
                let w = e.max(2 * n as u64);
                for &sys in http_systems {
                    let f = env.http_traced(&tracer, sys, n, w, e)?;
                    let how = if o.native { " (strace)" } else { "" };
                    say(format!(
                        "traced http {n} conns on {sys}: {:.2} requests/HTTP request{how}",
                        f["requests_per_http"]
                    ));
                    let (key, kinds) = if perf_too {
                        (
                            format!("strace_requests_per_http_{n}"),
                            &mut r.http_kinds_strace,
                        )
                    } else {
                        (format!("requests_per_http_{n}"), &mut r.http_kinds)
                    };
                    kinds
                        .entry(n)
                        .or_default()
                        .insert(sys, by_kind(&f, "kind."));
                    r.push(&key, sys, f["requests_per_http"]);
                    if perf_too {
                        let f = env.http_perf(sys, n, w, e)?;
                        say(format!(
                            "perf-counted http {n} conns on {sys}: {:.2} syscalls/HTTP request",
                            f["requests_per_http"]
                        ));
                        r.push(
                            &format!("requests_per_http_{n}"),
                            sys,
                            f["requests_per_http"],
                        );
                        r.http_kinds
                            .entry(n)
                            .or_default()
                            .insert(sys, by_kind(&f, "kind."));
                    }
                }
            }
            for &sys in micro_systems {
                let f = env.micro(sys, Some(&tracer))?;
                say(format!(
                    "traced micro on {sys}: storm {} packets, idle {:.2} req/s, churn {:.1} req/op",
                    f.get("storm_packets")
                        .map_or("n/a".into(), |v| format!("{v:.0}")),
                    f.get("idle_requests_per_sec").copied().unwrap_or(f64::NAN),
                    f.get("churn_requests_per_op").copied().unwrap_or(f64::NAN),
                ));
                let churn_kinds = by_kind(&f, "churn_kind.");
                let listed: Vec<String> = churn_kinds
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect();
                say(format!(
                    "  churn requests/op on {sys} by kind: {}",
                    listed.join(", ")
                ));
                r.churn_kinds.insert(sys, churn_kinds);
                keep(
                    &mut r,
                    sys,
                    &f,
                    &[
                        ("storm_packets", "storm_packets".into()),
                        ("idle_requests_per_sec", "idle_requests_per_sec".into()),
                        ("churn_requests_per_op", "churn_requests_per_op".into()),
                    ],
                );
            }
            drop(tracer);
        }
        r.wall_secs = begin.elapsed().as_secs_f64();

        let mut text = r.table();
        text += &r.async_table();
        text += "\ntargets:\n";
        for (t, f, verdict) in r.targets() {
            text += &format!("  [{}] {t}: {f}\n", verdict.word());
        }
        text += &format!("\nwhole run: {:.0} s\n", r.wall_secs);
        println!("\n{text}");
        let mut wrote = vec!["table.txt", "results.json"];
        std::fs::write(o.out.join("table.txt"), &text)?;
        std::fs::write(o.out.join("results.json"), r.json())?;
        if !r.rows().is_empty() {
            std::fs::write(o.out.join("chart.svg"), r.svg())?;
            wrote.push("chart.svg");
        }
        if r.has_async() {
            std::fs::write(o.out.join("http_chart.svg"), r.http_svg())?;
            wrote.push("http_chart.svg");
        }
        say(format!("wrote {}/{{{}}}", o.out.display(), wrote.join(",")));
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::linux::rotated;
    use bench::System;

    #[test]
    fn each_round_starts_with_the_next_system() {
        let all = [System::Afd, System::Mio, System::Polling];
        assert_eq!(rotated(&all, 0), all);
        assert_eq!(
            rotated(&all, 1),
            [System::Mio, System::Polling, System::Afd]
        );
        assert_eq!(rotated(&all, 4), rotated(&all, 1));
        assert!(rotated(&[], 3).is_empty());
    }
}
