//! The async layer on real sockets: natively on Linux (epoll) and under Wine (AFD polls on a
//! completion port). Each test runs on its own thread, with its own reactor.
#![cfg(any(windows, target_os = "linux"))]

use afd_async::{Async, Held, Timer, block_on, held};
use async_executor::LocalExecutor;
use futures_lite::{AsyncReadExt, AsyncWriteExt, StreamExt, future};
use std::cell::Cell;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::rc::Rc;
use std::time::{Duration, Instant};

const LOCAL: ([u8; 4], u16) = ([127, 0, 0, 1], 0);

fn addr_of(l: &Async<TcpListener>) -> SocketAddr {
    l.get_ref().local_addr().unwrap()
}

/// `fut`, or a failure after `secs`: a test that would hang fails instead.
async fn within<T>(secs: u64, fut: impl std::future::Future<Output = T>) -> T {
    future::or(async { Some(fut.await) }, async {
        Timer::after(Duration::from_secs(secs)).await;
        None
    })
    .await
    .unwrap_or_else(|| panic!("not done within {secs} s"))
}

async fn echo(mut stream: Async<TcpStream>) -> io::Result<()> {
    let mut buf = vec![0; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

#[test]
fn many_clients_echo_through_many_tasks_on_a_local_executor() {
    const CLIENTS: usize = 100;
    const MESSAGES: usize = 50;
    // Tasks that spawn tasks: the executor is shared (`Rc`), its tasks `'static`.
    let ex = Rc::new(LocalExecutor::new());
    let verified = Rc::new(Cell::new(0usize));
    block_on(ex.run(within(60, {
        let ex = Rc::clone(&ex);
        let verified = Rc::clone(&verified);
        async move {
            let listener = Async::<TcpListener>::bind(LOCAL).unwrap();
            let addr = addr_of(&listener);
            let server = ex.spawn({
                let ex = Rc::clone(&ex);
                async move {
                    let mut incoming = listener.incoming();
                    for _ in 0..CLIENTS {
                        let stream = incoming.next().await.unwrap().unwrap();
                        ex.spawn(echo(stream)).detach();
                    }
                }
            });
            let mut clients = Vec::new();
            for c in 0..CLIENTS {
                let verified = Rc::clone(&verified);
                clients.push(ex.spawn(async move {
                    let mut stream = Async::<TcpStream>::connect(addr).await.unwrap();
                    let mut buf = [0; 64];
                    for m in 0..MESSAGES {
                        let msg = format!("client {c} message {m:>4}\n");
                        stream.write_all(msg.as_bytes()).await.unwrap();
                        stream.read_exact(&mut buf[..msg.len()]).await.unwrap();
                        assert_eq!(&buf[..msg.len()], msg.as_bytes());
                        verified.set(verified.get() + 1);
                    }
                }));
            }
            for c in clients {
                c.await;
            }
            server.await;
        }
    })));
    assert_eq!(verified.get(), CLIENTS * MESSAGES);
    drop(ex); // the echo tasks, and their streams
    assert_eq!(held(), Held::default());
    assert_eq!(afd_async::stats().unwrap().registered, 0);
}

#[test]
fn a_failed_connect_is_an_error_not_a_hang() {
    // A port nobody listens on: bind one, note it, close it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = block_on(within(30, Async::<TcpStream>::connect(addr))).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(held(), Held::default(), "the failed stream is deregistered");
}

#[test]
fn one_task_reads_while_another_writes_the_same_stream() {
    const BYTES: usize = 4 << 20;
    let ex = LocalExecutor::new();
    block_on(ex.run(within(120, async {
        let listener = Async::<TcpListener>::bind(LOCAL).unwrap();
        let addr = addr_of(&listener);
        ex.spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            echo(stream).await.unwrap();
        })
        .detach();
        let stream = Async::<TcpStream>::connect(addr).await.unwrap();
        let writer = async {
            let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
            (&stream).write_all(&data).await.unwrap();
            (&stream).close().await.unwrap(); // FIN: the echo ends after the last byte
        };
        let reader = async {
            let mut got = Vec::with_capacity(BYTES);
            (&stream).read_to_end(&mut got).await.unwrap();
            got
        };
        let ((), got) = future::zip(writer, reader).await;
        assert_eq!(got.len(), BYTES);
        assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
    })));
}

#[test]
fn a_writer_blocked_by_a_slow_reader_resumes() {
    // The peer is a plain blocking socket that reads slowly on its own thread.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::Read;
        let (mut s, _) = listener.accept().unwrap();
        let mut total = 0;
        let mut buf = vec![0; 64 * 1024];
        std::thread::sleep(Duration::from_millis(200)); // let the writer fill the buffers
        loop {
            match s.read(&mut buf).unwrap() {
                0 => return total,
                n => total += n,
            }
        }
    });
    let sent = block_on(within(120, async {
        let mut stream = Async::<TcpStream>::connect(addr).await.unwrap();
        let chunk = vec![7u8; 256 * 1024];
        let mut sent = 0;
        for _ in 0..32 {
            stream.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        stream.close().await.unwrap();
        sent
    }));
    assert_eq!(reader.join().unwrap(), sent);
}

