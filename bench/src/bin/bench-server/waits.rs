//! Waitable handles (issue 15), Windows only: afd-reactor's `register_waitable` against polling's
//! `PollerIocpExt::add_waitable`, both on auto-reset events.
//!
//! ```text
//! bench-server waits-signal --system afd|polling [--mode level|oneshot] [--signals K] [--warmup W]
//! bench-server waits-many   --system afd|polling [--mode level|oneshot] [--waitables N]
//! ```
//!
//! `waits-signal`: one auto-reset event, registered under the mode; then, for each variant
//! (`same`: this thread sets the event, then polls until it is reported; `thread`: a second thread
//! sets it each time the loop has reported the previous signal, spinning on an atomic between,
//! so it makes no wineserver request of its own but `SetEvent`'s), W signals of warm-up and two
//! measured segments of K and 3K signals between marks (`mark name=<variant>-a|b|c`). Before each
//! mark every thread of the process is announced (`tid id=…`), so the driver attributes the
//! thread pool's requests too. One `result workload=signal variant=… segment=a|b …` record per
//! segment with its polls and (afd) NT calls; `roles variant=… main=… signaller=…` names the
//! threads.
//!
//! `waits-many`: N auto-reset events, none signaled: the process's thread count and the live heap
//! before and after registering them (armed: one zero-timeout poll after), after each is signaled
//! once and reported, after they are all deregistered, and after a second batch of the same
//! registrations is made and removed again (growth there is a leak, not kept capacity). One
//! `result workload=many …` record.
//!
//! In `oneshot` mode each event is followed by a re-arm: afd-reactor's `reregister_waitable`,
//! polling's `modify_waitable` (the way async-io uses it). In `level` mode both re-arm by
//! themselves (afd-reactor at the next `poll`, polling at the next `wait`).

use super::{alloc, asyncs, mark, thread_id};
use afd_reactor::kernel::nt::NtKernel;
use afd_reactor::{Events, Mode, Reactor, Token};
use polling::os::iocp::PollerIocpExt;
use polling::{PollMode, Poller};
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Threading::{CreateEventW, GetCurrentThreadId, SetEvent};

/// How long one signal may take to be reported before the run fails.
const LONG: Duration = Duration::from_secs(30);

/// The options of the two workloads.
pub struct WaitArgs {
    pub oneshot: bool,
    pub signals: usize,
    pub warmup: usize,
    pub waitables: usize,
}

/// A new auto-reset event, not signaled.
fn auto_reset_event() -> io::Result<OwnedHandle> {
    // SAFETY: null attributes and name are allowed; the result is checked.
    let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()) };
    if h.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(h as RawHandle) })
}

