//! Helpers shared by the review-finding tests.
#![allow(dead_code)]

use afd_async::Async;
use std::sync::mpsc;
use std::time::Duration;

/// Run `f` on a new thread (a fresh reactor) and wait at most `secs` for it: a panic in `f` is
/// this test's failure, and so is a hang (reported as such, the thread left behind).
pub fn on_thread<R: Send + 'static>(secs: u64, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let r = f();
        let _ = tx.send(());
        r
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => handle.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("hung: not done within {secs} s (a lost wakeup)")
        }
    }
}

/// A connected TCP pair: (ours, wrapped in `Async`; the peer, blocking std).
#[cfg(any(windows, target_os = "linux"))]
pub fn tcp_pair() -> (Async<std::net::TcpStream>, std::net::TcpStream) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (ours, _) = l.accept().unwrap();
    (Async::new(ours).unwrap(), peer)
}
