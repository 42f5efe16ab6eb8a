//! Running `bench-server.exe` under Wine, and counting wineserver requests.
//!
//! Counting: a wineserver started with `-d1` writes one trace line per request
//! (`0024: name( args )`) and one per reply (`0024: name() = STATUS …`) to its stderr. [`Tracer`]
//! owns such a server and tallies the request lines by thread id and request name as they
//! arrive; a [`Tally`] is a snapshot. The thread id in the trace is the Windows thread id, which
//! the server announces (`tid id=…`), so requests are attributed to the process under test and
//! not to Wine's own background processes.

use bench::Record;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Requests counted so far: thread id → request name → count.
#[derive(Debug, Clone, Default)]
pub struct Tally(pub HashMap<u32, HashMap<String, u64>>);

impl Tally {
    /// Requests made by the given threads.
    pub fn by_threads(&self, tids: &[u32]) -> u64 {
        tids.iter()
            .filter_map(|t| self.0.get(t))
            .flat_map(|m| m.values())
            .sum()
    }

    /// Requests of one kind, from any thread.
    pub fn by_name(&self, name: &str) -> u64 {
        self.0.values().filter_map(|m| m.get(name)).sum()
    }

    /// Requests by kind made by the given threads.
    pub fn kinds(&self, tids: &[u32]) -> HashMap<String, u64> {
        let mut out = HashMap::new();
        for m in tids.iter().filter_map(|t| self.0.get(t)) {
            for (k, v) in m {
                *out.entry(k.clone()).or_insert(0) += v;
            }
        }
        out
    }

    /// `self - earlier`, kind by kind.
    pub fn since(&self, earlier: &Tally) -> Tally {
        let mut out = HashMap::new();
        for (tid, m) in &self.0 {
            let before = earlier.0.get(tid);
            let d: HashMap<String, u64> = m
                .iter()
                .map(|(k, v)| {
                    let b = before.and_then(|b| b.get(k)).copied().unwrap_or(0);
                    (k.clone(), v - b)
                })
                .filter(|(_, v)| *v > 0)
                .collect();
            out.insert(*tid, d);
        }
        Tally(out)
    }
}

/// Parses a trace line: `Some((tid, name))` for a request, `None` for anything else.
pub fn parse_trace(line: &str) -> Option<(u32, &str)> {
    let (tid, rest) = line.split_once(": ")?;
    if tid.len() != 4 {
        return None;
    }
    let tid = u32::from_str_radix(tid, 16).ok()?;
    let (name, args) = rest.split_once('(')?;
    // Replies read `name() = STATUS`; requests `name( args )`.
    if args.starts_with(") =")
        || name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
    {
        return None;
    }
    Some((tid, name))
}

/// A wineserver of our own, tracing every request.
pub struct Tracer {
    root: PathBuf,
    server: Child,
    counts: Arc<Mutex<Tally>>,
    lines: Arc<Mutex<(u64, Instant)>>,
}

impl Tracer {
    /// Stops any running wineserver of the prefix and starts a tracing one in its place (of the
    /// Wine `AFD_WINE` chooses, through `scripts/wine.sh`).
    pub fn start(root: &Path) -> io::Result<Tracer> {
        kill_wineserver(root);
        let mut server = wine_tool(root, "wineserver")
            .args(["-f", "-d1", "-p"])
            .env("WINEDEBUG", "-all")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io::Error::other(format!("starting wineserver: {e}")))?;
        let stderr = server.stderr.take().expect("piped");
        let counts = Arc::new(Mutex::new(Tally::default()));
        let lines = Arc::new(Mutex::new((0u64, Instant::now())));
        {
            let (counts, lines) = (Arc::clone(&counts), Arc::clone(&lines));
            std::thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, stderr);
                let mut buf = Vec::new();
                loop {
                    buf.clear();
                    match r.read_until(b'\n', &mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    let line = String::from_utf8_lossy(&buf);
                    if let Some((tid, name)) = parse_trace(&line) {
                        let mut c = counts.lock().expect("tally lock");
                        *c.0.entry(tid)
                            .or_default()
                            .entry(name.to_string())
                            .or_insert(0) += 1;
                    }
                    let mut l = lines.lock().expect("lines lock");
                    l.0 += 1;
                    l.1 = Instant::now();
                }
            });
        }
        // Give it a moment to create its socket before the first client looks for it.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Tracer {
            root: root.to_path_buf(),
            server,
            counts,
            lines,
        })
    }

    /// Waits until the trace has been quiet for 150 ms (at most 5 s), then snapshots it.
    pub fn settle_and_count(&self) -> Tally {
        let begin = Instant::now();
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let quiet = self.lines.lock().expect("lines lock").1.elapsed();
            if quiet >= Duration::from_millis(150) || begin.elapsed() > Duration::from_secs(5) {
                break;
            }
        }
        self.counts.lock().expect("tally lock").clone()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        kill_wineserver(&self.root);
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// One of Wine's programs (`wine`, `wineserver`), of the Wine `AFD_WINE` chooses: run through
/// `scripts/wine.sh`, which starts Wine 10 in its chroot.
pub fn wine_tool(root: &Path, program: &str) -> Command {
    let mut c = Command::new(root.join("scripts/wine.sh"));
    c.arg(program);
    c
}