/// `SetEvent` on a handle value that stays open for the whole run.
fn set(raw: usize) -> io::Result<()> {
    // SAFETY: the caller keeps the event open (it owns it for the run); SetEvent validates the
    // value anyway.
    if unsafe { SetEvent(raw as HANDLE) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One system's waitable API, used the same way for both.
trait WaitSys {
    fn add(&mut self, ev: &OwnedHandle, key: usize) -> io::Result<()>;
    /// One poll: the keys reported signaled go to `out`.
    fn poll(&mut self, out: &mut Vec<usize>, timeout: Option<Duration>) -> io::Result<()>;
    /// After an event in oneshot mode: listen for the next signal.
    fn rearm(&mut self, ev: &OwnedHandle, key: usize) -> io::Result<()>;
    fn remove(&mut self, ev: &OwnedHandle) -> io::Result<()>;
    /// `key=value` counters (afd-reactor's NT calls; nothing for polling).
    fn counters(&self) -> String;
    /// The reactor's own accounting of its state's heap, where it has one.
    fn state_heap(&self) -> Option<usize>;
}

struct Afd {
    reactor: Reactor<NtKernel>,
    events: Events,
    mode: Mode,
}

impl Afd {
    fn new(oneshot: bool) -> io::Result<Self> {
        Ok(Self {
            reactor: Reactor::with_kernel(NtKernel::new()?),
            events: Events::with_capacity(1024),
            mode: if oneshot { Mode::Oneshot } else { Mode::Level },
        })
    }
}

impl WaitSys for Afd {
    fn add(&mut self, ev: &OwnedHandle, key: usize) -> io::Result<()> {
        self.reactor
            .register_waitable_with_mode(ev, Token(key), self.mode)
    }
    fn poll(&mut self, out: &mut Vec<usize>, timeout: Option<Duration>) -> io::Result<()> {
        self.reactor.poll(&mut self.events, timeout)?;
        for e in self.events.iter() {
            if !e.is_signaled() {
                return Err(io::Error::other(format!("unexpected event {e:?}")));
            }
            out.push(e.token().0);
        }
        Ok(())
    }
    fn rearm(&mut self, ev: &OwnedHandle, key: usize) -> io::Result<()> {
        if self.mode == Mode::Oneshot {
            self.reactor.reregister_waitable(ev, Token(key))?;
        }
        Ok(())
    }
    fn remove(&mut self, ev: &OwnedHandle) -> io::Result<()> {
        self.reactor.deregister_waitable(ev).map(|_| ())
    }
    fn counters(&self) -> String {
        let s = self.reactor.stats();
        format!(
            "wait_path={:?} nt_total={} nt_dequeue={} nt_wait_open={} nt_wait_arm={} \
             nt_wait_cancel={} nt_wait_close={} nt_post={} packets={} signals={}",
            self.reactor.kernel().wait_path_in_use(),
            s.nt.total(),
            s.nt.dequeue,
            s.nt.wait_open,
            s.nt.wait_arm,
            s.nt.wait_cancel,
            s.nt.wait_close,
            s.nt.post,
            s.packets,
            s.signals,
        )
    }
    fn state_heap(&self) -> Option<usize> {
        Some(self.reactor.state_heap_bytes())
    }
}

struct Polling {
    poller: Poller,
    events: polling::Events,
    mode: PollMode,
}

impl Polling {
    fn new(oneshot: bool) -> io::Result<Self> {
        Ok(Self {
            poller: Poller::new()?,
            events: polling::Events::new(),
            mode: if oneshot {
                PollMode::Oneshot
            } else {
                PollMode::Level
            },
        })
    }
}

impl WaitSys for Polling {
    fn add(&mut self, ev: &OwnedHandle, key: usize) -> io::Result<()> {
        // SAFETY: every event outlives its registration: the workloads remove them all (or drop
        // the poller) before the events are closed.
        unsafe {
            self.poller
                .add_waitable(ev, polling::Event::readable(key), self.mode)
        }
    }
    fn poll(&mut self, out: &mut Vec<usize>, timeout: Option<Duration>) -> io::Result<()> {
        self.events.clear();
        self.poller.wait(&mut self.events, timeout)?;
        out.extend(self.events.iter().map(|e| e.key));
        Ok(())
    }
    fn rearm(&mut self, ev: &OwnedHandle, key: usize) -> io::Result<()> {
        if self.mode == PollMode::Oneshot {
            self.poller
                .modify_waitable(ev, polling::Event::readable(key), self.mode)?;
        }
        Ok(())
    }
    fn remove(&mut self, ev: &OwnedHandle) -> io::Result<()> {
        self.poller.remove_waitable(ev)
    }
    fn counters(&self) -> String {
        String::new()
    }
    fn state_heap(&self) -> Option<usize> {
        None
    }
}

/// Runs workload `what` (`waits-signal` or `waits-many`) on `system` (`afd` or `polling`).
pub fn run(what: &str, system: &str, a: &WaitArgs) -> io::Result<()> {
    match (what, system) {
        ("waits-signal", "afd") => signal(Afd::new(a.oneshot)?, a),
        ("waits-signal", "polling") => signal(Polling::new(a.oneshot)?, a),
        ("waits-many", "afd") => many(Afd::new(a.oneshot)?, a),
        ("waits-many", "polling") => many(Polling::new(a.oneshot)?, a),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} runs on afd or polling, not {system}"),
        )),
    }
}

const KEY: usize = 7;

/// Polls until the event under `KEY` is reported once; returns the polls it took.
fn until_reported<S: WaitSys>(sys: &mut S, out: &mut Vec<usize>) -> io::Result<u64> {
    let begin = Instant::now();
    let mut polls = 0;
    loop {
        out.clear();
        sys.poll(out, Some(LONG))?;
        polls += 1;
        match out.iter().filter(|&&k| k == KEY).count() {
            0 if begin.elapsed() > LONG => {
                return Err(io::Error::other("a signal was not reported in time"));
            }
            0 => {}
            1 => return Ok(polls),
            n => return Err(io::Error::other(format!("one signal reported {n} times"))),
        }
    }
}

