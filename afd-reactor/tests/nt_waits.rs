//! `NtKernel`'s waits, driven directly through the `Kernel` trait (no reactor), against the real
//! NT calls (under Wine on our Linux machines).
//!
//! Neither Wine 8 nor Wine 10 exports the wait completion packet calls, so under Wine these tests
//! cover the thread-pool path (`WaitPath::ThreadPool`); the tests that force it run it on
//! Windows too.
//!
//! The tests run one at a time (`serial`): the thread count some of them print is the process's.
#![cfg(windows)]

mod platform;

use afd_reactor::afd::CompletionEntry;
use afd_reactor::kernel::nt::{NtKernel, WaitPath};
use afd_reactor::kernel::{Kernel, RawWaitable, WAIT_KEY, WAIT_TAG, WaitCancel, WaitId};
use platform::{Platform, platform};
use std::io;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use windows_sys::Win32::Foundation::{
    DUPLICATE_SAME_ACCESS, DuplicateHandle, HANDLE, INVALID_HANDLE_VALUE, WAIT_OBJECT_0,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, CreateSemaphoreW, GetCurrentProcess, GetCurrentProcessId, ReleaseSemaphore,
    SetEvent, WaitForSingleObject,
};

const LONG: Duration = Duration::from_secs(10);
/// How long a test waits to be satisfied that no packet comes.
const QUIET: Duration = Duration::from_millis(300);

/// One test at a time (thread counts are per process).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The kernels a test runs on: the default (the packet path where ntdll has it) and, where that
/// is not already the thread pool, the forced thread pool.
fn kernels() -> Vec<NtKernel> {
    let mut v = vec![NtKernel::new().unwrap()];
    if v[0].wait_path_in_use() == WaitPath::Packets {
        v.push(NtKernel::new().unwrap().wait_path(WaitPath::ThreadPool));
    }
    v
}

fn ctx(n: usize) -> usize {
    WAIT_TAG | n
}

#[track_caller]
fn check(ok: i32, what: &str) {
    assert!(ok != 0, "{what}: {}", io::Error::last_os_error());
}

/// An event (auto-reset unless `manual`), signaled now if `signaled`.
#[track_caller]
fn event(manual: bool, signaled: bool) -> OwnedHandle {
    // SAFETY: no attributes, no name; the result is checked before use.
    let h = unsafe {
        CreateEventW(
            std::ptr::null(),
            manual as i32,
            signaled as i32,
            std::ptr::null(),
        )
    };
    assert!(!h.is_null(), "CreateEventW: {}", io::Error::last_os_error());
    // SAFETY: a new handle nothing else owns.
    unsafe { OwnedHandle::from_raw_handle(h as RawHandle) }
}

fn raw(h: &OwnedHandle) -> RawWaitable {
    h.as_raw_handle() as RawWaitable
}

fn hraw(h: &OwnedHandle) -> HANDLE {
    h.as_raw_handle() as HANDLE
}

#[track_caller]
fn set(ev: &OwnedHandle) {
    // SAFETY: an open event handle we own.
    check(unsafe { SetEvent(hraw(ev)) }, "SetEvent");
}

/// True if the object is signaled now (consuming the signal of an auto-reset event).
fn signaled_now(h: &OwnedHandle) -> bool {
    // SAFETY: an open handle we own; zero timeout.
    match unsafe { WaitForSingleObject(hraw(h), 0) } {
        WAIT_OBJECT_0 => true,
        WAIT_TIMEOUT => false,
        other => panic!("WaitForSingleObject: {other:#x}"),
    }
}

/// The next packet, within `LONG`.
#[track_caller]
fn next_packet(k: &mut NtKernel) -> CompletionEntry {
    let mut out = [CompletionEntry::zeroed(); 1];
    let n = k.dequeue(&mut out, Some(LONG)).unwrap();
    assert_eq!(n, 1, "no packet within {LONG:?}");
    out[0]
}

/// The next packet, which must be a wait packet with `apc_context`.
#[track_caller]
fn expect_wait_packet(k: &mut NtKernel, apc_context: usize) {
    let e = next_packet(k);
    assert_eq!(
        (e.key, e.apc_context),
        (WAIT_KEY, apc_context),
        "a wait packet"
    );
    assert!(e.status().is_success(), "status {:?}", e.status());
}

