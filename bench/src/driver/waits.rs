//! The waitable-handle benchmark (issue 15, `bench --waits`): afd-reactor's `register_waitable`
//! against polling's `add_waitable`, under Wine, where both run on one-shot thread-pool waits.
//!
//! Per system and round, two processes of `bench-server` (see its `waits.rs`):
//! - `waits-many` (under the ordinary wineserver, untraced, so tracing does not slow the thread
//!   pool and change how many workers it starts): the process's threads and live heap around the
//!   registration of N auto-reset events, their signals, and their deregistration;
//! - `waits-signal` (under a tracing wineserver): wineserver requests per signal of one auto-reset
//!   event, set by the polling thread itself and by another thread, as the difference between
//!   segments of K and 3K signals (so every fixed cost, the marks included, cancels out), by
//!   thread (the loop, the signaller, the pool) and by request name; and the reactor's NT calls.
//!
//! Systems: afd-reactor and polling, each in level mode (re-armed by the system itself after each
//! event) and in oneshot mode (re-armed by the caller: `reregister_waitable`, `modify_waitable`).

use super::report::{num, spread};
use super::run::{diff, kinds_diff};
use super::wine::{Server, Tally, Tracer, kill_wineserver};
use bench::Record;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the waitable benchmark runs.
pub struct WaitOpts {
    pub rounds: usize,
    /// Signals in the short measured segment (the long one has 3 times as many).
    pub signals: usize,
    /// Signals before the first segment, not counted.
    pub warmup: usize,
    /// Waitables registered at once for the thread and heap counts.
    pub waitables: usize,
    pub out: PathBuf,
    /// The command line that produced the figures (for the report).
    pub command: String,
}

/// One system as the benchmark runs it: a label, the server's `--system` and `--mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WaitSys {
    label: &'static str,
    system: &'static str,
    mode: &'static str,
}

const SYSTEMS: [WaitSys; 4] = [
    WaitSys {
        label: "afd",
        system: "afd",
        mode: "level",
    },
    WaitSys {
        label: "afd-oneshot",
        system: "afd",
        mode: "oneshot",
    },
    WaitSys {
        label: "polling",
        system: "polling",
        mode: "level",
    },
    WaitSys {
        label: "polling-oneshot",
        system: "polling",
        mode: "oneshot",
    },
];

/// The two ways a signal comes.
const VARIANTS: [(&str, &str); 2] = [
    ("same", "set by the polling thread itself, then polled for"),
    (
        "thread",
        "set by another thread once the loop has reported the previous one",
    ),
];

/// Per-round values: metric → system label → one value per round.
#[derive(Default)]
struct Data {
    values: BTreeMap<String, BTreeMap<&'static str, Vec<f64>>>,
    /// Requests per signal by name: `variant.threads` (threads: `process`, `main`, `signaller`,
    /// `pool`) → label → name → per-round values.
    kinds: BTreeMap<String, BTreeMap<&'static str, BTreeMap<String, Vec<f64>>>>,
    /// Facts the server reported (the wait path in use, ...).
    facts: BTreeMap<String, String>,
}

impl Data {
    fn push(&mut self, metric: &str, label: &'static str, v: f64) {
        self.values
            .entry(metric.to_string())
            .or_default()
            .entry(label)
            .or_default()
            .push(v);
    }

    fn get(&self, metric: &str, label: &str) -> Option<&Vec<f64>> {
        self.values.get(metric)?.get(label)
    }
}

/// Every request in the tally, from any thread (of any Wine process).
fn everything(t: &Tally) -> u64 {
    t.0.values().flat_map(|m| m.values()).sum()
}

fn start(
    root: &Path,
    exe: &Path,
    logs: &Path,
    n: u32,
    s: WaitSys,
    args: &[String],
) -> io::Result<Server> {
    let what = &args[0];
    let mut all = args.to_vec();
    all.extend(
        ["--system", s.system, "--mode", s.mode]
            .iter()
            .map(|x| x.to_string()),
    );
    let log = logs.join(format!("{n:03}-{what}-{}.log", s.label));
    Server::start(root, exe, &all, &log, false, None)
}

