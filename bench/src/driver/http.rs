//! The HTTP workload: wrk against `bench-server http` on each async stack.
//!
//! Timed: `wrk -t2 -cN -dS --latency --timeout 30s http://addr/`, after an optional warm-up run
//! of wrk on the same server; wrk's requests/s and latency percentiles are the figures. (The
//! 30 s timeout keeps wrk recording every latency: it leaves out of its histogram those longer
//! than its timeout, 2 s by default, which Wine's stall at 1,000 connections exceeds.)
//!
//! Counted: the server stops at three marks, after W, W+E and W+4E answered requests (`mark
//! name=http-k requests=…`), while wrk runs; the wineserver requests (natively, the system
//! calls) of every thread of the server between marks 0 and 1 and between marks 1 and 2, and
//! the requests answered in each, give the cost of one HTTP request as the difference of the two
//! segments over the difference of their requests, so fixed costs (the marks themselves, the
//! burst after each pause) cancel out. Natively the system calls are counted twice: under
//! strace, as the echo's are, and with perf, which does not slow the server (`perf.rs` says why
//! that matters here); perf's count is the figure, strace's is shown beside it.

use super::perf::{Perf, TOTAL};
use super::run::{Counter, Env, Figures, addr_of, diff, expect, kinds_diff, ready_record};
use bench::System;
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// What wrk reported.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Wrk {
    pub requests_per_sec: f64,
    pub requests: u64,
    /// Mean and largest latency, in milliseconds.
    pub mean_ms: f64,
    pub max_ms: f64,
    /// Latency percentiles, in milliseconds: 50, 75, 90, 99.
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx responses, all together.
    pub errors: u64,
    pub non_2xx: u64,
}

/// A wrk duration or latency (`620.00us`, `1.20ms`, `2.00s`, `1.50m`) in milliseconds.
fn millis(v: &str) -> Option<f64> {
    let split = v.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(n * scale)
}

/// Parses wrk's output (with `--latency`).
pub fn parse_wrk(text: &str) -> Option<Wrk> {
    let mut w = Wrk::default();
    let (mut rps, mut pcts) = (false, 0);
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["Latency", avg, _, max, _] => {
                w.mean_ms = millis(avg)?;
                w.max_ms = millis(max)?;
            }
            ["Requests/sec:", v] => {
                w.requests_per_sec = v.parse().ok()?;
                rps = true;
            }
            [p @ ("50%" | "75%" | "90%" | "99%"), v] => {
                let ms = millis(v)?;
                match p {
                    "50%" => w.p50_ms = ms,
                    "75%" => w.p75_ms = ms,
                    "90%" => w.p90_ms = ms,
                    _ => w.p99_ms = ms,
                }
                pcts += 1;
            }
            [n, "requests", "in", ..] => w.requests = n.parse().ok()?,
            ["Socket", "errors:", ..] => {
                // Socket errors: connect 0, read 0, write 0, timeout 0
                w.errors += words[2..]
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                w.non_2xx = n.parse().ok()?;
                w.errors += w.non_2xx;
            }
            _ => {}
        }
    }
    (rps && pcts == 4).then_some(w)
}

/// Whether `wrk` is on the PATH.
pub fn wrk_present() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| {
            let p = d.join("wrk");
            p.is_file()
                && std::fs::metadata(&p)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                    .unwrap_or(false)
        })
    })
}