/// No packet for `QUIET`.
#[track_caller]
fn expect_nothing(k: &mut NtKernel) {
    let mut out = [CompletionEntry::zeroed(); 4];
    let n = k.dequeue(&mut out, Some(QUIET)).unwrap();
    assert_eq!(n, 0, "unexpected packets: {:?}", &out[..n]);
}

/// Wait (bounded) until at least `n` packets are queued, without dequeuing them.
#[track_caller]
fn until_queued(k: &NtKernel, n: usize) {
    let deadline = Instant::now() + LONG;
    while k.queued_packets().unwrap() < n {
        assert!(
            Instant::now() < deadline,
            "{n} packets not queued within {LONG:?}"
        );
        std::thread::yield_now();
    }
}

/// This process's threads (toolhelp snapshot).
fn thread_count() -> usize {
    // SAFETY: a snapshot of all threads; checked; closed by OwnedHandle.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    assert!(
        snap != INVALID_HANDLE_VALUE,
        "CreateToolhelp32Snapshot: {}",
        io::Error::last_os_error()
    );
    // SAFETY: a new handle nothing else owns.
    let snap = unsafe { OwnedHandle::from_raw_handle(snap as RawHandle) };
    // SAFETY: a plain-data struct; dwSize is set before use.
    let mut entry: THREADENTRY32 = unsafe { std::mem::zeroed() };
    entry.dwSize = size_of::<THREADENTRY32>() as u32;
    // SAFETY: a value.
    let me = unsafe { GetCurrentProcessId() };
    let mut count = 0;
    // SAFETY: the snapshot is open; `entry` is valid with its size set.
    let mut more = unsafe { Thread32First(hraw(&snap), &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == me {
            count += 1;
        }
        // SAFETY: as above.
        more = unsafe { Thread32Next(hraw(&snap), &mut entry) } != 0;
    }
    count
}

// --- paths ---------------------------------------------------------------------------------------

#[test]
fn wait_path_in_use_is_the_thread_pool_under_wine() {
    let _s = serial();
    let k = NtKernel::new().unwrap();
    let path = k.wait_path_in_use();
    println!("platform {:?}: wait path in use {path:?}", platform());
    match platform() {
        // A fact about Wine 8 and Wine 10: their ntdll lacks NtCreateWaitCompletionPacket,
        // NtAssociateWaitCompletionPacket and NtCancelWaitCompletionPacket.
        Platform::Wine(_) => assert_eq!(path, WaitPath::ThreadPool),
        Platform::Windows => assert_eq!(path, WaitPath::Packets, "Windows 8 and later"),
    }
    let forced = NtKernel::new().unwrap().wait_path(WaitPath::ThreadPool);
    assert_eq!(forced.wait_path_in_use(), WaitPath::ThreadPool);
}

// --- delivery ------------------------------------------------------------------------------------

#[test]
fn auto_reset_event_signaled_after_arming_gives_one_packet_and_is_consumed() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        k.arm_wait(id, ctx(1)).unwrap();
        expect_nothing(&mut k);
        set(&ev);
        expect_wait_packet(&mut k, ctx(1));
        expect_nothing(&mut k);
        assert!(
            !signaled_now(&ev),
            "the wait consumed the auto-reset signal"
        );
        k.close_wait(id);
    }
}

#[test]
fn already_signaled_at_arming_gives_one_packet() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, true);
        let id = k.open_wait(raw(&ev)).unwrap();
        k.arm_wait(id, ctx(2)).unwrap();
        expect_wait_packet(&mut k, ctx(2));
        expect_nothing(&mut k);
        assert!(!signaled_now(&ev), "consumed");
        k.close_wait(id);
    }
}

#[test]
fn manual_reset_event_stays_signaled_after_its_packet() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(true, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        k.arm_wait(id, ctx(3)).unwrap();
        set(&ev);
        expect_wait_packet(&mut k, ctx(3));
        expect_nothing(&mut k);
        assert!(signaled_now(&ev), "a manual-reset event is not consumed");
        k.close_wait(id);
    }
}