/// Waits for the `result` record of `workload`.
fn result(server: &mut Server, workload: &str) -> io::Result<Record> {
    loop {
        let r = server.next(Duration::from_secs(300))?;
        if r.kind == "result" && r.get("workload") == Some(workload) {
            return Ok(r);
        }
    }
}

/// One `waits-many` run: threads and heap for `o.waitables` registrations.
fn many(
    root: &Path,
    exe: &Path,
    logs: &Path,
    n: u32,
    s: WaitSys,
    o: &WaitOpts,
    d: &mut Data,
) -> io::Result<String> {
    let args = vec![
        "waits-many".to_string(),
        "--waitables".into(),
        o.waitables.to_string(),
    ];
    let mut server = start(root, exe, logs, n, s, &args)?;
    let r = result(&mut server, "many")?;
    server.wait(Duration::from_secs(120))?;
    for key in [
        "threads_before",
        "threads_armed",
        "threads_armed_200ms",
        "threads_peak",
        "threads_signaled",
        "threads_idle_1s",
        "threads_removed",
        "heap_per_registration",
        "state_heap_per_registration",
        "heap_after_signals_per_registration",
        "heap_after_removal_per_registration",
        "state_heap_after_removal_per_registration",
        "heap_after_second_batch_per_registration",
        "threads_second_batch",
        "signal_secs",
        "nt_wait_arm",
        "nt_wait_cancel",
        "nt_dequeue",
    ] {
        if let Some(v) = r.num(key) {
            d.push(&format!("many.{key}"), s.label, v);
        }
    }
    if let Some(p) = r.get("wait_path") {
        d.facts.insert("afd wait path".into(), p.into());
    }
    Ok(format!(
        "threads {} → {} armed → {} after the signals; heap {} B/registration",
        r.get("threads_before").unwrap_or("?"),
        r.get("threads_armed").unwrap_or("?"),
        r.get("threads_signaled").unwrap_or("?"),
        r.get("heap_per_registration").unwrap_or("?"),
    ))
}

