//! The waitable conformance suite on the real NT kernel (under Wine: the thread-pool path, since
//! neither Wine exports the wait completion packet calls; on Windows 8+ the packet path).
#![cfg(windows)]

#[macro_use]
mod waits;

use afd_reactor::kernel::nt::{NtKernel, WaitPath};
use afd_reactor::{NtReactor, Reactor};
use std::collections::HashMap;
use std::io;
use std::os::windows::io::{AsHandle, AsRawHandle, FromRawHandle, OwnedHandle, RawHandle};
use std::process::{Child, Command};
use std::time::Duration;
use waits::WaitHarness;
use windows_sys::Win32::Foundation::{HANDLE, WAIT_OBJECT_0, WAIT_TIMEOUT};
use windows_sys::Win32::System::Threading::{CreateEventW, SetEvent, WaitForSingleObject};

struct NtWaits {
    reactor: NtReactor,
    /// The children behind process handles, by handle value.
    children: HashMap<usize, Child>,
    /// Which handles are auto-reset events (`is_set` puts back what it takes from them).
    auto: HashMap<usize, bool>,
}

fn h(w: &OwnedHandle) -> HANDLE {
    w.as_raw_handle() as HANDLE
}

#[track_caller]
fn check(ok: i32, what: &str) {
    assert!(ok != 0, "{what}: {}", io::Error::last_os_error());
}

fn event(manual: bool, signaled: bool) -> OwnedHandle {
    // SAFETY: no attributes, no name; the result is checked before use.
    let raw = unsafe {
        CreateEventW(
            std::ptr::null(),
            i32::from(manual),
            i32::from(signaled),
            std::ptr::null(),
        )
    };
    assert!(
        !raw.is_null(),
        "CreateEventW: {}",
        io::Error::last_os_error()
    );
    // SAFETY: a new handle nothing else owns.
    unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) }
}

/// Runs only as the child of `process()`: sleeps until killed.
#[test]
#[ignore = "a child process for the waitable tests, started by them"]
fn child_sleeper() {
    std::thread::sleep(Duration::from_secs(120));
}

impl WaitHarness for NtWaits {
    type K = NtKernel;
    type W = OwnedHandle;

    fn new() -> Self {
        Self {
            reactor: Reactor::new().unwrap(),
            children: HashMap::new(),
            auto: HashMap::new(),
        }
    }

    fn reactor(&mut self) -> &mut NtReactor {
        &mut self.reactor
    }

    fn auto_event(&mut self, signaled: bool) -> OwnedHandle {
        let e = event(false, signaled);
        self.auto.insert(e.as_raw_handle() as usize, true);
        e
    }

    fn manual_event(&mut self, signaled: bool) -> OwnedHandle {
        let e = event(true, signaled);
        self.auto.insert(e.as_raw_handle() as usize, false);
        e
    }

    fn set(&mut self, w: &OwnedHandle) {
        // SAFETY: an open event handle we own.
        check(unsafe { SetEvent(h(w)) }, "SetEvent");
    }

    fn reset(&mut self, _w: &OwnedHandle) {
        // A wait consumed an auto-reset event's signal already.
    }

    fn is_set(&mut self, w: &OwnedHandle) -> bool {
        // SAFETY: an open handle we own; zero timeout.
        let set = match unsafe { WaitForSingleObject(h(w), 0) } {
            WAIT_OBJECT_0 => true,
            WAIT_TIMEOUT => false,
            other => panic!("WaitForSingleObject: {other:#x}"),
        };
        if set && self.auto.get(&(w.as_raw_handle() as usize)) == Some(&true) {
            // The look took an auto-reset event's signal: put it back. (Tests look only while no
            // wait of the reactor is armed on it.)
            self.set(w);
        }
        set
    }

    fn process(&mut self) -> OwnedHandle {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "child_sleeper", "--quiet"])
            .spawn()
            .expect("spawn the child");
        let handle = child.as_handle().try_clone_to_owned().unwrap();
        self.children.insert(handle.as_raw_handle() as usize, child);
        handle
    }

    fn end_process(&mut self, w: &OwnedHandle) {
        let child = self
            .children
            .get_mut(&(w.as_raw_handle() as usize))
            .expect("a process of ours");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn duplicate(&mut self, w: &OwnedHandle) -> OwnedHandle {
        let d = w.try_clone().unwrap();
        let auto = self.auto.get(&(w.as_raw_handle() as usize)).copied();
        if let Some(auto) = auto {
            self.auto.insert(d.as_raw_handle() as usize, auto);
        }
        d
    }

    fn close(&mut self, w: OwnedHandle) {
        let key = w.as_raw_handle() as usize;
        self.auto.remove(&key);
        if let Some(mut child) = self.children.remove(&key) {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(w);
    }

    fn patience(&self) -> Duration {
        Duration::from_secs(15)
    }

    fn quiet(&self) -> Duration {
        Duration::from_millis(200)
    }

    fn may_lose_a_racing_signal(&mut self) -> bool {
        self.reactor.kernel().wait_path_in_use() == WaitPath::ThreadPool
    }

    fn settle(&mut self) {
        // Give the thread pool's callbacks time to run (Wine's path).
        std::thread::sleep(Duration::from_millis(100));
    }
}

afd_reactor_wait_conformance!(NtWaits);