#[test]
fn semaphore_wait_takes_one_count() {
    let _s = serial();
    for mut k in kernels() {
        // SAFETY: no attributes, no name; checked.
        let h = unsafe { CreateSemaphoreW(std::ptr::null(), 0, 10, std::ptr::null()) };
        assert!(!h.is_null());
        // SAFETY: a new handle nothing else owns.
        let sem = unsafe { OwnedHandle::from_raw_handle(h as RawHandle) };
        let id = k.open_wait(raw(&sem)).unwrap();
        k.arm_wait(id, ctx(4)).unwrap();
        // SAFETY: an open semaphore; the previous count is not wanted.
        check(
            unsafe { ReleaseSemaphore(hraw(&sem), 2, std::ptr::null_mut()) },
            "ReleaseSemaphore",
        );
        expect_wait_packet(&mut k, ctx(4));
        expect_nothing(&mut k);
        assert!(signaled_now(&sem), "one count left");
        assert!(!signaled_now(&sem), "the wait took the other");
        k.close_wait(id);
    }
}

// --- cancel --------------------------------------------------------------------------------------

#[test]
fn cancel_before_the_signal_is_not_signaled_and_consumes_nothing() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        k.arm_wait(id, ctx(5)).unwrap();
        assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
        set(&ev);
        expect_nothing(&mut k);
        assert!(
            signaled_now(&ev),
            "nothing consumed: the event is still signaled"
        );
        k.close_wait(id);
    }
}

#[test]
fn signal_then_cancel_is_queued_and_gives_exactly_one_packet() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        k.arm_wait(id, ctx(6)).unwrap();
        set(&ev);
        // Only a packet on the port proves the wait was satisfied and reported (a thread-pool
        // callback runs when it runs).
        until_queued(&k, 1);
        assert_eq!(k.cancel_wait(id), WaitCancel::Queued);
        expect_wait_packet(&mut k, ctx(6));
        expect_nothing(&mut k);
        assert!(!signaled_now(&ev), "consumed by the wait");
        k.close_wait(id);
    }
}

#[test]
fn a_cancelled_wait_can_be_armed_again() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        k.arm_wait(id, ctx(7)).unwrap();
        assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
        k.arm_wait(id, ctx(8)).unwrap();
        set(&ev);
        expect_wait_packet(&mut k, ctx(8));
        expect_nothing(&mut k);
        k.close_wait(id);
    }
}

// --- re-arming, handles, processes ----------------------------------------------------------------

#[test]
fn rearm_after_delivery_100_times() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        let start = Instant::now();
        for i in 0..100 {
            k.arm_wait(id, ctx(1000 + i)).unwrap();
            set(&ev);
            expect_wait_packet(&mut k, ctx(1000 + i));
        }
        let took = start.elapsed();
        expect_nothing(&mut k);
        println!(
            "{:?}: 100 arm + signal + packet rounds in {took:?}",
            k.wait_path_in_use()
        );
        k.close_wait(id);
    }
}

#[test]
fn the_wait_follows_the_object_after_the_users_handle_is_closed() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let mut second: HANDLE = std::ptr::null_mut();
        // SAFETY: duplicating an open handle we own; `second` is a valid out-pointer.
        check(
            unsafe {
                DuplicateHandle(
                    GetCurrentProcess(),
                    hraw(&ev),
                    GetCurrentProcess(),
                    &mut second,
                    0,
                    0,
                    DUPLICATE_SAME_ACCESS,
                )
            },
            "DuplicateHandle",
        );
        // SAFETY: a new handle nothing else owns.
        let second = unsafe { OwnedHandle::from_raw_handle(second as RawHandle) };
        let id = k.open_wait(raw(&ev)).unwrap();
        drop(ev); // the user's handle is gone; its value may be reused
        k.arm_wait(id, ctx(9)).unwrap();
        set(&second);
        expect_wait_packet(&mut k, ctx(9));
        k.close_wait(id);
    }
}

#[test]
fn a_child_process_gives_a_packet_when_it_exits() {
    let _s = serial();
    for mut k in kernels() {
        let mut child = std::process::Command::new("cmd")
            .args(["/c", "exit 3"])
            .spawn()
            .expect("spawn cmd");
        let id = k.open_wait(child.as_raw_handle() as RawWaitable).unwrap();
        k.arm_wait(id, ctx(10)).unwrap();
        expect_wait_packet(&mut k, ctx(10));
        let status = child
            .try_wait()
            .unwrap()
            .expect("exited: its handle was signaled");
        assert_eq!(status.code(), Some(3));
        // A process stays signaled: another arming reports it again.
        k.arm_wait(id, ctx(11)).unwrap();
        expect_wait_packet(&mut k, ctx(11));
        k.close_wait(id);
    }
}

