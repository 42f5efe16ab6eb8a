//! An echo server on afd-reactor: the demo's server side. On Windows (under Wine here) it runs
//! on the NT kernel; on Linux, natively, on epoll (`bash scripts/demo.sh --native`).
//!
//! ```text
//! echo_server [--addr 127.0.0.1:7007] [--exit-when-idle] [--max-secs 600] [--helper]
//! ```
//! - `--exit-when-idle`: exit once every client has gone (after the first one came).
//! - `--helper` (Windows): poll every socket through the `\Device\Afd` helper instead of on the
//!   socket.
//! - `--verbose`: one line a second on stderr: events, NT calls, time inside `poll` and outside.
//!
//! Each connection is registered level-triggered for READABLE. What cannot be written at once is
//! kept, and the connection switches to WRITABLE only — dropping READABLE is the backpressure: the
//! reactor stops polling for data this connection cannot take. At exit the server prints one line
//! `reactor-stats {json}` with the reactor's own counters (on Linux also `kernel-syscalls {json}`,
//! the epoll kernel's system calls by kind), then tears the reactor down.

#[cfg(not(any(windows, target_os = "linux")))]
fn main() {
    eprintln!("echo_server runs on Windows (scripts/demo.sh, under Wine) and Linux");
    std::process::exit(2);
}

#[cfg(any(windows, target_os = "linux"))]
fn main() {
    if let Err(e) = server::run() {
        eprintln!("echo_server: {e}");
        std::process::exit(1);
    }
}

#[cfg(any(windows, target_os = "linux"))]
mod server {
    #[cfg(target_os = "linux")]
    use afd_reactor::EpollReactor as OsReactor;
    #[cfg(windows)]
    use afd_reactor::NtReactor as OsReactor;
    use afd_reactor::{Events, Interest, Reactor, Stats, Token};
    use std::collections::HashMap;
    use std::io::{self, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    const LISTENER: Token = Token(usize::MAX);

    struct Conn {
        stream: TcpStream,
        /// Bytes read but not yet written back.
        pending: Vec<u8>,
    }

    struct Options {
        addr: String,
        exit_when_idle: bool,
        max: Duration,
        helper: bool,
        verbose: bool,
    }

    fn options() -> io::Result<Options> {
        let mut o = Options {
            addr: "127.0.0.1:7007".into(),
            exit_when_idle: false,
            max: Duration::from_secs(600),
            helper: false,
            verbose: false,
        };
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
            match a.as_str() {
                "--addr" => o.addr = args.next().ok_or_else(|| bad("--addr needs a value"))?,
                "--exit-when-idle" => o.exit_when_idle = true,
                "--helper" => o.helper = true,
                "--verbose" => o.verbose = true,
                "--max-secs" => {
                    let v = args.next().ok_or_else(|| bad("--max-secs needs a value"))?;
                    let secs: u64 = v.parse().map_err(|_| bad("--max-secs takes seconds"))?;
                    o.max = Duration::from_secs(secs);
                }
                other => return Err(bad(&format!("unknown argument {other}"))),
            }
        }
        Ok(o)
    }

