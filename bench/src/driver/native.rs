//! Counting system calls natively (`bench --native`): the server runs under `strace -f`, whose
//! log has one line per system call (`1234 epoll_wait(4, …) = 1`, the kernel thread id first);
//! a [`Tally`] of them by thread and name is taken at each point the driver asks, once the log
//! has stopped growing. The thread id is the one the server announces (`tid id=…`, from
//! `gettid`), so calls are attributed exactly as the wineserver requests are under Wine.

use super::wine::Tally;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Parses an strace line: `Some((tid, name))` for the start of a system call, `None` for
/// anything else (a resumed call, a signal, an exit).
pub fn parse_strace(line: &str) -> Option<(u32, &str)> {
    let (tid, rest) = line.split_once(' ')?;
    let tid: u32 = tid.parse().ok()?;
    let rest = rest.trim_start();
    let (name, _) = rest.split_once('(')?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
    {
        return None;
    }
    Some((tid, name))
}

/// Hands each traced server a log file of its own and counts what is in the current one.
pub struct Strace {
    dir: PathBuf,
    runs: Cell<u32>,
    current: RefCell<Option<PathBuf>>,
}

impl Strace {
    /// Logs go into `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Strace {
            dir,
            runs: Cell::new(0),
            current: RefCell::new(None),
        }
    }

    /// The log file for the next server (which becomes the one counted).
    pub fn next_log(&self) -> PathBuf {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let path = self.dir.join(format!("strace-{n:03}.log"));
        *self.current.borrow_mut() = Some(path.clone());
        path
    }

    /// Waits until the current log has not grown for 150 ms (at most 5 s), then counts it.
    pub fn settle_and_count(&self) -> Tally {
        let Some(path) = self.current.borrow().clone() else {
            return Tally::default();
        };
        let size = || std::fs::metadata(&path).map_or(0, |m| m.len());
        let begin = Instant::now();
        let (mut last, mut since) = (size(), Instant::now());
        while since.elapsed() < Duration::from_millis(150)
            && begin.elapsed() < Duration::from_secs(5)
        {
            std::thread::sleep(Duration::from_millis(30));
            let now = size();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut counts: HashMap<u32, HashMap<String, u64>> = HashMap::new();
        for (tid, name) in text.lines().filter_map(parse_strace) {
            *counts
                .entry(tid)
                .or_default()
                .entry(name.to_string())
                .or_insert(0) += 1;
        }
        Tally(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_strace;

    #[test]
    fn strace_lines() {
        assert_eq!(
            parse_strace("4242 epoll_wait(4, [{events=EPOLLIN, data=0x1}], 1024, 200) = 1"),
            Some((4242, "epoll_wait"))
        );
        assert_eq!(
            parse_strace("4243  epoll_ctl(4, EPOLL_CTL_MOD, 9, {…}) = 0"),
            Some((4243, "epoll_ctl"))
        );
        assert_eq!(
            parse_strace("4242 <... epoll_wait resumed>[], 1024, 200) = 0"),
            None
        );
        assert_eq!(parse_strace("4242 +++ exited with 0 +++"), None);
        assert_eq!(
            parse_strace("4242 --- SIGCHLD {si_signo=SIGCHLD} ---"),
            None
        );
        assert_eq!(
            parse_strace("4242 write(1, \"mark name=idle-a\\n\", 17 <unfinished ...>"),
            Some((4242, "write"))
        );
    }
}