#[test]
fn open_wait_on_a_value_that_names_nothing_is_invalid_input() {
    let _s = serial();
    let mut k = NtKernel::new().unwrap();
    for bogus in [0u64, 0x7777_7770] {
        let err = k.open_wait(bogus).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bogus:#x}: {err}");
    }
}

#[test]
fn closed_ids_are_reused() {
    let _s = serial();
    let mut k = NtKernel::new().unwrap();
    let ev = event(false, false);
    let a = k.open_wait(raw(&ev)).unwrap();
    k.close_wait(a);
    let b = k.open_wait(raw(&ev)).unwrap();
    assert_eq!(a, b);
    k.close_wait(b);
}

// --- caller bugs -----------------------------------------------------------------------------------

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn arming_an_armed_wait_panics() {
    let mut k = NtKernel::new().unwrap();
    let ev = event(false, false);
    let id = k.open_wait(raw(&ev)).unwrap();
    k.arm_wait(id, ctx(1)).unwrap();
    let _ = k.arm_wait(id, ctx(2));
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn cancelling_an_unarmed_wait_panics() {
    let mut k = NtKernel::new().unwrap();
    let ev = event(false, false);
    let id = k.open_wait(raw(&ev)).unwrap();
    k.cancel_wait(id);
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn closing_a_wait_whose_packet_may_come_panics() {
    let mut k = NtKernel::new().unwrap();
    let ev = event(false, false);
    let id = k.open_wait(raw(&ev)).unwrap();
    k.arm_wait(id, ctx(1)).unwrap();
    k.close_wait(id);
}

#[test]
#[should_panic(expected = "afd-reactor bug")]
fn an_unknown_id_panics() {
    let mut k = NtKernel::new().unwrap();
    let _ = k.arm_wait(WaitId(42), ctx(1));
}

#[test]
fn dropping_the_kernel_with_armed_waits_is_clean() {
    let _s = serial();
    for mut k in kernels() {
        let evs: Vec<_> = (0..10).map(|_| event(false, false)).collect();
        for (i, ev) in evs.iter().enumerate() {
            let id = k.open_wait(raw(ev)).unwrap();
            k.arm_wait(id, ctx(i)).unwrap();
        }
        set(&evs[0]);
        drop(k); // unregisters (blocking) before freeing the callbacks' memory
        for ev in &evs[1..] {
            set(ev);
        }
    }
}

// --- scale ---------------------------------------------------------------------------------------

#[test]
fn a_thousand_waits_give_a_thousand_packets() {
    let _s = serial();
    for mut k in kernels() {
        let before = thread_count();
        let evs: Vec<_> = (0..1000).map(|_| event(false, false)).collect();
        let ids: Vec<_> = evs.iter().map(|ev| k.open_wait(raw(ev)).unwrap()).collect();
        for (i, &id) in ids.iter().enumerate() {
            k.arm_wait(id, ctx(i)).unwrap();
        }
        let armed = thread_count();
        for ev in &evs {
            set(ev);
        }
        let mut seen = vec![false; 1000];
        let mut out = [CompletionEntry::zeroed(); 128];
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < 1000 {
            assert!(Instant::now() < deadline, "only {got} packets");
            let n = k.dequeue(&mut out, Some(LONG)).unwrap();
            for e in &out[..n] {
                assert_eq!(e.key, WAIT_KEY);
                let i = e.apc_context & !WAIT_TAG;
                assert!(!seen[i], "two packets for wait {i}");
                seen[i] = true;
            }
            got += n;
        }
        let fired = thread_count();
        expect_nothing(&mut k);
        for id in ids {
            k.close_wait(id);
        }
        let added = armed.saturating_sub(before);
        println!(
            "{:?} on {:?}: threads {before} before, {armed} with 1,000 waits armed (+{added}), \
             {fired} after all fired",
            k.wait_path_in_use(),
            platform()
        );
        if k.wait_path_in_use() == WaitPath::ThreadPool {
            assert!(
                added > 0 && added < 1000,
                "thread-pool waits share wait threads: +{added}"
            );
        }
    }
}

/// A cancel racing the signal, many times: every answer must match the packets that come
/// (`Queued`: exactly one; otherwise none). Prints how often each answer came, how often a
/// `NotSignaled` left the auto-reset event unsignaled (a signal consumed by the thread pool and
/// dropped: see `PoolWaiter`'s notes on Wine), and how long the cancels took.
#[test]
fn cancel_racing_the_signal_keeps_the_packet_promise() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        let (mut queued, mut kept, mut lost, mut consumed) = (0, 0, 0, 0);
        let mut slowest = Duration::ZERO;
        let mut total = Duration::ZERO;
        const ROUNDS: usize = 300;
        for i in 0..ROUNDS {
            k.arm_wait(id, ctx(i)).unwrap();
            set(&ev);
            if i % 3 == 1 {
                std::thread::yield_now();
            }
            let start = Instant::now();
            let answer = k.cancel_wait(id);
            let took = start.elapsed();
            slowest = slowest.max(took);
            total += took;
            match answer {
                WaitCancel::Queued => {
                    queued += 1;
                    expect_wait_packet(&mut k, ctx(i));
                    assert!(!signaled_now(&ev), "consumed by the wait");
                }
                WaitCancel::NotSignaled => {
                    // A packet that comes later (Wine 8 can run a callback after a blocking
                    // UnregisterWaitEx returned) fails this check, or a later round's, or the
                    // final `expect_nothing`.
                    let mut out = [CompletionEntry::zeroed(); 2];
                    let late = k.dequeue(&mut out, Some(Duration::ZERO)).unwrap();
                    assert_eq!(late, 0, "round {i}: NotSignaled, yet {:?}", &out[..late]);
                    if signaled_now(&ev) {
                        kept += 1;
                    } else {
                        lost += 1;
                    }
                }
                WaitCancel::Consumed => {
                    consumed += 1;
                    assert!(!signaled_now(&ev), "consumed");
                }
            }
        }
        expect_nothing(&mut k);
        k.close_wait(id);
        println!(
            "{:?} on {:?}: {ROUNDS} signal-then-cancel races: Queued {queued}, NotSignaled with \
             the signal kept {kept}, NotSignaled with the signal lost {lost}, Consumed {consumed}; \
             cancel_wait took {:?} on average, {slowest:?} at most",
            k.wait_path_in_use(),
            platform(),
            total / ROUNDS as u32,
        );
        if k.wait_path_in_use() == WaitPath::Packets {
            assert_eq!(lost, 0, "a wait packet's cancel consumes nothing");
        }
    }
}

