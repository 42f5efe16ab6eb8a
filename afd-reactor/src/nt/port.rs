//! The I/O completion port.

use super::ffi;
use crate::afd::{CompletionEntry, NtStatus};
use std::io;
use std::mem::size_of;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle,
};
use std::ptr;
use std::time::Duration;
use windows_sys::Win32::Foundation::{ERROR_INVALID_PARAMETER, HANDLE};
use windows_sys::Win32::System::IO::CreateIoCompletionPort;

/// An NT I/O completion port. Closes on drop.
///
/// The reactor's event queue: every poll completion and every wake packet arrives here.
///
/// # Examples
/// ```no_run
/// # #[cfg(windows)] fn main() -> std::io::Result<()> {
/// use afd_reactor::afd::NtStatus;
/// use afd_reactor::nt::CompletionPort;
/// use std::time::Duration;
///
/// let port = CompletionPort::new()?;
/// port.post(0x5157, 7, NtStatus::SUCCESS, 0)?;
/// let mut entries = [Default::default(); 8];
/// let n = port.dequeue(&mut entries, Some(Duration::ZERO))?;
/// assert_eq!((n, entries[0].key, entries[0].apc_context), (1, 0x5157, 7));
/// # Ok(()) }
/// # #[cfg(not(windows))] fn main() {}
/// ```
#[derive(Debug)]
pub struct CompletionPort {
    handle: OwnedHandle,
}

impl CompletionPort {
    /// Create a port (`NtCreateIoCompletion`, concurrency = number of processors).
    ///
    /// # Errors
    /// The status of `NtCreateIoCompletion` (e.g. out of resources).
    #[doc(alias = "NtCreateIoCompletion")]
    pub fn new() -> io::Result<Self> {
        let mut raw: HANDLE = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; null object attributes are allowed.
        let status = unsafe {
            ffi::NtCreateIoCompletion(&mut raw, ffi::IO_COMPLETION_ALL_ACCESS, ptr::null(), 0)
        };
        if !status.is_success() {
            return Err(status.into());
        }
        // SAFETY: on success NtCreateIoCompletion returned a new handle that nothing else owns.
        let handle = unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) };
        Ok(Self { handle })
    }

    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle() as HANDLE
    }

    /// Post a packet (`NtSetIoCompletion`): it is dequeued with exactly these values.
    ///
    /// # Errors
    /// The status of `NtSetIoCompletion` (e.g. quota exhausted).
    #[doc(alias = "NtSetIoCompletion")]
    pub fn post(
        &self,
        key: usize,
        apc_context: usize,
        status: NtStatus,
        information: usize,
    ) -> io::Result<()> {
        // SAFETY: the port handle is owned by `self` and open; the other arguments are values.
        let st =
            unsafe { ffi::NtSetIoCompletion(self.raw(), key, apc_context, status, information) };
        if st.is_success() {
            Ok(())
        } else {
            Err(st.into())
        }
    }

    /// Dequeue up to `entries.len()` packets (`NtRemoveIoCompletionEx`), waiting at most
    /// `timeout` (`None`: no limit) for the first one. Returns how many entries were filled;
    /// `Ok(0)` means the timeout expired (`STATUS_TIMEOUT`).
    ///
    /// The timeout is rounded *up* to 100 ns units, so a wait never ends early; durations too
    /// large to express (over ~29,000 years, e.g. `Duration::MAX`) mean no limit.
    ///
    /// # Errors
    /// `InvalidInput` if `entries` is empty; otherwise the call's failure status.
    #[doc(alias = "NtRemoveIoCompletionEx")]
    pub fn dequeue(
        &self,
        entries: &mut [CompletionEntry],
        timeout: Option<Duration>,
    ) -> io::Result<usize> {
        if entries.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "dequeue needs room for at least one completion entry",
            ));
        }
        let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
        let relative = timeout.and_then(relative_timeout_100ns);
        let timeout_ptr = relative.as_ref().map_or(ptr::null(), |t| t as *const i64);
        let mut removed = 0u32;
        // SAFETY: `entries` is valid for `count` writes of CompletionEntry, which has the layout of
        // FILE_IO_COMPLETION_INFORMATION (asserted in nt/mod.rs); `removed` and the timeout are
        // valid for the duration of the call; the port handle is open.
        let status = unsafe {
            ffi::NtRemoveIoCompletionEx(
                self.raw(),
                entries.as_mut_ptr(),
                count,
                &mut removed,
                timeout_ptr,
                0,
            )
        };
        match status {
            NtStatus::TIMEOUT => Ok(0),
            s if s.is_success() => Ok(removed as usize),
            s => Err(s.into()),
        }
    }

    /// How many packets are queued now (`NtQueryIoCompletion`, `IoCompletionBasicInformation`):
    /// a snapshot, for tests and diagnostics.
    ///
    /// # Errors
    /// The call's failure status.
    #[doc(alias = "NtQueryIoCompletion")]
    pub fn queued(&self) -> io::Result<usize> {
        let mut depth: i32 = 0;
        // SAFETY: the port handle is open; `depth` is valid for the 4 bytes the basic class
        // writes; the result length may be null.
        let status = unsafe {
            ffi::NtQueryIoCompletion(
                self.raw(),
                ffi::IO_COMPLETION_BASIC_INFORMATION,
                (&raw mut depth).cast(),
                size_of::<i32>() as u32,
                ptr::null_mut(),
            )
        };
        if status.is_success() {
            Ok(usize::try_from(depth).unwrap_or(0))
        } else {
            Err(status.into())
        }
    }

    /// Associate `handle` with this port under `key`: every completion of an I/O request issued
    /// on it is then queued here with that key.
    ///
    /// A handle can be associated with one port for its whole life. If it already is (another
    /// runtime, or user overlapped I/O), this fails with an error that
    /// [`is_already_associated`] recognises.
    ///
    /// # Errors
    /// `ERROR_INVALID_PARAMETER` (87) when already associated; `ERROR_INVALID_HANDLE` for a
    /// handle that is not open.
    #[doc(alias = "CreateIoCompletionPort")]
    pub fn associate(&self, handle: BorrowedHandle<'_>, key: usize) -> io::Result<()> {
        // SAFETY: both handles are open for the duration of the call (`handle` is borrowed, the
        // port owned); CreateIoCompletionPort with an existing port creates nothing new.
        let ret =
            unsafe { CreateIoCompletionPort(handle.as_raw_handle() as HANDLE, self.raw(), key, 0) };
        if ret.is_null() {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(ERROR_INVALID_PARAMETER as i32) {
                return Err(io::Error::new(
                    io::ErrorKind::ResourceBusy,
                    AlreadyAssociated(err),
                ));
            }
            return Err(err);
        }
        Ok(())
    }
}

