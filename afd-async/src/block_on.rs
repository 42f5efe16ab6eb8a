//! [`block_on`]: run a future on the current thread, driving the thread's reactor.

use crate::driver::Driver;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

/// How many times in a row the future may be polled again at once (it woke itself, as an
/// executor does when it has more tasks) before the reactor gets a turn without waiting.
const POLLS_PER_TURN: u32 = 16;

/// What wakes a `block_on`: a flag, and the reactor's waker for a wake from another thread
/// while the loop waits in the kernel.
struct Signal {
    woken: AtomicBool,
    /// True while the loop waits (or is about to wait) in the reactor.
    sleeping: AtomicBool,
    reactor: afd_reactor::Waker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Store, then look: the loop stores `sleeping`, then looks at `woken` (both SeqCst), so
        // one of the two sees the other and the wake is never lost. A wake from the loop's own
        // thread (a readiness event waking a task) finds it awake: no kernel call.
        self.woken.store(true, Ordering::SeqCst);
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.post();
        }
    }
}

impl Signal {
    /// End the loop's wait in the kernel. A post that fails (the port is out of quota) is tried
    /// again; if it still fails, the loop is marked asleep again so that the next wake tries
    /// too. A reactor that has shut down has no loop to wake.
    fn post(&self) {
        for _ in 0..POST_TRIES {
            match self.reactor.wake() {
                Ok(()) => return,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(_) => std::thread::yield_now(),
            }
        }
        self.sleeping.store(true, Ordering::SeqCst);
    }
}

/// How many times a failed wake post is tried before it is left to the next wake.
const POST_TRIES: usize = 3;

/// Run `future` to completion on this thread, driving the thread's reactor while it waits.
///
/// Readiness events and timers wake the tasks waiting for them; a [`std::task::Waker`] used
/// from another thread wakes the loop through the reactor's [`Waker`](afd_reactor::Waker) (one
/// kernel call, made only if the loop is waiting in the kernel). The loop makes no call of its
/// own while the future has work: the reactor is asked for events when the future waits, or
/// without waiting after the future has woken itself 16 times in a row.
///
/// Run an executor on it to have many tasks: `block_on(executor.run(future))` with
/// `async_executor::LocalExecutor` (tasks spawned on it need not be `Send`).
///
/// # Panics
/// If the thread's reactor cannot be made or fails (the kernel refused to create or wait on
/// its completion port, or it was shut down). [`try_block_on`] returns that error instead.
///
/// # Examples
/// ```
/// use afd_async::{Async, block_on};
/// use async_executor::LocalExecutor;
/// use futures_lite::{AsyncReadExt, AsyncWriteExt};
/// use std::net::{TcpListener, TcpStream};
///
/// # #[cfg(any(windows, target_os = "linux"))]
/// block_on(async {
///     let ex = LocalExecutor::new();
///     let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
///     let addr = listener.get_ref().local_addr()?;
///     let server = ex.spawn(async move {
///         let (mut stream, _) = listener.accept().await?;
///         let mut buf = [0; 4];
///         stream.read_exact(&mut buf).await?;
///         stream.write_all(&buf).await?;
///         std::io::Result::Ok(())
///     });
///     ex.run(async {
///         let mut client = Async::<TcpStream>::connect(addr).await?;
///         client.write_all(b"ping").await?;
///         let mut buf = [0; 4];
///         client.read_exact(&mut buf).await?;
///         assert_eq!(&buf, b"ping");
///         server.await
///     })
///     .await
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    match try_block_on(future) {
        Ok(output) => output,
        Err(e) => panic!("afd-async: block_on: the thread's reactor failed: {e}"),
    }
}

/// [`block_on`], returning the reactor's failure instead of panicking.
///
/// # Errors
/// The error of making the thread's reactor, or of waiting on it (`NotConnected` once it has
/// shut down).
///
/// # Examples
/// ```
/// use afd_async::try_block_on;
/// # #[cfg(any(windows, target_os = "linux"))]
/// assert_eq!(try_block_on(async { 1 + 1 })?, 2);
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn try_block_on<F: Future>(future: F) -> io::Result<F::Output> {
    let driver = Driver::current()?;
    let _running = driver.enter();
    let signal = Arc::new(Signal {
        woken: AtomicBool::new(true),
        sleeping: AtomicBool::new(false),
        reactor: driver.reactor_waker.clone(),
    });
    let waker = Waker::from(Arc::clone(&signal));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut polls = 0;
    loop {
        if signal.woken.swap(false, Ordering::SeqCst) {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Ok(output);
            }
            polls += 1;
            if polls < POLLS_PER_TURN && signal.woken.load(Ordering::SeqCst) {
                continue;
            }
        }
        polls = 0;
        let timeout = if signal.woken.load(Ordering::SeqCst) {
            Some(Duration::ZERO)
        } else {
            signal.sleeping.store(true, Ordering::SeqCst);
            if signal.woken.load(Ordering::SeqCst) {
                Some(Duration::ZERO)
            } else {
                None
            }
        };
        // Awake again before the events wake anyone: a wake from this thread then costs nothing.
        let result = driver.react(timeout, || signal.sleeping.store(false, Ordering::SeqCst));
        signal.sleeping.store(false, Ordering::SeqCst);
        result?;
    }
}