/// One `waits-signal` run under the tracer: requests and NT calls per signal.
#[allow(clippy::too_many_arguments)]
fn signal(
    root: &Path,
    exe: &Path,
    logs: &Path,
    n: u32,
    s: WaitSys,
    o: &WaitOpts,
    tracer: &Tracer,
    d: &mut Data,
) -> io::Result<String> {
    let args = vec![
        "waits-signal".to_string(),
        "--signals".into(),
        o.signals.to_string(),
        "--warmup-signals".into(),
        o.warmup.max(1).to_string(),
    ];
    let mut server = start(root, exe, logs, n, s, &args)?;
    let mut marks: HashMap<String, Tally> = HashMap::new();
    let mut roles: HashMap<String, (u32, u32)> = HashMap::new();
    let mut results: HashMap<(String, String), Record> = HashMap::new();
    loop {
        let r = server.next(Duration::from_secs(300))?;
        match r.kind.as_str() {
            "mark" => {
                let name = r.get("name").unwrap_or("").to_string();
                marks.insert(name.clone(), tracer.settle_and_count());
                server.go_on()?;
                if name == "thread-c" {
                    break;
                }
            }
            "roles" => {
                let id = |k: &str| r.num(k).map_or(0, |v| v as u32);
                roles.insert(
                    r.get("variant").unwrap_or("").into(),
                    (id("main"), id("signaller")),
                );
            }
            "result" => {
                results.insert(
                    (
                        r.get("variant").unwrap_or("").into(),
                        r.get("segment").unwrap_or("").into(),
                    ),
                    r,
                );
            }
            _ => {}
        }
    }
    let tids = server.tids.clone();
    server.wait(Duration::from_secs(120))?;
    let k = o.signals as f64;
    let mut said = Vec::new();
    for (variant, _) in VARIANTS {
        let mark = |seg: &str| {
            marks
                .get(&format!("{variant}-{seg}"))
                .ok_or_else(|| io::Error::other(format!("no mark {variant}-{seg}")))
        };
        let (ta, tb) = (mark("b")?.since(mark("a")?), mark("c")?.since(mark("b")?));
        let &(main, signaller) = roles
            .get(variant)
            .ok_or_else(|| io::Error::other(format!("no roles for {variant}")))?;
        let pool: Vec<u32> = tids
            .iter()
            .copied()
            .filter(|&t| t != main && t != signaller)
            .collect();
        let per =
            |threads: &[u32]| diff(tb.by_threads(threads), ta.by_threads(threads)) / (2.0 * k);
        let total = per(&tids);
        let any = diff(everything(&tb), everything(&ta)) / (2.0 * k);
        d.push(&format!("{variant}.requests"), s.label, total);
        d.push(&format!("{variant}.requests.main"), s.label, per(&[main]));
        if signaller != main {
            d.push(
                &format!("{variant}.requests.signaller"),
                s.label,
                per(&[signaller]),
            );
        }
        d.push(&format!("{variant}.requests.pool"), s.label, per(&pool));
        d.push(
            &format!("{variant}.requests.elsewhere"),
            s.label,
            any - total,
        );
        d.push(
            &format!("{variant}.pool_threads_seen"),
            s.label,
            pool.len() as f64,
        );
        let mut groups = vec![("process", tids.clone()), ("main", vec![main])];
        if signaller != main {
            groups.push(("signaller", vec![signaller]));
        }
        groups.push(("pool", pool.clone()));
        for (group, threads) in groups {
            let kinds = d
                .kinds
                .entry(format!("{variant}.{group}"))
                .or_default()
                .entry(s.label)
                .or_default();
            for (kind, v) in kinds_diff(&tb, &ta, &threads) {
                kinds.entry(kind).or_default().push(v / (2.0 * k));
            }
        }
        let rec = |seg: &str| {
            results
                .get(&(variant.to_string(), seg.to_string()))
                .ok_or_else(|| io::Error::other(format!("no result {variant}/{seg}")))
        };
        let (ra, rb) = (rec("a")?, rec("b")?);
        // The NT counters are cumulative: segment b alone is their difference.
        for key in [
            "nt_total",
            "nt_dequeue",
            "nt_wait_arm",
            "nt_wait_cancel",
            "nt_wait_open",
            "nt_wait_close",
            "nt_post",
        ] {
            if let (Some(a), Some(b)) = (ra.num(key), rb.num(key)) {
                d.push(&format!("{variant}.{key}"), s.label, (b - a) / (3.0 * k));
            }
        }
        if let (Some(a), Some(b)) = (ra.num("polls"), rb.num("polls")) {
            d.push(&format!("{variant}.polls"), s.label, (b - a) / (2.0 * k));
        }
        said.push(format!("{variant}: {total:.2} req/signal"));
    }
    Ok(said.join(", "))
}