/// What `wine --version` says of the Wine `AFD_WINE` chooses ("wine-10.0 (Debian 10.0~repack-6)").
pub fn wine_version(root: &Path) -> io::Result<String> {
    let out = wine_tool(root, "wine")
        .arg("--version")
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "scripts/wine.sh wine --version failed ({})",
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Stops the prefix's wineserver, if one runs (and waits until it is gone).
pub fn kill_wineserver(root: &Path) {
    let _ = wine_tool(root, "wineserver")
        .arg("-k")
        .stderr(Stdio::null())
        .status();
    let _ = wine_tool(root, "wineserver")
        .arg("-w")
        .stderr(Stdio::null())
        .status();
}

/// A running `bench-server.exe`.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    records: Receiver<Record>,
    /// The thread ids it announced (each once).
    pub tids: Vec<u32>,
    log: PathBuf,
}

impl Server {
    /// Starts `bench-server.exe args…` under Wine (through the project's Wine runner), or
    /// natively with `native` (under `strace -f` writing to `strace`, if given); its stderr goes
    /// to `log`.
    pub fn start(
        root: &Path,
        exe: &Path,
        args: &[String],
        log: &Path,
        native: bool,
        strace: Option<&Path>,
    ) -> io::Result<Server> {
        let err = std::fs::File::create(log)?;
        let mut cmd = match (native, strace) {
            (false, _) => {
                let mut c = Command::new(root.join("scripts/wine-runner.sh"));
                c.arg(exe);
                c
            }
            (true, Some(trace)) => {
                let mut c = Command::new("strace");
                c.args(["-f", "-qq", "-o"]).arg(trace).arg(exe);
                c
            }
            (true, None) => Command::new(exe),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| io::Error::other(format!("starting {}: {e}", exe.display())))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, records) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(r) = Record::parse(&line)
                    && tx.send(r).is_err()
                {
                    return;
                }
            }
        });
        Ok(Server {
            stdin: child.stdin.take(),
            child,
            records,
            tids: Vec::new(),
            log: log.to_path_buf(),
        })
    }

    /// The next record that is not a thread announcement (those are collected in `tids`).
    /// Fails on timeout or if the server exits first, quoting the end of its stderr.
    pub fn next(&mut self, timeout: Duration) -> io::Result<Record> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.records.recv_timeout(left) {
                Ok(r) if r.kind == "tid" => {
                    // An async server announces all its threads again at each mark.
                    if let Some(id) = r.num("id").map(|id| id as u32)
                        && !self.tids.contains(&id)
                    {
                        self.tids.push(id);
                    }
                }
                Ok(r) => return Ok(r),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(self.failure(&format!("no output for {timeout:?}")));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.failure("it exited early"));
                }
            }
        }
    }

    /// The process id of what was started (natively: the server itself, when not under strace).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the server go on after a `mark`.
    pub fn go_on(&mut self) -> io::Result<()> {
        let stdin = self.stdin.as_mut().expect("stdin kept until wait");
        stdin.write_all(b"go\n")?;
        stdin.flush()
    }

    /// Waits for the process to exit (killing it after `timeout`).
    pub fn wait(mut self, timeout: Duration) -> io::Result<()> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return if status.success() {
                    Ok(())
                } else {
                    Err(self.failure(&format!("it exited with {status}")))
                };
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(self.failure("it did not exit in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn failure(&self, what: &str) -> io::Error {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(8).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        io::Error::other(format!(
            "bench-server: {what} (stderr in {}):\n  {}",
            self.log.display(),
            tail.join("\n  ")
        ))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_lines() {
        assert_eq!(
            parse_trace("0024: remove_completion( handle=0010 )"),
            Some((0x24, "remove_completion"))
        );
        assert_eq!(
            parse_trace("0024: select( flags=2, cookie=0 )"),
            Some((0x24, "select"))
        );
        assert_eq!(parse_trace("0024: remove_completion() = PENDING { }"), None);
        assert_eq!(parse_trace("0020: *fd* 02f6 -> 23"), None);
        assert_eq!(parse_trace("wineserver: starting (pid=1)"), None);
        assert_eq!(
            parse_trace("0024: get_handle_fd( handle=0004 )"),
            Some((0x24, "get_handle_fd"))
        );
    }

    #[test]
    fn tallies_subtract_and_filter() {
        let mut a = Tally::default();
        a.0.entry(1).or_default().insert("select".into(), 3);
        let mut b = a.clone();
        *b.0.get_mut(&1).unwrap().get_mut("select").unwrap() += 4;
        b.0.entry(2).or_default().insert("add_completion".into(), 5);
        let d = b.since(&a);
        assert_eq!(d.by_threads(&[1]), 4);
        assert_eq!(d.by_threads(&[2]), 5);
        assert_eq!(d.by_threads(&[3]), 0);
        assert_eq!(d.by_name("add_completion"), 5);
        assert_eq!(d.kinds(&[1, 2]).len(), 2);
    }
}
