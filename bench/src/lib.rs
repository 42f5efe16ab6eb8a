//! The benchmark harness's shared vocabulary: which systems it compares, and the one-line
//! `key=value` records the Windows server (`bench-server`, under Wine) prints for the Linux
//! driver (`bench`). Portable, so it builds and is tested on every target.
//!
//! ```
//! use bench::{Record, System};
//! assert_eq!(System::parse("mio"), Some(System::Mio));
//! let r = Record::parse("result workload=churn ops=2000 secs=0.5").unwrap();
//! assert_eq!(r.kind, "result");
//! assert_eq!(r.get("workload"), Some("churn"));
//! assert_eq!(r.num("ops"), Some(2000.0));
//! ```

#![deny(missing_docs)]

use std::fmt;

/// A readiness library under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// afd-reactor, polls issued on each socket (the default path).
    Afd,
    /// afd-reactor forced onto the `\Device\Afd` helper-handle path (what the peers use).
    AfdHelper,
    /// mio 1.x.
    Mio,
    /// polling 3.x.
    Polling,
    /// wepoll (C, through the `wepoll-ffi` crate, built with mingw).
    Wepoll,
    /// afd-async (this workspace): `Async<T>` on afd-reactor, run by async-executor's
    /// `LocalExecutor` under `afd_async::block_on`, one thread.
    AfdAsync,
    /// smol's stack: async-io (on polling) and async-executor's `LocalExecutor` under
    /// `async_io::block_on`, one thread (async-io adds its own helper thread).
    Smol,
    /// tokio's current-thread runtime (on mio).
    Tokio,
}

impl System {
    /// Every system, in the order the harness runs them in each round.
    pub const ALL: [System; 5] = [
        System::Afd,
        System::AfdHelper,
        System::Mio,
        System::Polling,
        System::Wepoll,
    ];

    /// The async stacks (the HTTP workload and the async echo rows), afd-async first.
    pub const ASYNC: [System; 3] = [System::AfdAsync, System::Smol, System::Tokio];

    /// Whether this is one of the [`ASYNC`](Self::ASYNC) stacks (not a bare readiness API).
    pub fn is_async(self) -> bool {
        System::ASYNC.contains(&self)
    }

    /// The name used on command lines, in records and in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            System::Afd => "afd",
            System::AfdHelper => "afd-helper",
            System::Mio => "mio",
            System::Polling => "polling",
            System::Wepoll => "wepoll",
            System::AfdAsync => "afd-async",
            System::Smol => "smol",
            System::Tokio => "tokio",
        }
    }

    /// The inverse of [`name`](Self::name).
    pub fn parse(name: &str) -> Option<System> {
        System::ALL
            .into_iter()
            .chain(System::ASYNC)
            .find(|s| s.name() == name)
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One line of the server's output: a kind word, then `key=value` fields (values hold no
/// spaces).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The first word (`ready`, `mark`, `tid`, `result`).
    pub kind: String,
    /// The fields, in order.
    pub fields: Vec<(String, String)>,
}

impl Record {
    /// Parses a line; `None` for a blank line or a field without `=`.
    pub fn parse(line: &str) -> Option<Record> {
        let mut words = line.split_whitespace();
        let kind = words.next()?.to_string();
        let fields = words
            .map(|w| {
                w.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Record { kind, fields })
    }

    /// The value of field `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of field `key` as a number.
    pub fn num(&self, key: &str) -> Option<f64> {
        self.get(key)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in System::ALL.into_iter().chain(System::ASYNC) {
            assert_eq!(System::parse(s.name()), Some(s));
            assert_eq!(s.is_async(), System::ASYNC.contains(&s));
        }
        assert!(System::parse("afd-async").unwrap().is_async());
        assert!(!System::Afd.is_async());
        assert_eq!(System::parse("epoll"), None);
    }

    #[test]
    fn records() {
        let r = Record::parse("ready addr=127.0.0.1:5 tid=36").unwrap();
        assert_eq!(r.kind, "ready");
        assert_eq!(r.get("addr"), Some("127.0.0.1:5"));
        assert_eq!(r.num("tid"), Some(36.0));
        assert_eq!(r.get("nope"), None);
        assert_eq!(Record::parse("   "), None);
        assert_eq!(Record::parse("result broken"), None);
        assert_eq!(Record::parse("mark").unwrap().fields, vec![]);
    }
}
