//! The echo server, the same code on every system.
//!
//! A connection is registered readable. On an event it is read — once if the system is
//! level-triggered or oneshot (a short read means drained for now; if more arrives the next
//! poll says so), until `WouldBlock` if it is edge-triggered — and what was read is written
//! back. What cannot be written at once is kept and the connection waits for WRITABLE instead.
//! The server exits once `sessions` load-generator sessions have come and gone (the number of
//! open connections fell back to zero that many times).

use super::sys::{LISTENER, Ready, Sys, Want};
use std::io::{self, Read, Write};
use std::net::TcpListener;

struct Conn<T> {
    stream: T,
    pending: Vec<u8>,
}

/// What the server did.
pub struct Served {
    pub accepted: u64,
    pub events: u64,
    pub waits: u64,
}

pub fn serve<S: Sys>(sys: &mut S, listener: TcpListener, sessions: usize) -> io::Result<Served> {
    let mut listener = sys.listener(listener)?;
    let mut conns: Vec<Option<Conn<S::Tcp>>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut open = 0usize;
    let mut done_sessions = 0usize;
    let mut served = Served {
        accepted: 0,
        events: 0,
        waits: 0,
    };
    let mut ready: Vec<Ready> = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];

    while done_sessions < sessions {
        ready.clear();
        // No timeout: an idle server makes no calls at all.
        sys.wait(&mut ready, None)?;
        served.waits += 1;
        for r in &ready {
            served.events += 1;
            if r.key == LISTENER {
                loop {
                    let stream = match sys.accept(&mut listener) {
                        Ok(s) => s,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    };
                    stream.set_nonblocking(true)?;
                    stream.set_nodelay(true)?;
                    let mut stream = sys.tcp(stream);
                    let key = free.pop().unwrap_or_else(|| {
                        conns.push(None);
                        conns.len() - 1
                    });
                    sys.add(&mut stream, key, Want::Read)?;
                    conns[key] = Some(Conn {
                        stream,
                        pending: Vec::new(),
                    });
                    open += 1;
                    served.accepted += 1;
                }
                sys.listener_done(&mut listener)?;
                continue;
            }
            let Some(Some(conn)) = conns.get_mut(r.key) else {
                continue; // e.g. a wake-up, or an event for a connection already closed
            };
            let before = conn.pending.is_empty();
            let alive = if !conn.pending.is_empty() {
                !r.writable || flush(conn)?
            } else {
                !r.readable || echo(conn, &mut buf, S::EDGE)?
            };
            if alive {
                let want = if conn.pending.is_empty() {
                    Want::Read
                } else {
                    Want::Write
                };
                sys.rearm(
                    &mut conn.stream,
                    r.key,
                    want,
                    before != conn.pending.is_empty(),
                )?;
            } else {
                let mut conn = conns[r.key].take().expect("present");
                sys.remove(&mut conn.stream)?;
                free.push(r.key);
                open -= 1;
                if open == 0 {
                    done_sessions += 1;
                }
            }
        }
    }
    Ok(served)
}

/// Reads what is there and writes it back. Returns false when the connection is finished.
fn echo<T: Read + Write>(conn: &mut Conn<T>, buf: &mut [u8], edge: bool) -> io::Result<bool> {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                if !write_or_keep(conn, &buf[..n]) {
                    return Ok(false);
                }
                // Level/oneshot: a short read drained the socket for now. Edge: only
                // WouldBlock guarantees another event.
                if (!edge && n < buf.len()) || !conn.pending.is_empty() {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(false), // reset and the like: drop the connection
        }
    }
}

/// Writes `data` (after anything already pending); keeps what does not fit.
fn write_or_keep<T: Write>(conn: &mut Conn<T>, data: &[u8]) -> bool {
    if !conn.pending.is_empty() {
        conn.pending.extend_from_slice(data);
        return true;
    }
    let mut done = 0;
    while done < data.len() {
        match conn.stream.write(&data[done..]) {
            Ok(0) => return false,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    conn.pending.extend_from_slice(&data[done..]);
    true
}

/// Writes what is pending. Returns false when the connection is finished.
fn flush<T: Write>(conn: &mut Conn<T>) -> io::Result<bool> {
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(0) => return Ok(false),
            Ok(n) => {
                conn.pending.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}
