//! Command-line configuration. Portable: it builds and is tested on every target.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What one load-generator run does.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The echo server's address (`--addr`, required).
    pub addr: SocketAddr,
    /// How many TCP connections to keep open and busy (`--connections`).
    pub connections: usize,
    /// How long to measure once every connection is open (`--duration`).
    pub duration: Duration,
    /// Bytes per message (`--size`).
    pub size: usize,
    /// At most this many messages outstanding at once (`--in-flight`); the connections take turns
    /// (round robin), so every one of them keeps being used. `None`: every connection is busy.
    pub in_flight: Option<usize>,
    /// How long to keep retrying connects, e.g. while the server is still starting (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// Where to also write the summary as JSON (`--json`); written by the binary, not by `run`.
    pub json: Option<PathBuf>,
}

impl Config {
    /// The defaults for everything but the address.
    pub fn new(addr: SocketAddr) -> Self {
        Config {
            addr,
            connections: 1000,
            duration: Duration::from_secs(10),
            size: 64,
            in_flight: None,
            connect_timeout: Duration::from_secs(30),
            json: None,
        }
    }
}

/// The result of parsing the command line.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Run(Config),
    Help,
}

pub const USAGE: &str = "\
usage: loadgen --addr IP:PORT [options]

Opens N TCP connections to an echo server, keeps each one busy in a closed loop
(send a message, wait for the whole echo, verify it, send the next) and reports
echoes/s and round-trip-time percentiles.

options:
  --addr IP:PORT           echo server address (required)
  --connections N          connections to open (default 1000)
  --duration SECS          measuring time after all are connected (default 10)
  --size BYTES             message size, at least 1 (default 64)
  --in-flight N            at most N messages outstanding; connections take turns
                           (default: every connection busy at once)
  --connect-timeout SECS   keep retrying refused connects this long (default 30)
  --json PATH              also write the summary as a JSON object to PATH
  -h, --help               show this help

exit status: 0 on success; 1 if no echo completed, any echo mismatched, or the
run failed; 2 on a usage error (or on a platform other than Linux).";

/// Parses the arguments after the program name. Accepts `--flag value` and `--flag=value`.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut addr = None;
    let mut cfg = Config::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        // Every option takes a value.
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--addr" => {
                let v = value()?;
                addr = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--addr {v:?}: {e} (want IP:PORT)"))?,
                );
            }
            "--connections" => cfg.connections = parse_count(&flag, &value()?)?,
            "--duration" => cfg.duration = parse_secs(&flag, &value()?)?,
            "--size" => cfg.size = parse_count(&flag, &value()?)?,
            "--in-flight" => cfg.in_flight = Some(parse_count(&flag, &value()?)?),
            "--connect-timeout" => cfg.connect_timeout = parse_secs(&flag, &value()?)?,
            "--json" => cfg.json = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    cfg.addr = addr.ok_or("--addr is required")?;
    Ok(Command::Run(cfg))
}

/// A positive integer.
fn parse_count(flag: &str, v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag} {v:?}: want a positive integer")),
    }
}

/// A positive number of seconds; fractions are allowed (`--duration 0.5`).
fn parse_secs(flag: &str, v: &str) -> Result<Duration, String> {
    match v.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() && s < 1e9 => Ok(Duration::from_secs_f64(s)),
        _ => Err(format!("{flag} {v:?}: want a positive number of seconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn defaults() {
        let Command::Run(cfg) = parse(&["--addr", "127.0.0.1:9000"]).unwrap() else {
            panic!("expected Run")
        };
        assert_eq!(cfg, Config::new("127.0.0.1:9000".parse().unwrap()));
        assert_eq!(cfg.connections, 1000);
        assert_eq!(cfg.duration, Duration::from_secs(10));
        assert_eq!(cfg.size, 64);
        assert_eq!(cfg.connect_timeout, Duration::from_secs(30));
    }

    #[test]
    fn all_options_both_spellings() {
        let cmd = parse(&[
            "--addr=127.0.0.1:1",
            "--connections",
            "5",
            "--duration=0.5",
            "--size",
            "1",
            "--in-flight=3",
            "--connect-timeout",
            "2",
            "--json=out.json",
        ])
        .unwrap();
        let Command::Run(cfg) = cmd else {
            panic!("expected Run")
        };
        assert_eq!(cfg.addr, "127.0.0.1:1".parse().unwrap());
        assert_eq!(cfg.connections, 5);
        assert_eq!(cfg.duration, Duration::from_millis(500));
        assert_eq!(cfg.size, 1);
        assert_eq!(cfg.in_flight, Some(3));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(2));
        assert_eq!(cfg.json, Some(PathBuf::from("out.json")));
    }

    #[test]
    fn errors_and_help() {
        assert_eq!(parse(&["--help"]), Ok(Command::Help));
        assert!(parse(&[]).unwrap_err().contains("--addr is required"));
        assert!(parse(&["--addr", "localhost"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--size", "0"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--in-flight", "0"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--duration", "-1"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--connections"]).is_err());
        assert!(parse(&["--addr", "127.0.0.1:1", "--bogus", "1"]).is_err());
    }
}
