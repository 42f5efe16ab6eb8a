//! End to end: loadgen's library entry point against a tiny thread-per-connection echo server.
#![cfg(target_os = "linux")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;
use std::time::Duration;

use loadgen::Config;

/// Starts an echo server on 127.0.0.1:0 (one thread per connection); returns its address.
/// With `corrupt`, it flips the first byte of every chunk it echoes.
fn echo_server(corrupt: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if corrupt {
                        buf[0] ^= 0xff;
                    }
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn config(addr: SocketAddr, connections: usize) -> Config {
    Config {
        connections,
        duration: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(10),
        ..Config::new(addr)
    }
}

#[test]
fn fifty_connections_for_one_second() {
    let s = loadgen::run(config(echo_server(false), 50)).unwrap();
    println!("{s}");
    assert_eq!(s.connected, 50);
    assert_eq!(s.open_at_end, 50);
    assert!(s.echoes > 0, "{s}");
    assert_eq!(s.mismatches, 0, "{s}");
    assert_eq!(s.errors(), 0, "{s}");
    assert!(s.ok());
    assert!(s.rtt_p50_us <= s.rtt_p90_us && s.rtt_p90_us <= s.rtt_p99_us);
    assert!(s.rtt_p99_us <= s.rtt_max_us);
    assert!(s.duration >= Duration::from_secs(1));
}

#[test]
fn large_messages_do_not_deadlock() {
    // 1 MiB messages are far bigger than the socket buffers: writing and reading must overlap.
    let cfg = Config {
        size: 1 << 20,
        ..config(echo_server(false), 4)
    };
    let s = loadgen::run(cfg).unwrap();
    assert!(s.echoes > 0, "{s}");
    assert_eq!(s.errors(), 0, "{s}");
}

#[test]
fn corrupted_echoes_are_counted() {
    let s = loadgen::run(config(echo_server(true), 5)).unwrap();
    assert_eq!(s.echoes, 0, "{s}");
    assert!(s.mismatches > 0, "{s}");
    assert!(!s.ok());
}

#[test]
fn waits_for_a_server_that_starts_late() {
    // Reserve a port, close it (connects are refused), and start the server there later.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let starter = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        let listener = TcpListener::bind(addr).unwrap();
        let (mut stream, _) = listener.accept().unwrap();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 || stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let s = loadgen::run(config(addr, 1)).unwrap();
    assert_eq!(s.connected, 1);
    assert!(s.connect_retries > 0, "{s}");
    assert!(s.echoes > 0, "{s}");
    assert_eq!(s.errors(), 0, "{s}");
    starter.join().unwrap();
}

#[test]
fn nobody_listening_times_out() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = Config {
        connect_timeout: Duration::from_millis(300),
        ..config(addr, 3)
    };
    let err = loadgen::run(cfg).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
}
