//! The driver (Linux): runs every system through every workload in rounds, counts wineserver
//! requests (natively: system calls), and reports.

pub mod async_report;
pub mod http;
pub mod native;
pub mod perf;
pub mod report;
pub mod run;
pub mod waits;
pub mod wine;