#[test]
fn udp_send_to_recv_from_and_connected_send_recv() {
    block_on(within(30, async {
        let a = Async::<UdpSocket>::bind(LOCAL).unwrap();
        let b = Async::<UdpSocket>::bind(LOCAL).unwrap();
        let (a_addr, b_addr) = (
            a.get_ref().local_addr().unwrap(),
            b.get_ref().local_addr().unwrap(),
        );
        let mut buf = [0; 64];
        let recv = b.recv_from(&mut buf);
        let send = async {
            Timer::after(Duration::from_millis(10)).await;
            a.send_to(b"ping", b_addr).await.unwrap()
        };
        let ((n, from), sent) = future::zip(async { recv.await.unwrap() }, send).await;
        assert_eq!((n, sent, from), (4, 4, a_addr));
        assert_eq!(&buf[..4], b"ping");
        a.get_ref().connect(b_addr).unwrap();
        b.get_ref().connect(a_addr).unwrap();
        b.send(b"pong").await.unwrap();
        let n = a.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"pong");
    }));
}

#[test]
fn dropping_an_async_deregisters_it_and_dropped_futures_leave_nothing() {
    block_on(within(30, async {
        let listener = Async::<TcpListener>::bind(LOCAL).unwrap();
        let addr = addr_of(&listener);
        let client = Async::<TcpStream>::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Futures that wait, then are dropped.
        for _ in 0..10 {
            let mut wait = Box::pin(server.readable());
            assert!(future::poll_once(&mut wait).await.is_none());
            let mut accept = Box::pin(listener.accept());
            assert!(future::poll_once(&mut accept).await.is_none());
        }
        assert_eq!(
            held().waiters,
            1,
            "the readable futures are gone; the poll-style accept waiter (one per task) stays \
             until an event"
        );
        assert_eq!(afd_async::stats().unwrap().registered, 3);
        drop(client);
        drop(server);
        drop(listener);
        let h = held();
        assert_eq!((h.sources, h.waiters), (0, 0), "{h:?}"); // the timer is `within`'s
        assert_eq!(afd_async::stats().unwrap().registered, 0);
    }));
}

#[test]
fn a_request_and_answer_cost_one_submission_per_wait_and_no_cancel() {
    const ROUNDS: u64 = 200;
    let ex = LocalExecutor::new();
    block_on(ex.run(within(60, async {
        let listener = Async::<TcpListener>::bind(LOCAL).unwrap();
        let addr = addr_of(&listener);
        let server = ex.spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            echo(stream).await.unwrap();
        });
        let mut client = Async::<TcpStream>::connect(addr).await.unwrap();
        let mut buf = [0; 32];
        // Warm up, then count.
        client.write_all(b"warm").await.unwrap();
        client.read_exact(&mut buf[..4]).await.unwrap();
        let before = afd_async::stats().unwrap().nt;
        for _ in 0..ROUNDS {
            client.write_all(b"ping").await.unwrap();
            client.read_exact(&mut buf[..4]).await.unwrap();
        }
        let after = afd_async::stats().unwrap().nt;
        let submits = after.submit - before.submit;
        // Per round: the client waits to read once and the server once.
        assert!(
            submits <= 2 * ROUNDS + 4,
            "{submits} submissions for {ROUNDS} rounds (2 waits each)"
        );
        assert_eq!(after.cancel, before.cancel, "no cancel");
        drop(client);
        server.await;
    })));
}

#[test]
fn a_timer_and_an_interval_on_real_time() {
    block_on(async {
        let start = Instant::now();
        Timer::after(Duration::from_millis(30)).await;
        assert!(start.elapsed() >= Duration::from_millis(30));
        let mut ticks = Timer::interval(Duration::from_millis(10));
        for _ in 0..5 {
            ticks.next().await.unwrap();
        }
        assert!(start.elapsed() >= Duration::from_millis(80));
    });
    assert_eq!(held(), Held::default());
}

#[test]
fn a_task_woken_from_another_thread_runs() {
    let ex = LocalExecutor::new();
    let flag = Rc::new(Cell::new(false));
    let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
    let t = std::thread::spawn(move || {
        let waker = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        waker.wake();
    });
    let f = Rc::clone(&flag);
    block_on(ex.run(within(10, async move {
        let mut sent = Some(tx);
        future::poll_fn(|cx| {
            if let Some(tx) = sent.take() {
                tx.send(cx.waker().clone()).unwrap();
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(())
        })
        .await;
        f.set(true);
    })));
    t.join().unwrap();
    assert!(flag.get());
}
