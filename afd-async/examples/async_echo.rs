//! An async echo server: a task per connection, on one thread (`bash scripts/demo.sh --async`).
//!
//! ```text
//! async_echo [--addr 127.0.0.1:7007] [--exit-when-idle] [--max-secs 600]
//! ```
//! At exit it prints the reactor's counters (`reactor-stats {json}`) and its teardown, for the
//! demo's summary.

use afd_async::{Async, Timer, block_on};
use async_executor::LocalExecutor;
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};
use std::cell::Cell;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Echo what the peer sends until it closes.
async fn echo(mut stream: Async<TcpStream>) -> io::Result<()> {
    stream.get_ref().set_nodelay(true)?;
    let mut buf = vec![0; 64 * 1024];
    loop {
        match stream.read(&mut buf).await? {
            0 => return Ok(()),
            n => stream.write_all(&buf[..n]).await?,
        }
    }
}

fn main() -> io::Result<()> {
    let opts = Options::parse()?;
    let (open, served) = (Cell::new(0usize), Cell::new(0usize));
    let ex = LocalExecutor::new(); // after what its tasks borrow: dropped first
    let start = Instant::now();
    let mut at_first = None;
    block_on(ex.run(async {
        let listener = Async::<TcpListener>::bind(opts.addr)?;
        println!("listening on {}", listener.get_ref().local_addr()?);
        let serve = async {
            loop {
                let (stream, _) = listener.accept().await?;
                if served.get() == 0 {
                    at_first = Some((Instant::now(), afd_async::stats()?));
                }
                served.set(served.get() + 1);
                open.set(open.get() + 1);
                let open = &open;
                ex.spawn(async move {
                    let _ = echo(stream).await; // a reset or an error ends the connection
                    open.set(open.get() - 1);
                })
                .detach();
            }
        };
        let stop = async {
            // Every client gone (--exit-when-idle), or the time limit.
            loop {
                Timer::after(Duration::from_millis(100)).await;
                let idle = opts.exit_when_idle && served.get() > 0 && open.get() == 0;
                if idle || start.elapsed() > opts.max {
                    return io::Result::Ok(());
                }
            }
        };
        future::or(serve, stop).await
    }))?;
    if let Some((at, stats)) = at_first {
        print_stats(&stats, at.elapsed(), served.get())?;
    }
    drop(ex);
    println!("teardown: {}", afd_async::shutdown()?);
    Ok(())
}

/// The demo's machine-readable line: the reactor's counters since the first client.
fn print_stats(start: &afd_reactor::Stats, active: Duration, served: usize) -> io::Result<()> {
    let (end, s) = (afd_async::stats()?, &start.nt);
    let nt = &end.nt;
    println!(
        "reactor-stats {{\"connections\":{served},\"active_secs\":{:.3},\"events\":{},\
         \"packets\":{},\"stale_discarded\":{},\"nt_submit\":{},\"nt_cancel\":{},\
         \"nt_dequeue\":{},\"nt_associate\":{},\"nt_base_socket\":{},\"nt_post\":{},\
         \"nt_total\":{},\"slots\":{}}}",
        active.as_secs_f64(),
        end.events - start.events,
        end.packets - start.packets,
        end.stale_discarded,
        nt.submit - s.submit,
        nt.cancel - s.cancel,
        nt.dequeue - s.dequeue,
        nt.associate - s.associate,
        nt.base_socket - s.base_socket,
        nt.post - s.post,
        nt.total() - s.total(),
        end.slots,
    );
    Ok(())
}

struct Options {
    addr: std::net::SocketAddr,
    exit_when_idle: bool,
    max: Duration,
}

impl Options {
    fn parse() -> io::Result<Self> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidInput, m);
        let mut o = Options {
            addr: ([127, 0, 0, 1], 7007).into(),
            exit_when_idle: false,
            max: Duration::from_secs(600),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| bad(format!("{arg} needs a value")))
            };
            match arg.as_str() {
                "--addr" => o.addr = value()?.parse().map_err(|e| bad(format!("--addr: {e}")))?,
                "--exit-when-idle" => o.exit_when_idle = true,
                "--max-secs" => {
                    let secs = value()?
                        .parse()
                        .map_err(|e| bad(format!("--max-secs: {e}")))?;
                    o.max = Duration::from_secs(secs);
                }
                other => return Err(bad(format!("unknown argument {other}"))),
            }
        }
        Ok(o)
    }
}