/// The per-signal workload (see the module's docs).
fn signal<S: WaitSys>(mut sys: S, a: &WaitArgs) -> io::Result<()> {
    thread_id();
    let ev = auto_reset_event()?;
    let raw = ev.as_raw_handle() as usize;
    sys.add(&ev, KEY)?;
    let mut out = Vec::new();
    // SAFETY: no arguments, no preconditions.
    let main = unsafe { GetCurrentThreadId() };

    // This thread sets the event, then polls until it is reported.
    let mut segment = |sys: &mut S, n: usize| -> io::Result<u64> {
        let mut polls = 0;
        for _ in 0..n {
            set(raw)?;
            polls += until_reported(sys, &mut out)?;
            sys.rearm(&ev, KEY)?;
        }
        Ok(polls)
    };
    segment(&mut sys, a.warmup)?;
    println!("roles variant=same main={main} signaller={main}");
    for (seg, n) in [("a", a.signals), ("b", 3 * a.signals)] {
        asyncs::announce_threads();
        mark(&format!("same-{seg}"));
        let polls = segment(&mut sys, n)?;
        super::record(&format!(
            "workload=signal variant=same segment={seg} signals={n} polls={polls} {}",
            sys.counters()
        ));
    }
    asyncs::announce_threads();
    mark("same-c");

    // A second thread sets the event each time the loop has reported the previous signal; it
    // spins (yielding) in between, which asks nothing of wineserver.
    let sent = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = {
        let (sent, seen, stop) = (Arc::clone(&sent), Arc::clone(&seen), Arc::clone(&stop));
        std::thread::spawn(move || -> io::Result<()> {
            // SAFETY: no arguments, no preconditions.
            let _ = tx.send(unsafe { GetCurrentThreadId() });
            while !stop.load(Ordering::Acquire) {
                if seen.load(Ordering::Acquire) == sent.load(Ordering::Acquire) {
                    set(raw)?;
                    sent.fetch_add(1, Ordering::AcqRel);
                } else {
                    std::hint::spin_loop();
                    std::thread::yield_now();
                }
            }
            Ok(())
        })
    };
    let signaller = rx
        .recv()
        .map_err(|_| io::Error::other("the signalling thread did not start"))?;
    println!("roles variant=thread main={main} signaller={signaller}");
    let mut segment = |sys: &mut S, n: usize| -> io::Result<u64> {
        let mut polls = 0;
        for _ in 0..n {
            polls += until_reported(sys, &mut out)?;
            sys.rearm(&ev, KEY)?;
            seen.fetch_add(1, Ordering::AcqRel);
        }
        Ok(polls)
    };
    segment(&mut sys, a.warmup)?;
    for (seg, n) in [("a", a.signals), ("b", 3 * a.signals)] {
        // The worker must not set the event while the driver counts: hold it at the mark.
        let before = seen.load(Ordering::Acquire);
        while sent.load(Ordering::Acquire) <= before {
            std::thread::yield_now();
        }
        asyncs::announce_threads();
        mark(&format!("thread-{seg}"));
        let polls = segment(&mut sys, n)?;
        super::record(&format!(
            "workload=signal variant=thread segment={seg} signals={n} polls={polls} {}",
            sys.counters()
        ));
    }
    asyncs::announce_threads();
    mark("thread-c");
    stop.store(true, Ordering::Release);
    worker
        .join()
        .map_err(|_| io::Error::other("the signalling thread panicked"))??;
    // One signal may be left set by the worker after the last report: drain it.
    out.clear();
    sys.poll(&mut out, Some(Duration::from_millis(100)))?;
    sys.remove(&ev)?;
    Ok(())
}

/// The process's thread count (a Toolhelp32 snapshot).
fn threads() -> usize {
    asyncs::thread_ids().len()
}