/// Runs the waitable benchmark and writes `report.md` and `results.json` to `o.out`.
pub fn run(root: &Path, exe: &Path, logs: &Path, wine: &str, o: &WaitOpts) -> io::Result<()> {
    let begin = Instant::now();
    let say = |msg: String| eprintln!("[waits {:>5.0}s] {msg}", begin.elapsed().as_secs_f64());
    say(format!("under {wine}"));
    std::fs::create_dir_all(&o.out)?;
    std::fs::create_dir_all(logs)?;
    let mut d = Data::default();
    let mut n = 0;
    let rotated = |round: usize| {
        let mut v = SYSTEMS.to_vec();
        v.rotate_left(round % SYSTEMS.len());
        v
    };
    // Threads and heap, untraced: a fresh ordinary wineserver.
    kill_wineserver(root);
    for round in 1..=o.rounds {
        for s in rotated(round - 1) {
            n += 1;
            let line = many(root, exe, logs, n, s, o, &mut d)?;
            say(format!(
                "round {round}/{}: {} waitables on {}: {line}",
                o.rounds, o.waitables, s.label
            ));
        }
    }
    say("counting wineserver requests per signal (tracing wineserver)".into());
    {
        let tracer = Tracer::start(root)?;
        for round in 1..=o.rounds {
            for s in rotated(round - 1) {
                n += 1;
                let line = signal(root, exe, logs, n, s, o, &tracer, &mut d)?;
                say(format!("round {round}/{}: {}: {line}", o.rounds, s.label));
            }
        }
    }
    let secs = begin.elapsed().as_secs_f64();
    let report = report(&d, wine, o, secs);
    println!("\n{report}");
    std::fs::write(o.out.join("report.md"), &report)?;
    std::fs::write(o.out.join("results.json"), json(&d, wine, o))?;
    say(format!(
        "wrote {}/{{report.md,results.json}}",
        o.out.display()
    ));
    Ok(())
}

/// `median [min–max]`, or the value alone when every round gave it; whole numbers (counts of
/// threads) as such.
fn cell(v: Option<&Vec<f64>>) -> String {
    let whole = v.is_some_and(|v| v.iter().all(|x| x.fract() == 0.0));
    let f = |x: f64| {
        if whole && x.fract() == 0.0 {
            format!("{x:.0}")
        } else {
            num(x)
        }
    };
    match v.and_then(|v| spread(v)) {
        None => "n/a".into(),
        Some((m, lo, hi)) if lo == hi => f(m),
        Some((m, lo, hi)) => format!("{} [{}–{}]", f(m), f(lo), f(hi)),
    }
}

fn header(out: &mut String, first: &str) {
    let labels: Vec<&str> = SYSTEMS.iter().map(|s| s.label).collect();
    let _ = writeln!(out, "| {first} | {} |", labels.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(labels.len()));
}

fn row(out: &mut String, d: &Data, name: &str, metric: &str) {
    let cells: Vec<String> = SYSTEMS
        .iter()
        .map(|s| cell(d.get(metric, s.label)))
        .collect();
    let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
}

/// The request names worth a row: at least 0.05 per signal (median) on some system, the most
/// frequent first.
fn names(d: &Data, variant: &str) -> Vec<String> {
    let mut best: BTreeMap<String, f64> = BTreeMap::new();
    if let Some(by_sys) = d.kinds.get(variant) {
        for kinds in by_sys.values() {
            for (k, v) in kinds {
                if let Some((m, _, _)) = spread(v) {
                    let b = best.entry(k.clone()).or_insert(0.0);
                    *b = b.max(m);
                }
            }
        }
    }
    let mut v: Vec<(String, f64)> = best.into_iter().filter(|(_, m)| *m >= 0.05).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(k, _)| k).collect()
}

