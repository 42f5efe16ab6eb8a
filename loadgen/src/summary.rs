//! The figures a run produces, as text (stdout) and as JSON. Portable.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything a run measured. RTT figures are in microseconds, from the log-linear histogram
/// (within 0.8 % of the true value; the maximum is exact).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub addr: SocketAddr,
    /// Message size in bytes.
    pub size: usize,
    /// Connections asked for.
    pub connections: usize,
    /// Connections that got established (TCP handshake plus one verified warm-up echo).
    pub connected: usize,
    /// Connections still open when the measuring time ended.
    pub open_at_end: usize,
    /// Time from the first connect attempt until the last connection was established.
    pub connect_time: Duration,
    /// Measuring time actually spent (ends early only if every connection was lost).
    pub duration: Duration,
    /// Echoes completed (and verified) during the measuring time; warm-up echoes not included.
    pub echoes: u64,
    pub echoes_per_sec: f64,
    pub rtt_p50_us: u64,
    pub rtt_p90_us: u64,
    pub rtt_p99_us: u64,
    pub rtt_max_us: u64,
    /// Connections that could not be established before `--connect-timeout` passed.
    pub connect_failures: u64,
    /// Connect attempts that failed (e.g. refused) and were retried. Informational, not an error.
    pub connect_retries: u64,
    /// Connections reset by the server (ECONNRESET / EPIPE).
    pub resets: u64,
    /// Connections the server closed (read returned end-of-file) mid-run.
    pub eof: u64,
    /// Connections lost to any other I/O error.
    pub io_errors: u64,
    /// Echoes whose bytes differed from what was sent (warm-up echoes included).
    pub mismatches: u64,
}

impl Summary {
    /// All errors added up (connect retries are not errors).
    pub fn errors(&self) -> u64 {
        self.connect_failures + self.resets + self.eof + self.io_errors + self.mismatches
    }

    /// What the exit status reflects: at least one echo completed and none mismatched.
    pub fn ok(&self) -> bool {
        self.echoes > 0 && self.mismatches == 0
    }

    /// The same figures as one JSON object (field names as in this struct; times in seconds
    /// as floating-point numbers, `addr` as a string).
    pub fn to_json(&self) -> String {
        format!(
            concat!(
                "{{\"addr\":\"{}\",\"size\":{},\"connections\":{},\"connected\":{},",
                "\"open_at_end\":{},\"connect_secs\":{:.6},\"duration_secs\":{:.6},",
                "\"echoes\":{},\"echoes_per_sec\":{:.1},\"rtt_p50_us\":{},\"rtt_p90_us\":{},",
                "\"rtt_p99_us\":{},\"rtt_max_us\":{},\"connect_failures\":{},",
                "\"connect_retries\":{},\"resets\":{},\"eof\":{},\"io_errors\":{},",
                "\"mismatches\":{},\"errors\":{}}}\n"
            ),
            self.addr,
            self.size,
            self.connections,
            self.connected,
            self.open_at_end,
            self.connect_time.as_secs_f64(),
            self.duration.as_secs_f64(),
            self.echoes,
            self.echoes_per_sec,
            self.rtt_p50_us,
            self.rtt_p90_us,
            self.rtt_p99_us,
            self.rtt_max_us,
            self.connect_failures,
            self.connect_retries,
            self.resets,
            self.eof,
            self.io_errors,
            self.mismatches,
            self.errors(),
        )
    }
}

/// The summary printed to stdout at the end of a run.
impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "target:       {} ({}-byte messages)",
            self.addr, self.size
        )?;
        writeln!(
            f,
            "connections:  {} requested, {} connected in {:.3} s, {} open at end",
            self.connections,
            self.connected,
            self.connect_time.as_secs_f64(),
            self.open_at_end
        )?;
        writeln!(f, "duration:     {:.3} s", self.duration.as_secs_f64())?;
        writeln!(f, "echoes:       {}", self.echoes)?;
        writeln!(f, "echoes/s:     {:.1}", self.echoes_per_sec)?;
        writeln!(
            f,
            "rtt (us):     p50 {}  p90 {}  p99 {}  max {}",
            self.rtt_p50_us, self.rtt_p90_us, self.rtt_p99_us, self.rtt_max_us
        )?;
        writeln!(
            f,
            "errors:       {} (connect failures {}, resets {}, eof {}, io errors {}, mismatches {}; connect retries {})",
            self.errors(),
            self.connect_failures,
            self.resets,
            self.eof,
            self.io_errors,
            self.mismatches,
            self.connect_retries
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        Summary {
            addr: "127.0.0.1:9000".parse().unwrap(),
            size: 64,
            connections: 10,
            connected: 9,
            open_at_end: 8,
            connect_time: Duration::from_millis(250),
            duration: Duration::from_secs(2),
            echoes: 1000,
            echoes_per_sec: 500.0,
            rtt_p50_us: 100,
            rtt_p90_us: 200,
            rtt_p99_us: 300,
            rtt_max_us: 400,
            connect_failures: 1,
            connect_retries: 3,
            resets: 1,
            eof: 0,
            io_errors: 0,
            mismatches: 0,
        }
    }

    #[test]
    fn text_and_json() {
        let s = sample();
        assert_eq!(s.errors(), 2);
        assert!(s.ok());
        let text = s.to_string();
        assert!(text.contains("echoes/s:     500.0\n"), "{text}");
        assert!(
            text.contains("rtt (us):     p50 100  p90 200  p99 300  max 400\n"),
            "{text}"
        );
        let json = s.to_json();
        assert!(
            json.starts_with("{\"addr\":\"127.0.0.1:9000\",\"size\":64,"),
            "{json}"
        );
        assert!(json.contains("\"connect_secs\":0.250000,"), "{json}");
        assert!(json.ends_with("\"mismatches\":0,\"errors\":2}\n"), "{json}");
    }

    #[test]
    fn not_ok_without_echoes_or_with_mismatches() {
        let mut s = sample();
        s.mismatches = 1;
        assert!(!s.ok());
        let mut s = sample();
        s.echoes = 0;
        assert!(!s.ok());
    }
}