    pub fn run() -> io::Result<()> {
        let o = options()?;
        #[cfg(windows)]
        let kernel = afd_reactor::kernel::nt::NtKernel::new()?.force_helper(o.helper);
        #[cfg(target_os = "linux")]
        let kernel = {
            if o.helper {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "--helper is a Windows option (the \\Device\\Afd helper handles)",
                ));
            }
            afd_reactor::kernel::epoll::EpollKernel::new()?
        };
        let mut reactor = Reactor::with_kernel(kernel);
        let listener = TcpListener::bind(&o.addr)?;
        listener.set_nonblocking(true)?;
        reactor.register(&listener, LISTENER, Interest::READABLE)?;
        println!("listening on {}", listener.local_addr()?);

        let mut conns: HashMap<usize, Conn> = HashMap::new();
        let mut next = 0usize;
        let mut served = 0usize;
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 64 * 1024];
        let start = Instant::now();
        let mut first_client: Option<Instant> = None;
        let mut stats_at_first = Stats::default();
        #[cfg(target_os = "linux")]
        let mut syscalls_at_first = reactor.kernel().syscalls();

        let (mut in_poll, mut outside) = (Duration::ZERO, Duration::ZERO);
        let mut last_report = (Instant::now(), reactor.stats());
        while start.elapsed() < o.max {
            let t0 = Instant::now();
            reactor.poll(&mut events, Some(Duration::from_millis(200)))?;
            let t1 = Instant::now();
            in_poll += t1 - t0;
            if o.verbose && last_report.0.elapsed() >= Duration::from_secs(1) {
                let (now, then) = (reactor.stats(), &last_report.1);
                eprintln!(
                    "[server] {:>5.1}s conns {:>5} events {:>6} submit {:>6} dequeue {:>5} \
                     in-poll {:>6.0} ms, handling {:>6.0} ms",
                    start.elapsed().as_secs_f64(),
                    conns.len(),
                    now.events - then.events,
                    now.nt.submit - then.nt.submit,
                    now.nt.dequeue - then.nt.dequeue,
                    in_poll.as_secs_f64() * 1e3,
                    outside.as_secs_f64() * 1e3,
                );
                (in_poll, outside) = (Duration::ZERO, Duration::ZERO);
                last_report = (Instant::now(), now);
            }
            for event in events.iter() {
                if event.token() == LISTENER {
                    loop {
                        match listener.accept() {
                            Ok((stream, _)) => {
                                stream.set_nonblocking(true)?;
                                stream.set_nodelay(true)?;
                                reactor.register(&stream, Token(next), Interest::READABLE)?;
                                conns.insert(
                                    next,
                                    Conn {
                                        stream,
                                        pending: Vec::new(),
                                    },
                                );
                                next += 1;
                                served += 1;
                                if first_client.is_none() {
                                    first_client = Some(Instant::now());
                                    stats_at_first = reactor.stats();
                                    #[cfg(target_os = "linux")]
                                    {
                                        syscalls_at_first = reactor.kernel().syscalls();
                                    }
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                            Err(e) => return Err(e),
                        }
                    }
                    continue;
                }
                let id = event.token().0;
                let Some(conn) = conns.get_mut(&id) else {
                    continue;
                };
                let keep = if event.is_writable() {
                    flush(&mut reactor, id, conn)?
                } else {
                    echo(&mut reactor, id, conn, &mut buf)?
                };
                if !keep {
                    let conn = conns.remove(&id).expect("present");
                    reactor.deregister(&conn.stream)?;
                }
            }
            outside += t1.elapsed();
            if o.exit_when_idle && served > 0 && conns.is_empty() {
                break;
            }
        }

        let end = reactor.stats();
        let active = first_client.map_or(Duration::ZERO, |t| t.elapsed());
        print_stats(&end, &stats_at_first, served, active);
        #[cfg(target_os = "linux")]
        {
            let (a, b) = (reactor.kernel().syscalls(), syscalls_at_first);
            println!(
                "kernel-syscalls {{\"wait\":{},\"modify\":{},\"add\":{},\"probe\":{},\
                 \"wake_read\":{},\"wake_write\":{},\"total\":{}}}",
                a.wait - b.wait,
                a.modify - b.modify,
                a.add - b.add,
                a.probe - b.probe,
                a.wake_read - b.wake_read,
                a.wake_write - b.wake_write,
                a.total() - b.total(),
            );
        }
        reactor.deregister(&listener)?;
        let report = reactor.shutdown()?;
        println!("teardown: {report}");
        Ok(())
    }

    /// Read once and write it back; returns false when the connection is done.
    ///
    /// One read per event, not "until WouldBlock": the registration is level-triggered, so data
    /// left unread is reported again by the next poll, and one busy connection cannot starve the
    /// others (under Wine a recv takes ~30 µs, long enough for a fast client to send again).
    fn echo(
        reactor: &mut OsReactor,
        id: usize,
        conn: &mut Conn,
        buf: &mut [u8],
    ) -> io::Result<bool> {
        match conn.stream.read(buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                if !write_or_keep(conn, &buf[..n]) {
                    return Ok(false);
                }
                if !conn.pending.is_empty() {
                    // Backpressure: stop reading until the peer takes what we owe it.
                    reactor.reregister(&conn.stream, Token(id), Interest::WRITABLE)?;
                }
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(true)
            }
            Err(_) => Ok(false), // reset etc.: drop the connection
        }
    }

    /// Write `data`, keeping what the socket would not take. False if the connection failed.
    fn write_or_keep(conn: &mut Conn, data: &[u8]) -> bool {
        if !conn.pending.is_empty() {
            conn.pending.extend_from_slice(data);
            return true;
        }
        let mut off = 0;
        while off < data.len() {
            match conn.stream.write(&data[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.pending.extend_from_slice(&data[off..]);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Writable again: send what we owe; resume reading when done.
    fn flush(reactor: &mut OsReactor, id: usize, conn: &mut Conn) -> io::Result<bool> {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(false),
            }
        }
        reactor.reregister(&conn.stream, Token(id), Interest::READABLE)?;
        Ok(true)
    }

    /// One machine-readable line with the reactor's counters over the busy period.
    fn print_stats(end: &Stats, start: &Stats, served: usize, active: Duration) {
        let d = |a: u64, b: u64| a - b;
        let nt = &end.nt;
        let s = &start.nt;
        println!(
            "reactor-stats {{\"connections\":{served},\"active_secs\":{:.3},\"events\":{},\
             \"packets\":{},\"stale_discarded\":{},\"nt_submit\":{},\"nt_cancel\":{},\
             \"nt_dequeue\":{},\"nt_associate\":{},\"nt_base_socket\":{},\"nt_post\":{},\
             \"nt_total\":{},\"slots\":{}}}",
            active.as_secs_f64(),
            d(end.events, start.events),
            d(end.packets, start.packets),
            end.stale_discarded,
            d(nt.submit, s.submit),
            d(nt.cancel, s.cancel),
            d(nt.dequeue, s.dequeue),
            d(nt.associate, s.associate),
            d(nt.base_socket, s.base_socket),
            d(nt.post, s.post),
            d(nt.total(), s.total()),
            end.slots,
        );
    }
}