fn report(d: &Data, wine: &str, o: &WaitOpts, secs: f64) -> String {
    let mut r = String::new();
    let _ = writeln!(
        r,
        "# Waitable handles under {wine}: afd-reactor against polling (issue 15)\n"
    );
    let _ = writeln!(
        r,
        "Produced by `{}` ({:.0} s). {} rounds, each system in turn, each round starting with the \
         next system; a cell is the median [min–max] of the rounds, or one value where every \
         round gave the same. The machine was busy (another job ran Wine tests): counts do not \
         depend on that, times do.\n",
        o.command, secs, o.rounds
    );
    let path = d.facts.get("afd wait path").map_or("?", String::as_str);
    let _ = writeln!(
        r,
        "Both systems wait on a one-shot thread-pool wait per arming (`RegisterWaitForSingleObject`, \
         `WT_EXECUTEONLYONCE`) whose callback posts to the completion port: afd-reactor's wait path \
         in use here is `{path}` (Wine has no wait completion packets). On each signal, afd-reactor \
         re-arms at its next `poll` with a blocking `UnregisterWaitEx` of the spent wait and a new \
         `RegisterWaitForSingleObject`; polling's callback unregisters its own wait \
         (`UnregisterWait`, non-blocking, on the pool thread) and re-arms at its next `wait`. \
         Systems: `afd` and `polling` in level mode (each re-arms by itself after an event), \
         `afd-oneshot` and `polling-oneshot` in oneshot mode (the caller re-arms: \
         `reregister_waitable`, `modify_waitable`, as async-io does).\n"
    );

    for (variant, how) in VARIANTS {
        let _ = writeln!(
            r,
            "## Wineserver requests per signal: one auto-reset event, {how}\n"
        );
        let _ = writeln!(
            r,
            "Counted by a tracing wineserver (`-d1`) by thread, as the difference between a \
             segment of {} and one of {} signals (after {} signals of warm-up), divided by {}.\n",
            o.signals,
            3 * o.signals,
            o.warmup,
            2 * o.signals
        );
        header(&mut r, "per signal");
        row(
            &mut r,
            d,
            "**requests, whole process**",
            &format!("{variant}.requests"),
        );
        row(
            &mut r,
            d,
            "… by the polling thread",
            &format!("{variant}.requests.main"),
        );
        if variant == "thread" {
            row(
                &mut r,
                d,
                "… by the signalling thread",
                &format!("{variant}.requests.signaller"),
            );
        }
        row(
            &mut r,
            d,
            "… by the thread pool's threads",
            &format!("{variant}.requests.pool"),
        );
        row(
            &mut r,
            d,
            "requests of other processes, or of threads not seen",
            &format!("{variant}.requests.elsewhere"),
        );
        for (group, whose) in [
            ("process", "whole process"),
            ("main", "polling thread"),
            ("signaller", "signalling thread"),
            ("pool", "thread pool"),
        ] {
            let key = format!("{variant}.{group}");
            for name in names(d, &key) {
                let cells: Vec<String> = SYSTEMS
                    .iter()
                    .map(|s| match d.kinds.get(&key).and_then(|k| k.get(s.label)) {
                        // Measured, and never seen: none.
                        Some(k) if !k.contains_key(&name) => "0".into(),
                        k => cell(k.and_then(|k| k.get(&name))),
                    })
                    .collect();
                let _ = writeln!(r, "| `{name}` ({whose}) | {} |", cells.join(" | "));
            }
        }
        row(
            &mut r,
            d,
            "polls (waits) per signal",
            &format!("{variant}.polls"),
        );
        row(
            &mut r,
            d,
            "afd-reactor NT calls (`stats().nt.total()`)",
            &format!("{variant}.nt_total"),
        );
        row(&mut r, d, "… `dequeue`", &format!("{variant}.nt_dequeue"));
        row(&mut r, d, "… `wait_arm`", &format!("{variant}.nt_wait_arm"));
        row(
            &mut r,
            d,
            "… `wait_cancel`",
            &format!("{variant}.nt_wait_cancel"),
        );
        let _ = writeln!(r);
    }
    let _ = writeln!(
        r,
        "`SetEvent`'s own requests are the signalling thread's row (in the other-thread \
         variant; in the same-thread one they are among the polling thread's). afd-reactor's NT calls count \
         each re-arm as one `wait_arm`; on the thread-pool path that is two Win32 calls \
         (`UnregisterWaitEx` of the spent wait, then `RegisterWaitForSingleObject`), and each \
         signal also costs the pool's callback one `NtSetIoCompletion` (not a reactor call). \
         polling keeps no counters; its calls per signal, from its source: the callback's \
         `UnregisterWait` and `PostQueuedCompletionStatus`, the loop's \
         `GetQueuedCompletionStatusEx` and `RegisterWaitForSingleObject`.\n"
    );

    let _ = writeln!(
        r,
        "## Threads for {} registered waitables\n\nThe process's thread count (Toolhelp32 \
         snapshot), one fresh process per system and round (untraced wineserver). A wait \
         completion packet would need no thread at all; both systems here wait on the thread \
         pool.\n",
        o.waitables
    );
    header(&mut r, "threads");
    for (name, key) in [
        ("before registering", "threads_before"),
        ("registered and armed, none signaled", "threads_armed"),
        ("… 200 ms later", "threads_armed_200ms"),
        ("peak while the signals were reported", "threads_peak"),
        (
            "after each was signaled once and reported",
            "threads_signaled",
        ),
        ("… after 1 s idle", "threads_idle_1s"),
        ("after deregistering them all", "threads_removed"),
        (
            "after a second batch registered and deregistered",
            "threads_second_batch",
        ),
    ] {
        row(&mut r, d, name, &format!("many.{key}"));
    }
    row(
        &mut r,
        d,
        "time to report all signals (s; busy machine)",
        "many.signal_secs",
    );
    let _ = writeln!(r);

    let _ = writeln!(
        r,
        "## Heap per registration\n\nLive bytes of the Rust heap (a counting \
         `#[global_allocator]`) after registering {} auto-reset events and one zero-timeout poll \
         (polling arms its waits there), minus before, divided by {}. afd-reactor's includes the \
         thread-pool callback slots, allocated 256 at a time and never freed (recycled); Wine's \
         own allocations for each pool wait (ntdll's heap) are in neither figure.\n",
        o.waitables, o.waitables
    );
    header(&mut r, "bytes per registration");
    for (name, key) in [
        ("Rust heap, registered and armed", "heap_per_registration"),
        (
            "… of which the reactor's state (`state_heap_bytes()`)",
            "state_heap_per_registration",
        ),
        (
            "Rust heap after each was signaled once",
            "heap_after_signals_per_registration",
        ),
        (
            "Rust heap left after deregistering them all",
            "heap_after_removal_per_registration",
        ),
        (
            "… of which the reactor's state",
            "state_heap_after_removal_per_registration",
        ),
        (
            "Rust heap left after a second batch registered and deregistered",
            "heap_after_second_batch_per_registration",
        ),
    ] {
        row(&mut r, d, name, &format!("many.{key}"));
    }
    r
}

