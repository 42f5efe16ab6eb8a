//! A load generator for a TCP echo server.
//!
//! `run` (Linux only) opens N connections, keeps each one busy in a closed loop of
//! write-message / read-whole-echo / verify / record round-trip time for a fixed time, and
//! returns a [`Summary`]. Round-trip times go into a log-linear [`Histogram`] (HDR-style,
//! < 0.8 % relative error, constant memory) rather than a Vec of samples, so long runs cost
//! nothing extra and live percentiles are cheap.
//!
//! Argument parsing, the histogram and the summary are portable, so they build and are
//! tested on every target; the event loop uses mio and exists only on Linux.

pub mod config;
pub mod histogram;
mod summary;

pub use config::{Command, Config, USAGE, parse_args};
pub use histogram::Histogram;
pub use summary::Summary;

#[cfg(target_os = "linux")]
mod client;
#[cfg(target_os = "linux")]
pub use client::{Segment, Session, Stop, run};
/// The soak peer behind the `soakpeer` binary (scripts/soak.sh).
#[cfg(target_os = "linux")]
pub mod soak;
