//! The driver (Linux): runs every system through every workload in rounds, counts wineserver
//! requests, and reports.

pub mod report;
pub mod run;
pub mod wine;