impl AsHandle for CompletionPort {
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }
}

/// Relative NT timeout: negative, in 100 ns units, rounded up. `None` if it does not fit.
fn relative_timeout_100ns(d: Duration) -> Option<i64> {
    let units = d.as_nanos().div_ceil(100);
    i64::try_from(units).ok().map(|u| -u)
}

/// The source of the error [`CompletionPort::associate`] returns for a handle that is already
/// bound to another completion port.
#[derive(Debug)]
struct AlreadyAssociated(io::Error);

impl std::fmt::Display for AlreadyAssociated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the handle is already associated with an I/O completion port ({})",
            self.0
        )
    }
}

impl std::error::Error for AlreadyAssociated {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// True if `err` came from [`CompletionPort::associate`] on a handle already bound to a port.
pub fn is_already_associated(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|e| e.downcast_ref::<AlreadyAssociated>().is_some())
}

#[cfg(test)]
mod tests {
    use super::relative_timeout_100ns;
    use std::time::Duration;

    #[test]
    fn timeouts_round_up_and_saturate_to_infinite() {
        assert_eq!(relative_timeout_100ns(Duration::ZERO), Some(0));
        assert_eq!(relative_timeout_100ns(Duration::from_nanos(1)), Some(-1));
        assert_eq!(relative_timeout_100ns(Duration::from_nanos(101)), Some(-2));
        assert_eq!(
            relative_timeout_100ns(Duration::from_millis(1)),
            Some(-10_000)
        );
        assert_eq!(relative_timeout_100ns(Duration::MAX), None);
    }
}
