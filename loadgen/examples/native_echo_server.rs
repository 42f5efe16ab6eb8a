//! A plain thread-per-connection echo server, to try loadgen natively:
//!
//! ```sh
//! cargo run --release -p loadgen --example native_echo_server -- 127.0.0.1:7000 &
//! cargo run --release -p loadgen -- --addr 127.0.0.1:7000 --connections 1000 --duration 5
//! ```

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_string());
    let listener = TcpListener::bind(&addr)?;
    eprintln!("echo server listening on {}", listener.local_addr()?);
    for stream in listener.incoming() {
        let mut stream = stream?;
        thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            })?;
    }
    Ok(())
}