fn json_values(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x}")).collect();
    format!("[{}]", parts.join(", "))
}

fn json(d: &Data, wine: &str, o: &WaitOpts) -> String {
    let mut j = String::from("{\n");
    let _ = writeln!(
        j,
        "  \"config\": {{\"wine\": \"{wine}\", \"rounds\": {}, \"signals\": [{}, {}], \
         \"warmup_signals\": {}, \"waitables\": {}}},",
        o.rounds,
        o.signals,
        3 * o.signals,
        o.warmup,
        o.waitables
    );
    j += "  \"values\": {\n";
    let metrics: Vec<String> = d
        .values
        .iter()
        .map(|(m, by)| {
            let sys: Vec<String> = by
                .iter()
                .map(|(l, v)| format!("\"{l}\": {}", json_values(v)))
                .collect();
            format!("    \"{m}\": {{{}}}", sys.join(", "))
        })
        .collect();
    j += &metrics.join(",\n");
    j += "\n  },\n  \"requests_by_name\": {\n";
    let variants: Vec<String> = d
        .kinds
        .iter()
        .map(|(variant, by)| {
            let sys: Vec<String> = by
                .iter()
                .map(|(l, kinds)| {
                    let names: BTreeSet<&String> = kinds.keys().collect();
                    let k: Vec<String> = names
                        .into_iter()
                        .map(|n| format!("\"{n}\": {}", json_values(&kinds[n])))
                        .collect();
                    format!("      \"{l}\": {{{}}}", k.join(", "))
                })
                .collect();
            format!("    \"{variant}\": {{\n{}\n    }}", sys.join(",\n"))
        })
        .collect();
    j += &variants.join(",\n");
    j += "\n  }\n}\n";
    j
}
