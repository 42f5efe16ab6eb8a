//! The workloads that need no peer (UDP sockets, fresh pollers). Between the phases the driver may count the
//! wineserver requests (see `mark`).

use super::sys::{Ready, Sys, WAKE, udp_socket};
use super::{alloc, mark, record, thread_id};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// Sizes of the workloads.
pub struct Sizes {
    /// Registered sockets for churn, heap, teardown and idle.
    pub sockets: usize,
    /// Register + deregister operations in the churn loop.
    pub churn_ops: usize,
    /// Wake round trips timed.
    pub wakes: usize,
    /// Wakes per storm thread.
    pub storm_wakes: usize,
    /// Seconds of the short idle phase (the long one is three times as long).
    pub idle_secs: f64,
    /// Only the heap and teardown phases of [`registered_set`] (no churn, no idle).
    pub teardown_only: bool,
    /// Whether the teardown waits for the kernel (see `Sys::teardown`).
    pub teardown_wait: bool,
}

/// One zero-timeout wait (the systems submit pending polls there); any event is an error here,
/// since idle UDP sockets never become readable.
fn settle<S: Sys>(sys: &mut S) -> io::Result<()> {
    let mut ready = Vec::new();
    sys.wait(&mut ready, Some(Duration::ZERO))?;
    match ready.iter().find(|r| r.key != WAKE) {
        Some(r) => Err(io::Error::other(format!(
            "an idle UDP socket (key {}) reported readiness",
            r.key
        ))),
        None => Ok(()),
    }
}

/// The workloads on `sizes.sockets` registered sockets, on one poller in turn: heap bytes per
/// registration, register + deregister churn, idle (when `idle`), and last the teardown of the
/// poller with every poll pending. (Setting up 10,000 registrations is the slow part under Wine,
/// so it is done once.)
pub fn registered_set<S: Sys>(mut sys: S, sizes: &Sizes, idle: bool) -> io::Result<()> {
    let n = sizes.sockets;
    // Heap: the sockets exist before the baseline; what registering them costs is the delta.
    let mut socks = (0..n)
        .map(|_| udp_socket().map(|u| sys.udp(u)))
        .collect::<io::Result<Vec<_>>>()?;
    let mut extra = (0..64)
        .map(|_| udp_socket().map(|u| sys.udp(u)))
        .collect::<io::Result<Vec<_>>>()?;
    settle(&mut sys)?;
    let before = alloc::live();
    let t0 = Instant::now();
    for (key, u) in socks.iter_mut().enumerate() {
        sys.add_udp(u, key)?;
    }
    settle(&mut sys)?;
    let setup = t0.elapsed().as_secs_f64();
    let bytes = alloc::live().saturating_sub(before);
    record(&format!(
        "workload=heap sockets={n} bytes={bytes} bytes_per_socket={:.1} register_secs={setup:.3}",
        bytes as f64 / n as f64
    ));

    if sizes.teardown_only {
        return teardown(sys, socks, extra, sizes.teardown_wait);
    }

    // Churn. Associating a socket with a port happens once in its life: warm the extras up.
    for (i, u) in extra.iter_mut().enumerate() {
        sys.add_udp(u, n + i)?;
        settle(&mut sys)?;
        sys.remove_udp(u)?;
    }
    settle(&mut sys)?;
    mark("churn-start");
    let t0 = Instant::now();
    for i in 0..sizes.churn_ops {
        let u = &mut extra[i % 64];
        sys.add_udp(u, n + i % 64)?;
        settle(&mut sys)?;
        sys.remove_udp(u)?;
    }
    settle(&mut sys)?;
    let secs = t0.elapsed().as_secs_f64();
    mark("churn-end");
    record(&format!(
        "workload=churn registered={n} ops={} secs={secs:.6} ops_per_sec={:.1} {}",
        sizes.churn_ops,
        sizes.churn_ops as f64 / secs,
        sys.counters()
    ));

    if idle {
        let mut ready = Vec::new();
        let mut idle_for = |d: Duration| -> io::Result<()> {
            let end = Instant::now() + d;
            loop {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(());
                }
                sys.wait(&mut ready, Some(left))?;
                if !ready.is_empty() {
                    return Err(io::Error::other("an idle UDP socket reported readiness"));
                }
            }
        };
        let secs = sizes.idle_secs;
        mark("idle-a");
        idle_for(Duration::from_secs_f64(secs))?;
        mark("idle-b");
        idle_for(Duration::from_secs_f64(secs * 3.0))?;
        mark("idle-c");
        record(&format!("workload=idle registered={n} short_secs={secs}"));
    }

    teardown(sys, socks, extra, sizes.teardown_wait)
}

