//! Counting a native server's system calls without stopping it: `perf stat` on the
//! `raw_syscalls:sys_enter` tracepoint (counted in the kernel), attached to the server's process
//! while it waits at a mark and stopped at the next mark.
//!
//! Why, beside strace: strace stops the server at every system call, so a traced server runs
//! many times slower than wrk, and under wrk (one request outstanding per connection, sent as
//! soon as the answer arrives) the next request is always there when the server reads again. A
//! stack that reads before it waits then never meets `WouldBlock` under strace, though it does
//! at full speed. perf counts without stopping anything, so the server runs as in the timed run.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The events counted: every system call, and the ones the servers make per request.
const EVENTS: &[&str] = &[
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_recvfrom",
    "syscalls:sys_enter_sendto",
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_epoll_ctl",
    "syscalls:sys_enter_futex",
];

/// The name all system calls are counted under.
pub const TOTAL: &str = "raw_syscalls:sys_enter";

/// Whether `perf stat` can count the tracepoints here (installed, and allowed to).
pub fn available() -> bool {
    Command::new("perf")
        .args(["stat", "-x,", "-e", TOTAL, "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A `perf stat` attached to a process.
pub struct Perf {
    child: Child,
    out: PathBuf,
}

impl Perf {
    /// Attaches to every thread of process `pid` and returns once it counts (its first
    /// 10 ms interval is written to `out`).
    pub fn attach(pid: u32, out: PathBuf) -> io::Result<Perf> {
        let _ = std::fs::remove_file(&out);
        let child = Command::new("perf")
            .args(["stat", "-I", "10", "-x,", "-e", &EVENTS.join(",")])
            .arg("-p")
            .arg(pid.to_string())
            .arg("-o")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| io::Error::other(format!("starting perf: {e}")))?;
        let mut perf = Perf { child, out };
        let begin = Instant::now();
        loop {
            let text = std::fs::read_to_string(&perf.out).unwrap_or_default();
            if !parse_intervals(&text).is_empty() {
                return Ok(perf);
            }
            if let Some(status) = perf.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "perf stat exited with {status} before counting (output in {})",
                    perf.out.display()
                )));
            }
            if begin.elapsed() > Duration::from_secs(20) {
                let _ = perf.child.kill();
                return Err(io::Error::other("perf stat did not start counting in 20 s"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops perf (SIGINT, so it writes out what it has) and returns the counts since it
    /// attached, by event.
    pub fn finish(mut self) -> io::Result<BTreeMap<String, u64>> {
        // Every call made before now lies in a finished interval.
        std::thread::sleep(Duration::from_millis(30));
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status();
        let begin = Instant::now();
        while self.child.try_wait()?.is_none() {
            if begin.elapsed() > Duration::from_secs(10) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let text = std::fs::read_to_string(&self.out)?;
        let counts = parse_intervals(&text);
        if !counts.contains_key(TOTAL) {
            return Err(io::Error::other(format!(
                "no {TOTAL} counts in {}",
                self.out.display()
            )));
        }
        Ok(counts)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sums `perf stat -I … -x,` interval lines (`time,count,unit,event,…`) by event, without the
/// `syscalls:sys_enter_` / `raw_syscalls:` prefix but for the total; `<not counted>` is 0.
pub fn parse_intervals(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() < 4 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let n = f[1].trim().parse::<u64>().unwrap_or(0);
        let event = f[3].trim();
        let name = if event == TOTAL {
            TOTAL
        } else {
            event.strip_prefix("syscalls:sys_enter_").unwrap_or(event)
        };
        *out.entry(name.to_string()).or_insert(0) += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_intervals() {
        let text = "# started on Mon Nov 30 22:38:58 2026

     0.010095812,<not counted>,,raw_syscalls:sys_enter,0,100.00,,
     0.010095812,12,,syscalls:sys_enter_recvfrom,1000,100.00,,
     0.020282964,40,,raw_syscalls:sys_enter,1000,100.00,,
     0.020282964,7,,syscalls:sys_enter_recvfrom,1000,100.00,,
";
        let c = parse_intervals(text);
        assert_eq!(c[TOTAL], 40);
        assert_eq!(c["recvfrom"], 19);
        assert_eq!(c.len(), 2);
    }
}
