//! `Waitable<T>` and `child_exit` on the real kernels: an eventfd and a pidfd on Linux (epoll),
//! an auto-reset event and a process handle on Windows (NT). Each test runs on its own thread
//! (its own reactor), with a bound on how long it may take.
#![cfg(any(windows, target_os = "linux"))]

mod util;

use afd_async::{Waitable, block_on, child_exit};
use std::process::Command;
use std::time::{Duration, Instant};
use util::on_thread;

#[test]
fn child_exit_of_a_child_that_sleeps_is_success() {
    on_thread(20, || {
        let mut child = if cfg!(windows) {
            // `ping` waits about a second between its two echoes; Wine's has no delay, but the
            // child still runs for a while.
            Command::new("cmd")
                .args(["/c", "ping -n 2 127.0.0.1 > NUL"])
                .spawn()
                .unwrap()
        } else {
            Command::new("sleep").arg("0.2").spawn().unwrap()
        };
        let start = Instant::now();
        let status = block_on(child_exit(&mut child)).unwrap();
        assert!(status.success(), "{status:?}");
        if cfg!(target_os = "linux") {
            assert!(start.elapsed() >= Duration::from_millis(150));
        }
        assert_eq!(afd_async::held(), afd_async::Held::default());
    });
}

#[test]
fn child_exit_reports_the_exit_code() {
    on_thread(20, || {
        let mut child = if cfg!(windows) {
            Command::new("cmd").args(["/c", "exit 3"]).spawn().unwrap()
        } else {
            Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap()
        };
        let status = block_on(child_exit(&mut child)).unwrap();
        assert_eq!(status.code(), Some(3));
    });
}

#[test]
fn child_exit_of_a_child_that_has_exited_returns_at_once() {
    on_thread(20, || {
        let mut child = if cfg!(windows) {
            Command::new("cmd").args(["/c", "exit 0"]).spawn().unwrap()
        } else {
            Command::new("true").spawn().unwrap()
        };
        // Exited, not yet reaped.
        std::thread::sleep(Duration::from_millis(500));
        let status = block_on(child_exit(&mut child)).unwrap();
        assert!(status.success());
        // And reaped: asking again gives the same status.
        let again = block_on(child_exit(&mut child)).unwrap();
        assert_eq!(again, status);
    });
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use std::fs::File;
    use std::io::{Read, Write};
    use std::os::fd::{FromRawFd, OwnedFd};

    fn eventfd() -> File {
        // SAFETY: `eventfd` takes two integers and returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor that nothing else owns.
        File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn read_count(mut efd: &File) -> u64 {
        let mut buf = [0; 8];
        efd.read_exact(&mut buf).unwrap();
        u64::from_ne_bytes(buf)
    }

    #[test]
    fn an_eventfd_written_from_another_thread_wakes_the_waiter() {
        on_thread(20, || {
            let efd = Waitable::new(eventfd()).unwrap();
            let mut writer = efd.get_ref().try_clone().unwrap();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                writer.write_all(&1u64.to_ne_bytes()).unwrap();
            });
            block_on(efd.wait()).unwrap();
            assert_eq!(read_count(efd.get_ref()), 1);
            t.join().unwrap();
        });
    }

    #[test]
    fn each_write_read_makes_one_wait_return() {
        on_thread(20, || {
            let efd = Waitable::new(eventfd()).unwrap();
            let mut writer = efd.get_ref().try_clone().unwrap();
            let (go, step) = std::sync::mpsc::channel::<()>();
            let t = std::thread::spawn(move || {
                for _ in 0..3 {
                    step.recv().unwrap();
                    std::thread::sleep(Duration::from_millis(10));
                    writer.write_all(&2u64.to_ne_bytes()).unwrap();
                }
            });
            block_on(async {
                for _ in 0..3 {
                    go.send(()).unwrap();
                    efd.wait().await.unwrap();
                    assert_eq!(read_count(efd.get_ref()), 2);
                }
            });
            t.join().unwrap();
            let _file: File = efd.into_inner().unwrap();
            assert_eq!(afd_async::held(), afd_async::Held::default());
        });
    }

    #[test]
    fn a_signal_while_no_task_waits_is_kept() {
        on_thread(20, || {
            let efd = Waitable::new(eventfd()).unwrap();
            efd.get_ref().write_all(&1u64.to_ne_bytes()).unwrap();
            block_on(afd_async::Timer::after(Duration::from_millis(20))); // delivered
            block_on(efd.wait()).unwrap();
            assert_eq!(read_count(efd.get_ref()), 1);
        });
    }
}

#[cfg(windows)]
mod windows {
    use super::*;
    use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
    use windows_sys::Win32::Foundation::WAIT_TIMEOUT;
    use windows_sys::Win32::System::Threading::{CreateEventW, SetEvent, WaitForSingleObject};

    /// An unnamed auto-reset event, not set.
    fn auto_event() -> OwnedHandle {
        // SAFETY: null attributes and name are allowed; the result is a new handle or null.
        let h = unsafe { CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()) };
        assert!(
            !h.is_null(),
            "CreateEventW: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `h` is a new handle that nothing else owns.
        unsafe { OwnedHandle::from_raw_handle(h) }
    }

    fn set(event: &OwnedHandle) {
        // SAFETY: `event` is an open event handle, borrowed for the call.
        assert_ne!(unsafe { SetEvent(event.as_raw_handle()) }, 0);
    }

    #[test]
    fn an_event_set_from_another_thread_wakes_the_waiter() {
        on_thread(20, || {
            let event = Waitable::new(auto_event()).unwrap();
            let other = event.get_ref().try_clone().unwrap();
            let t = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                set(&other);
            });
            block_on(event.wait()).unwrap();
            t.join().unwrap();
            // The wait consumed the signal: the event is reset.
            // SAFETY: an open event handle, borrowed for the call.
            let r = unsafe { WaitForSingleObject(event.get_ref().as_raw_handle(), 0) };
            assert_eq!(r, WAIT_TIMEOUT);
        });
    }

    #[test]
    fn two_sets_make_two_waits_return() {
        on_thread(20, || {
            let event = Waitable::new(auto_event()).unwrap();
            block_on(async {
                for _ in 0..2 {
                    set(event.get_ref());
                    event.wait().await.unwrap();
                }
            });
            let (_h, unobserved) = event.into_inner_with_signal().unwrap();
            assert!(!unobserved);
            assert_eq!(afd_async::held(), afd_async::Held::default());
        });
    }
}
