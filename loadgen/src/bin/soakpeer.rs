//! `soakpeer --addr IP:PORT [--connections N] [--secs S] [--seed N] [--rate N] [--window N]
//!           [--rcvbuf BYTES] [--json PATH]` — the native Linux peer of `scripts/soak.sh`; see
//! `loadgen::soak::SOAK_USAGE` and the module docs of `loadgen::soak`.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use loadgen::soak;

    let cfg = match soak::parse_soak_args(std::env::args().skip(1)) {
        Ok(Some(cfg)) => cfg,
        Ok(None) => {
            println!("{}", soak::SOAK_USAGE);
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("soakpeer: {msg}\n\n{}", soak::SOAK_USAGE);
            return ExitCode::from(2);
        }
    };
    let json = cfg.json.clone();
    let summary = match soak::run_soak(cfg) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("soakpeer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let line = summary.to_json();
    println!("soakpeer-summary {line}");
    if let Some(path) = json
        && let Err(e) = std::fs::write(&path, &line)
    {
        eprintln!("soakpeer: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if summary.ok() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "soakpeer: FAILED (mismatches, lost bytes, connections dropped by the server, or no echo)"
        );
        ExitCode::FAILURE
    }
}

/// Elsewhere (e.g. the x86_64-pc-windows-gnu build of the workspace) there is nothing to run.
#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("soakpeer runs on Linux only");
    ExitCode::from(2)
}
