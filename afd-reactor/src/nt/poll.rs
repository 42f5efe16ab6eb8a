//! `IOCTL_AFD_POLL`: submitting and cancelling polls, and the `\Device\Afd` helper handle.

use super::port::CompletionPort;
use crate::afd::{AfdPollInfo, IOCTL_AFD_POLL, IoStatusBlock, NtStatus};
use std::ffi::c_void;
use std::io;
use std::mem::size_of;
use std::os::windows::io::{AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::{FILE_OPEN, NtCancelIoFileEx, NtCreateFile};
use windows_sys::Wdk::System::IO::NtDeviceIoControlFile;
use windows_sys::Win32::Foundation::{HANDLE, UNICODE_STRING};
use windows_sys::Win32::Storage::FileSystem::{
    FILE_SHARE_READ, FILE_SHARE_WRITE, SYNCHRONIZE, SetFileCompletionNotificationModes,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;
use windows_sys::Win32::System::WindowsProgramming::{
    FILE_SKIP_COMPLETION_PORT_ON_SUCCESS, FILE_SKIP_SET_EVENT_ON_HANDLE,
};

/// Issue `IOCTL_AFD_POLL` on `target` (`NtDeviceIoControlFile`), using `info` as both input and
/// output buffer and `iosb` as the status block. The completion is queued on the port `target`
/// is associated with, carrying that association's key and `apc_context`.
///
/// `target` is either the socket itself (associated with the port) or an [`AfdHelper`]; the socket
/// to poll is named inside `info`.
///
/// Returns the call's status, unchanged: `STATUS_PENDING` (completes later), a success status (it
/// completed at once; a packet is still queued unless the handle skips completion-port
/// notification on success), or a failure status — then the request was never queued, no packet
/// will arrive, and the buffers are free again at once.
///
/// # Safety
/// Unless the returned status is a failure, `iosb` and `info` must be valid for reads and writes,
/// and must neither move nor be freed nor accessed by anything but the kernel, until the packet for
/// this request has been dequeued from the port (or, with skip-on-success, until this returns a
/// success status). Both pointers must be valid for the duration of the call in any case.
#[doc(alias = "NtDeviceIoControlFile")]
pub unsafe fn submit_poll(
    target: BorrowedHandle<'_>,
    iosb: *mut IoStatusBlock,
    info: *mut AfdPollInfo,
    apc_context: usize,
) -> NtStatus {
    let len = size_of::<AfdPollInfo>() as u32;
    // SAFETY: `target` is open (borrowed); `iosb` and `info` are valid and stay put as long as the
    // kernel may write them (the caller's contract); no event and no APC routine is passed, so the
    // completion is reported only through the completion port.
    let status = unsafe {
        NtDeviceIoControlFile(
            target.as_raw_handle() as HANDLE,
            ptr::null_mut(),
            None,
            apc_context as *const c_void,
            iosb.cast::<IO_STATUS_BLOCK>(),
            IOCTL_AFD_POLL,
            info.cast::<c_void>().cast_const(),
            len,
            info.cast::<c_void>(),
            len,
        )
    };
    NtStatus(status)
}

/// Cancel the one request on `target` whose status block is `iosb` (`NtCancelIoFileEx`).
///
/// Returns `STATUS_SUCCESS` if a request was found (its completion, usually `STATUS_CANCELLED`,
/// will still be queued) or `STATUS_NOT_FOUND` if it had already completed.
///
/// `iosb` is only compared, never dereferenced, so any pointer is harmless.
#[doc(alias = "NtCancelIoFileEx")]
pub fn cancel(target: BorrowedHandle<'_>, iosb: *const IoStatusBlock) -> NtStatus {
    let mut cancel_iosb = IoStatusBlock::pending();
    // SAFETY: `target` is open (borrowed); the kernel uses `iosb` only as an identifier to find the
    // request; `cancel_iosb` is valid for writes during this synchronous call.
    let status = unsafe {
        NtCancelIoFileEx(
            target.as_raw_handle() as HANDLE,
            iosb.cast::<IO_STATUS_BLOCK>(),
            (&raw mut cancel_iosb).cast::<IO_STATUS_BLOCK>(),
        )
    };
    NtStatus(status)
}

/// Put `handle` (a socket or an [`AfdHelper`], associated with a completion port) in
/// `FILE_SKIP_COMPLETION_PORT_ON_SUCCESS` mode (`SetFileCompletionNotificationModes`): a request
/// on it that completes at once (a success status, not `STATUS_PENDING`) queues no packet. The
/// mode can never be removed once set.
///
/// Only for a handle whose port packets the caller alone consumes: the reactor sets it on sockets
/// it associates with its own port. It changes nothing else (events, blocking I/O).
///
/// # Errors
/// The call's failure (for example, a socket of a non-IFS layered provider).
#[doc(alias = "SetFileCompletionNotificationModes")]
pub fn skip_completion_port_on_success(handle: BorrowedHandle<'_>) -> io::Result<()> {
    set_completion_modes(handle, FILE_SKIP_COMPLETION_PORT_ON_SUCCESS as u8)
}

fn set_completion_modes(handle: BorrowedHandle<'_>, flags: u8) -> io::Result<()> {
    // SAFETY: the handle is open (borrowed); the call only sets flags on its file object.
    let ok = unsafe { SetFileCompletionNotificationModes(handle.as_raw_handle() as HANDLE, flags) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A handle to the AFD driver (`\Device\Afd\…`), associated with a completion port, through which
/// polls for *other* sockets can be issued.
///
/// The fallback for sockets that are already bound to another completion port (docs/design.md §6): since their own completions go elsewhere, their polls are issued here and
/// identified by ApcContext alone. Closes on drop — on Windows that does **not** cancel polls in
/// flight, so cancel and drain them first.
///
/// # Examples
/// ```no_run
/// # #[cfg(windows)] fn main() -> std::io::Result<()> {
/// use afd_reactor::nt::{AfdHelper, CompletionPort};
/// let port = CompletionPort::new()?;
/// let helper = AfdHelper::open(&port, 0x4001)?;
/// # drop(helper); Ok(()) }
/// # #[cfg(not(windows))] fn main() {}
/// ```
#[derive(Debug)]
pub struct AfdHelper {
    handle: OwnedHandle,
}

impl AfdHelper {
    /// Open `\Device\Afd\AfdReactor` (`NtCreateFile`), associate it with `port` under `key`, and
    /// stop the kernel from signalling the handle on each completion.
    ///
    /// # Errors
    /// The status of `NtCreateFile`, or the association's error.
    #[doc(alias = "NtCreateFile")]
    pub fn open(port: &CompletionPort, key: usize) -> io::Result<Self> {
        let name: Vec<u16> = r"\Device\Afd\AfdReactor".encode_utf16().collect();
        let bytes = (name.len() * 2) as u16;
        let object_name = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: name.as_ptr().cast_mut(),
        };
        let attributes = OBJECT_ATTRIBUTES {
            Length: size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: ptr::null_mut(),
            ObjectName: &object_name,
            Attributes: 0,
            SecurityDescriptor: ptr::null(),
            SecurityQualityOfService: ptr::null(),
        };
        let mut raw: HANDLE = ptr::null_mut();
        let mut iosb = IoStatusBlock::pending();
        // SAFETY: every pointer refers to a live local for the duration of this synchronous call;
        // `name` outlives `object_name`, which outlives `attributes`.
        let status = unsafe {
            NtCreateFile(
                &mut raw,
                SYNCHRONIZE,
                &attributes,
                (&raw mut iosb).cast::<IO_STATUS_BLOCK>(),
                ptr::null(),
                0,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                FILE_OPEN,
                0,
                ptr::null(),
                0,
            )
        };
        let status = NtStatus(status);
        if !status.is_success() {
            return Err(status.into());
        }
        // SAFETY: NtCreateFile succeeded and returned a new handle that nothing else owns.
        let handle = unsafe { OwnedHandle::from_raw_handle(raw as _) };
        port.associate(handle.as_handle(), key)?;
        set_completion_modes(handle.as_handle(), FILE_SKIP_SET_EVENT_ON_HANDLE as u8)?;
        Ok(Self { handle })
    }

    /// Also skip the port for polls on this handle that complete at once (see
    /// [`skip_completion_port_on_success`]); the handle belongs to the caller alone.
    ///
    /// # Errors
    /// The call's failure.
    pub fn skip_completion_port_on_success(&self) -> io::Result<()> {
        // Both flags again: Wine replaces the handle's modes where Windows adds to them.
        let flags = FILE_SKIP_COMPLETION_PORT_ON_SUCCESS | FILE_SKIP_SET_EVENT_ON_HANDLE;
        set_completion_modes(self.handle.as_handle(), flags as u8)
    }
}

impl AsHandle for AfdHelper {
    fn as_handle(&self) -> BorrowedHandle<'_> {
        self.handle.as_handle()
    }
}