/// Teardown with every poll pending: the poller first, then the sockets.
fn teardown<S: Sys>(sys: S, socks: Vec<S::Udp>, extra: Vec<S::Udp>, wait: bool) -> io::Result<()> {
    let n = socks.len();
    let t0 = Instant::now();
    let waited = sys.teardown(wait);
    let t1 = Instant::now();
    drop(socks);
    drop(extra);
    let t2 = Instant::now();
    record(&format!(
        "workload=teardown pending={n} waited={} poller_ms={:.3} total_ms={:.3}",
        u8::from(waited),
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t0).as_secs_f64() * 1e3
    ));
    Ok(())
}

/// Latency from `wake()` on another thread to the return of `wait` on this one.
pub fn wake<S: Sys>(mut sys: S, n: usize) -> io::Result<()> {
    let Some(waker) = sys.waker()? else {
        record("workload=wake supported=0");
        return Ok(());
    };
    let base = Instant::now();
    let stamp = Arc::new(AtomicU64::new(0));
    let (go, went) = mpsc::channel::<()>();
    let thread = {
        let (stamp, waker) = (Arc::clone(&stamp), Arc::clone(&waker));
        std::thread::spawn(move || -> io::Result<()> {
            while went.recv().is_ok() {
                stamp.store(base.elapsed().as_nanos() as u64, Ordering::SeqCst);
                waker()?;
            }
            Ok(())
        })
    };
    let mut lat = Vec::with_capacity(n);
    let mut ready = Vec::new();
    for _ in 0..n {
        go.send(())
            .map_err(|_| io::Error::other("the waking thread died"))?;
        ready.clear();
        sys.wait(&mut ready, None)?;
        let now = base.elapsed().as_nanos() as u64;
        lat.push(now.saturating_sub(stamp.load(Ordering::SeqCst)));
    }
    drop(go);
    thread
        .join()
        .map_err(|_| io::Error::other("the waking thread panicked"))??;
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize] as f64 / 1e3;
    record(&format!(
        "workload=wake supported=1 n={n} p10_us={:.1} p50_us={:.1} p90_us={:.1} p99_us={:.1}",
        pct(0.1),
        pct(0.5),
        pct(0.9),
        pct(0.99)
    ));
    Ok(())
}

/// Four threads call `wake` as fast as they can while the loop thread is busy elsewhere (it
/// is joining them); then the loop drains. Coalescing shows as one packet posted, not 40,000.
pub fn storm<S: Sys>(mut sys: S, per_thread: usize) -> io::Result<()> {
    let Some(waker) = sys.waker()? else {
        record("workload=storm supported=0");
        return Ok(());
    };
    mark("storm-start");
    let t0 = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let waker = Arc::clone(&waker);
            std::thread::spawn(move || -> io::Result<()> {
                thread_id();
                for _ in 0..per_thread {
                    waker()?;
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| io::Error::other("a storm thread panicked"))??;
    }
    let secs = t0.elapsed().as_secs_f64();
    mark("storm-end");
    let mut ready: Vec<Ready> = Vec::new();
    let mut wake_events = 0u64;
    loop {
        ready.clear();
        sys.wait(&mut ready, Some(Duration::ZERO))?;
        let n = ready.iter().filter(|r| r.key == WAKE).count() as u64;
        if n == 0 {
            break;
        }
        wake_events += n;
    }
    record(&format!(
        "workload=storm supported=1 wakes={} secs={secs:.6} wake_events={wake_events} {}",
        4 * per_thread,
        sys.counters()
    ));
    Ok(())
}