/// The many-waitables workload (see the module's docs).
fn many<S: WaitSys>(mut sys: S, a: &WaitArgs) -> io::Result<()> {
    thread_id();
    let n = a.waitables;
    let evs = (0..n)
        .map(|_| auto_reset_event())
        .collect::<io::Result<Vec<_>>>()?;
    let mut out = Vec::new();
    sys.poll(&mut out, Some(Duration::ZERO))?;
    let threads_before = threads();
    let heap_before = alloc::live();
    let state_before = sys.state_heap();
    for (key, ev) in evs.iter().enumerate() {
        sys.add(ev, key)?;
    }
    // polling arms at its next wait; afd-reactor armed at registration.
    sys.poll(&mut out, Some(Duration::ZERO))?;
    if !out.is_empty() {
        return Err(io::Error::other("an event not signaled was reported"));
    }
    let heap = alloc::live() as f64 - heap_before as f64;
    let state = match (sys.state_heap(), state_before) {
        (Some(after), Some(before)) => format!("{:.1}", (after as f64 - before as f64) / n as f64),
        _ => "n/a".into(),
    };
    let threads_armed = threads();
    // Wine's wait threads start as the waits are registered; give stragglers a moment.
    std::thread::sleep(Duration::from_millis(200));
    let threads_armed_later = threads();

    let t0 = Instant::now();
    for ev in &evs {
        set(ev.as_raw_handle() as usize)?;
    }
    let mut seen = vec![false; n];
    let mut left = n;
    let mut peak = threads_armed_later;
    while left > 0 {
        if t0.elapsed() > LONG {
            return Err(io::Error::other(format!(
                "{left} of {n} signals not reported in time"
            )));
        }
        out.clear();
        sys.poll(&mut out, Some(Duration::from_secs(1)))?;
        for &k in &out {
            if k >= n || seen[k] {
                return Err(io::Error::other(format!("key {k} reported twice")));
            }
            seen[k] = true;
            left -= 1;
            if a.oneshot {
                sys.rearm(&evs[k], k)?;
            }
        }
        peak = peak.max(threads());
    }
    let signal_secs = t0.elapsed().as_secs_f64();
    let threads_signaled = threads();
    let heap_signaled = alloc::live() as f64 - heap_before as f64;
    // Idle for a second: Wine's pool workers retire after a while without work.
    std::thread::sleep(Duration::from_secs(1));
    sys.poll(&mut out, Some(Duration::ZERO))?;
    let threads_idle = threads();
    for ev in &evs {
        sys.remove(ev)?;
    }
    sys.poll(&mut out, Some(Duration::ZERO))?;
    let threads_removed = threads();
    let heap_removed = alloc::live() as f64 - heap_before as f64;
    let state_removed = match (sys.state_heap(), state_before) {
        (Some(after), Some(before)) => format!("{:.1}", (after as f64 - before as f64) / n as f64),
        _ => "n/a".into(),
    };
    // A second batch, registered and removed again: what stays live after it beyond the first
    // batch's figure grows with use (a leak), what does not is capacity kept for reuse.
    for (key, ev) in evs.iter().enumerate() {
        sys.add(ev, key)?;
    }
    sys.poll(&mut out, Some(Duration::ZERO))?;
    for ev in &evs {
        sys.remove(ev)?;
    }
    sys.poll(&mut out, Some(Duration::ZERO))?;
    let heap_second = alloc::live() as f64 - heap_before as f64;
    let threads_second = threads();
    super::record(&format!(
        "workload=many waitables={n} threads_before={threads_before} \
         threads_armed={threads_armed} threads_armed_200ms={threads_armed_later} \
         threads_peak={peak} threads_signaled={threads_signaled} threads_idle_1s={threads_idle} \
         threads_removed={threads_removed} heap_bytes={heap:.0} \
         heap_per_registration={:.1} state_heap_per_registration={state} \
         heap_after_signals_per_registration={:.1} heap_after_removal_per_registration={:.1} \
         state_heap_after_removal_per_registration={state_removed} \
         heap_after_second_batch_per_registration={:.1} threads_second_batch={threads_second} \
         signal_secs={signal_secs:.3} {}",
        heap / n as f64,
        heap_signaled / n as f64,
        heap_removed / n as f64,
        heap_second / n as f64,
        sys.counters()
    ));
    drop(sys);
    drop(evs);
    Ok(())
}