/// How long `cancel_wait` takes on a wait whose object was never signaled (a blocking
/// `UnregisterWaitEx` on the thread-pool path), and `arm_wait` after a delivery (which first
/// unregisters the spent one-shot registration).
#[test]
fn cancel_and_rearm_costs() {
    let _s = serial();
    for mut k in kernels() {
        let ev = event(false, false);
        let id = k.open_wait(raw(&ev)).unwrap();
        const ROUNDS: u32 = 200;
        let mut cancel = Duration::ZERO;
        for i in 0..ROUNDS as usize {
            k.arm_wait(id, ctx(i)).unwrap();
            let start = Instant::now();
            assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
            cancel += start.elapsed();
        }
        let mut rearm = Duration::ZERO;
        k.arm_wait(id, ctx(0)).unwrap();
        for i in 0..ROUNDS as usize {
            set(&ev);
            expect_wait_packet(&mut k, ctx(i));
            let start = Instant::now();
            k.arm_wait(id, ctx(i + 1)).unwrap();
            rearm += start.elapsed();
        }
        assert_eq!(k.cancel_wait(id), WaitCancel::NotSignaled);
        k.close_wait(id);
        println!(
            "{:?} on {:?}: cancel_wait of an unsignaled wait {:?}, arm_wait after a delivery {:?} \
             (averages over {ROUNDS})",
            k.wait_path_in_use(),
            platform(),
            cancel / ROUNDS,
            rearm / ROUNDS
        );
    }
}
