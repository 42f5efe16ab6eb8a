//! `loadgen --addr IP:PORT [--connections N] [--duration SECS] [--size BYTES]
//!          [--connect-timeout SECS] [--json PATH]` — see `loadgen::USAGE`.

use std::process::ExitCode;

#[cfg(target_os = "linux")]
fn main() -> ExitCode {
    use loadgen::Command;

    let cfg = match loadgen::parse_args(std::env::args().skip(1)) {
        Ok(Command::Run(cfg)) => cfg,
        Ok(Command::Help) => {
            println!("{}", loadgen::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("loadgen: {msg}\n\n{}", loadgen::USAGE);
            return ExitCode::from(2);
        }
    };
    let json = cfg.json.clone();
    let summary = match loadgen::run(cfg) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{summary}");
    if let Some(path) = json
        && let Err(e) = std::fs::write(&path, summary.to_json())
    {
        eprintln!("loadgen: writing {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    if summary.echoes == 0 {
        eprintln!("loadgen: FAILED: no echo completed");
    }
    if summary.mismatches > 0 {
        eprintln!(
            "loadgen: FAILED: {} echoes did not match what was sent",
            summary.mismatches
        );
    }
    if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Elsewhere (e.g. the x86_64-pc-windows-gnu build of the workspace) there is nothing to run.
#[cfg(not(target_os = "linux"))]
fn main() -> ExitCode {
    eprintln!("loadgen runs on Linux only");
    ExitCode::from(2)
}