/// Starts `wrk -t2 -c{conns} -d{secs}s --latency --timeout 30s http://{addr}/`, its output into
/// `log`.
fn spawn_wrk(addr: SocketAddr, conns: usize, secs: u64, log: &Path) -> io::Result<Child> {
    let out = std::fs::File::create(log)?;
    Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{conns}"))
        .arg(format!("-d{secs}s"))
        .args(["--latency", "--timeout", "30s"])
        .arg(format!("http://{addr}/"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .map_err(|e| io::Error::other(format!("starting wrk: {e} (run bash scripts/setup.sh)")))
}

/// Runs wrk to its end and parses what it printed.
fn run_wrk(addr: SocketAddr, conns: usize, secs: u64, log: &Path) -> io::Result<Wrk> {
    let status = spawn_wrk(addr, conns, secs, log)?.wait()?;
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if !status.success() {
        return Err(io::Error::other(format!(
            "wrk exited with {status} (output in {})",
            log.display()
        )));
    }
    parse_wrk(&text).ok_or_else(|| {
        io::Error::other(format!(
            "could not read wrk's figures in {}:\n{text}",
            log.display()
        ))
    })
}

/// Ends an HTTP server: a connection to its control address.
fn stop(control: SocketAddr) -> io::Result<()> {
    TcpStream::connect_timeout(&control, Duration::from_secs(30)).map(drop)
}

/// Sends `what` on a connection to an HTTP server's control address (`r`: restart the count
/// of connections answered).
fn control_say(control: SocketAddr, what: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut c = TcpStream::connect_timeout(&control, Duration::from_secs(30))?;
    c.write_all(what)
}

impl Env {
    fn wrk_log(&self, system: System, conns: usize, what: &str) -> std::path::PathBuf {
        let n = self.runs.get();
        self.logs
            .join(format!("{n:03}-http-{system}-{conns}-{what}.wrk.txt"))
    }

    /// Requests/s and latency under wrk over `conns` connections for `secs` seconds, after a
    /// warm-up of `warmup` seconds (0: none).
    pub fn http(
        &self,
        system: System,
        conns: usize,
        secs: u64,
        warmup: u64,
    ) -> io::Result<Figures> {
        let mut server = self.start(system, "http", &[], None)?;
        let r = ready_record(&mut server)?;
        let (addr, control) = (addr_of(&r, "addr")?, addr_of(&r, "control")?);
        if warmup > 0 {
            run_wrk(addr, conns, warmup, &self.wrk_log(system, conns, "warmup"))?;
            // Let the warm-up's connections close (under Wine, 1,000 closes at once stall the
            // server for seconds) before the measured run opens its own.
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match server.next(left) {
                    Ok(r) if r.kind == "idle" => break,
                    Ok(_) => {}
                    Err(_) if left.is_zero() || std::time::Instant::now() >= deadline => {
                        eprintln!(
                            "[bench] {system}, {conns} conns: the warm-up's connections were \
                             not all closed after 60 s; measuring anyway"
                        );
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        // Count the connections answered from here.
        control_say(control, b"r")?;
        let log = self.wrk_log(system, conns, "measured");
        let w = run_wrk(addr, conns, secs, &log);
        stop(control)?;
        let done = expect(&mut server, "http", Duration::from_secs(120))?;
        server.wait(Duration::from_secs(120))?;
        let w = w?;
        if w.non_2xx > 0 {
            return Err(io::Error::other(format!(
                "{system}: {} answers not 2xx (wrk's output in {})",
                w.non_2xx,
                log.display()
            )));
        }
        let mut f = Figures::new();
        f.insert("requests_per_sec".into(), w.requests_per_sec);
        // No request answered in the run: no latency to report (the run counts, at 0 req/s).
        if w.requests > 0 {
            f.insert("p50_ms".into(), w.p50_ms);
            f.insert("p75_ms".into(), w.p75_ms);
            f.insert("p90_ms".into(), w.p90_ms);
            f.insert("p99_ms".into(), w.p99_ms);
            f.insert("mean_ms".into(), w.mean_ms);
            f.insert("max_ms".into(), w.max_ms);
        }
        f.insert("errors".into(), w.errors as f64);
        if let Some(n) = done.num("requests") {
            f.insert("server_requests".into(), n);
        }
        // The connections of the measured run that had a request answered: below `conns`, the
        // stack left some waiting through the whole run (their requests are in no latency
        // figure).
        if let Some(n) = done.num("answered_conns") {
            f.insert("answered_conns".into(), n);
        }
        Ok(f)
    }

    /// Wineserver requests (natively: system calls) per HTTP request, from the server's marks
    /// after `w`, `w + e` and `w + 4e` requests (module documentation).
    pub fn http_traced(
        &self,
        counter: &Counter,
        system: System,
        conns: usize,
        w: u64,
        e: u64,
    ) -> io::Result<Figures> {
        let marks = format!("{w},{e}");
        let mut server = self.start(system, "http", &["--marks".into(), marks], Some(counter))?;
        let r = ready_record(&mut server)?;
        let (addr, control) = (addr_of(&r, "addr")?, addr_of(&r, "control")?);
        // Long enough for any traced run; it is stopped after the last mark.
        let log = self.wrk_log(system, conns, "traced");
        let mut wrk = spawn_wrk(addr, conns, 3600, &log)?;
        let mut at = Vec::new();
        let result = (|| -> io::Result<()> {
            while at.len() < 3 {
                let r = server.next(Duration::from_secs(600))?;
                if r.kind == "mark" {
                    let n = r.num("requests").unwrap_or(f64::NAN);
                    at.push((n, counter.settle_and_count()));
                    server.go_on()?;
                }
            }
            Ok(())
        })();
        let _ = wrk.kill();
        let _ = wrk.wait();
        result?;
        stop(control)?;
        expect(&mut server, "http", Duration::from_secs(120))?;
        let tids = server.tids.clone();
        server.wait(Duration::from_secs(120))?;
        let (na, nb) = (at[1].0 - at[0].0, at[2].0 - at[1].0);
        let (ta, tb) = (at[1].1.since(&at[0].1), at[2].1.since(&at[1].1));
        let per = nb - na;
        if per.is_nan() || per <= 0.0 {
            return Err(io::Error::other(format!(
                "{system}: traced HTTP segments of {na} and {nb} requests"
            )));
        }
        let mut f = Figures::new();
        f.insert(
            "requests_per_http".into(),
            diff(tb.by_threads(&tids), ta.by_threads(&tids)) / per,
        );
        for (kind, v) in kinds_diff(&tb, &ta, &tids) {
            f.insert(format!("kind.{kind}"), v / per);
        }
        Ok(f)
    }
}

impl Env {
    /// System calls per HTTP request counted with perf (native only; module documentation):
    /// the same marks as [`http_traced`](Self::http_traced), the server not traced.
    pub fn http_perf(&self, system: System, conns: usize, w: u64, e: u64) -> io::Result<Figures> {
        let marks = format!("{w},{e}");
        let mut server = self.start(system, "http", &["--marks".into(), marks], None)?;
        let r = ready_record(&mut server)?;
        let (addr, control) = (addr_of(&r, "addr")?, addr_of(&r, "control")?);
        let log = self.wrk_log(system, conns, "perf");
        let mut wrk = spawn_wrk(addr, conns, 3600, &log)?;
        let pid = server.pid();
        let run = self.runs.get();
        let mut at: Vec<f64> = Vec::new();
        let mut segs: Vec<BTreeMap<String, u64>> = Vec::new();
        let result = (|| -> io::Result<()> {
            let mut perf: Option<Perf> = None;
            while at.len() < 3 {
                let r = server.next(Duration::from_secs(600))?;
                if r.kind != "mark" {
                    continue;
                }
                at.push(r.num("requests").unwrap_or(f64::NAN));
                if let Some(p) = perf.take() {
                    segs.push(p.finish()?);
                }
                if at.len() < 3 {
                    let out = self.logs.join(format!(
                        "{run:03}-http-{system}-{conns}-perf{}.csv",
                        at.len()
                    ));
                    perf = Some(Perf::attach(pid, out)?);
                }
                server.go_on()?;
            }
            Ok(())
        })();
        let _ = wrk.kill();
        let _ = wrk.wait();
        result?;
        stop(control)?;
        expect(&mut server, "http", Duration::from_secs(120))?;
        server.wait(Duration::from_secs(120))?;
        let per = (at[2] - at[1]) - (at[1] - at[0]);
        if per.is_nan() || per <= 0.0 {
            return Err(io::Error::other(format!(
                "{system}: perf-counted HTTP segments at {at:?} requests"
            )));
        }
        let (a, b) = (&segs[0], &segs[1]);
        let get = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let mut f = Figures::new();
        f.insert(
            "requests_per_http".into(),
            diff(get(b, TOTAL), get(a, TOTAL)) / per,
        );
        let mut named = 0.0;
        let kinds: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for k in kinds.into_iter().filter(|k| *k != TOTAL) {
            let v = diff(get(b, k), get(a, k)) / per;
            named += v;
            f.insert(format!("kind.{k}"), v);
        }
        f.insert("kind.other".into(), f["requests_per_http"] - named);
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "Running 2s test @ http://127.0.0.1:36321/
  2 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.33ms    1.82ms   8.33ms   83.27%
    Req/Sec    79.41k     8.83k   95.69k    60.00%
  Latency Distribution
     50%  240.00us
     75%    2.17ms
     90%    4.08ms
     99%    1.20s 
  316077 requests in 2.00s, 23.51MB read
  Socket errors: connect 0, read 2, write 0, timeout 5
  Non-2xx or 3xx responses: 3
Requests/sec: 157857.44
Transfer/sec:     11.74MB
";

    #[test]
    fn reads_wrk() {
        let w = parse_wrk(OUT).expect("parsed");
        assert_eq!(w.requests_per_sec, 157857.44);
        assert_eq!((w.mean_ms, w.max_ms), (1.33, 8.33));
        assert_eq!(w.requests, 316077);
        assert!((w.p50_ms - 0.24).abs() < 1e-9);
        assert_eq!(w.p75_ms, 2.17);
        assert_eq!(w.p90_ms, 4.08);
        assert_eq!(w.p99_ms, 1200.0);
        assert_eq!(w.non_2xx, 3);
        assert_eq!(w.errors, 10);
        assert_eq!(parse_wrk("Requests/sec: 1.0"), None, "no percentiles");
        assert_eq!(millis("1.50m"), Some(90_000.0));
        assert_eq!(millis("12"), None);
    }
}
