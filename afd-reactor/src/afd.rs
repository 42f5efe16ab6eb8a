//! AFD, NT and winsock definitions: plain data, no calls.
//!
//! You do not need this module to use the reactor; it is public for the kernel boundary
//! ([`kernel`](crate::kernel)) and for tests that drive the simulated kernel.
//!
//! Everything here is pure and builds on every platform, so the simulated kernel and the real NT
//! layer share the same types: [`NtStatus`], the `AFD_POLL_*` bits ([`PollEvents`]), and the
//! `repr(C)` records the kernel writes — [`IoStatusBlock`], [`AfdPollInfo`] and
//! [`CompletionEntry`] — whose layouts are asserted at compile time against the Windows ABI.
//!
//! # References
//! - `IOCTL_AFD_POLL` and `AFD_POLL_INFO`: undocumented; the layout is the one used by Windows'
//!   own `ws2_32` (as reverse-engineered by wepoll, mio and Wine's `include/wine/afd.h`).
//! - `FILE_IO_COMPLETION_INFORMATION` / `OVERLAPPED_ENTRY`: Windows SDK.

use std::fmt;
use std::io;

/// The control code of the AFD poll request, `IOCTL_AFD_POLL`.
pub const IOCTL_AFD_POLL: u32 = 0x0001_2024;

/// An `NTSTATUS` value: a transparent newtype, so any value the kernel returns is representable.
///
/// Severity is in the top two bits: `>= 0` is success (including informational values such as
/// [`NtStatus::PENDING`] and [`NtStatus::TIMEOUT`]), `0x8xxx_xxxx` is a warning, `0xCxxx_xxxx` an
/// error. Convert to [`io::Error`] with `io::Error::from(status)`; that is the one conversion the
/// crate uses.
#[doc(alias = "NTSTATUS")]
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NtStatus(pub i32);

impl NtStatus {
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: Self = Self(0);
    /// `STATUS_TIMEOUT` (0x102): a success-class status; `NtRemoveIoCompletionEx` returns it with
    /// zero entries when its timeout expires.
    pub const TIMEOUT: Self = Self(0x102);
    /// `STATUS_PENDING` (0x103): the request was queued and will complete later.
    pub const PENDING: Self = Self(0x103);
    /// `STATUS_HANDLES_CLOSED` (0x8000000A), a warning: Wine completes a poll with it when the
    /// handle it was issued on is closed. The reactor treats it as "the socket was closed": the
    /// registration is removed and never re-armed on that handle.
    pub const HANDLES_CLOSED: Self = Self(0x8000_000A_u32 as i32);
    /// `STATUS_INVALID_HANDLE` (0xC0000008).
    pub const INVALID_HANDLE: Self = Self(0xC000_0008_u32 as i32);
    /// `STATUS_INVALID_PARAMETER` (0xC000000D).
    pub const INVALID_PARAMETER: Self = Self(0xC000_000D_u32 as i32);
    /// `STATUS_NO_MEMORY` (0xC0000017).
    pub const NO_MEMORY: Self = Self(0xC000_0017_u32 as i32);
    /// `STATUS_ACCESS_DENIED` (0xC0000022).
    pub const ACCESS_DENIED: Self = Self(0xC000_0022_u32 as i32);
    /// `STATUS_OBJECT_TYPE_MISMATCH` (0xC0000024).
    pub const OBJECT_TYPE_MISMATCH: Self = Self(0xC000_0024_u32 as i32);
    /// `STATUS_INSUFFICIENT_RESOURCES` (0xC000009A).
    pub const INSUFFICIENT_RESOURCES: Self = Self(0xC000_009A_u32 as i32);
    /// `STATUS_NOT_SUPPORTED` (0xC00000BB).
    pub const NOT_SUPPORTED: Self = Self(0xC000_00BB_u32 as i32);
    /// `STATUS_CANCELLED` (0xC0000120): the request was cancelled.
    pub const CANCELLED: Self = Self(0xC000_0120_u32 as i32);
    /// `STATUS_NOT_FOUND` (0xC0000225): e.g. `NtCancelIoFileEx` found no such request.
    pub const NOT_FOUND: Self = Self(0xC000_0225_u32 as i32);

    /// `NT_SUCCESS(status)`: true for success and informational values (`>= 0`).
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// True for error-severity values (`0xCxxx_xxxx`).
    pub const fn is_error(self) -> bool {
        (self.0 as u32) >> 30 == 3
    }

    /// True for warning-severity values (`0x8xxx_xxxx`).
    pub const fn is_warning(self) -> bool {
        (self.0 as u32) >> 30 == 2
    }

    /// The status as its unsigned bit pattern, as NT documentation writes it.
    pub const fn as_u32(self) -> u32 {
        self.0 as u32
    }

    /// A symbolic name for the values this crate names, if any.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SUCCESS => "STATUS_SUCCESS",
            Self::TIMEOUT => "STATUS_TIMEOUT",
            Self::PENDING => "STATUS_PENDING",
            Self::HANDLES_CLOSED => "STATUS_HANDLES_CLOSED",
            Self::INVALID_HANDLE => "STATUS_INVALID_HANDLE",
            Self::INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
            Self::NO_MEMORY => "STATUS_NO_MEMORY",
            Self::ACCESS_DENIED => "STATUS_ACCESS_DENIED",
            Self::OBJECT_TYPE_MISMATCH => "STATUS_OBJECT_TYPE_MISMATCH",
            Self::INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
            Self::NOT_SUPPORTED => "STATUS_NOT_SUPPORTED",
            Self::CANCELLED => "STATUS_CANCELLED",
            Self::NOT_FOUND => "STATUS_NOT_FOUND",
            _ => return None,
        })
    }

    /// The [`io::ErrorKind`] this crate reports for the status when no OS mapping is available
    /// (the simulated kernel): a stable, platform-independent classification.
    pub const fn error_kind(self) -> io::ErrorKind {
        match self {
            Self::TIMEOUT => io::ErrorKind::TimedOut,
            Self::CANCELLED | Self::HANDLES_CLOSED => io::ErrorKind::Interrupted,
            Self::INVALID_HANDLE | Self::INVALID_PARAMETER | Self::OBJECT_TYPE_MISMATCH => {
                io::ErrorKind::InvalidInput
            }
            Self::NO_MEMORY | Self::INSUFFICIENT_RESOURCES => io::ErrorKind::OutOfMemory,
            Self::ACCESS_DENIED => io::ErrorKind::PermissionDenied,
            Self::NOT_SUPPORTED => io::ErrorKind::Unsupported,
            Self::NOT_FOUND => io::ErrorKind::NotFound,
            _ => io::ErrorKind::Other,
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#010x})", self.as_u32()),
            None => write!(f, "NtStatus({:#010x})", self.as_u32()),
        }
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The source error carried by an [`io::Error`] made from an [`NtStatus`] off Windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NtStatusError(pub NtStatus);

impl fmt::Display for NtStatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NT call failed with {}", self.0)
    }
}

impl std::error::Error for NtStatusError {}

impl From<NtStatus> for io::Error {
    /// The one NTSTATUS → `io::Error` conversion.
    ///
    /// On Windows the status is translated by `RtlNtStatusToDosError`, so the error carries the
    /// Win32 code (`raw_os_error`) and its system message. Elsewhere (the simulated kernel) the
    /// error carries an [`NtStatusError`] with the kind from [`NtStatus::error_kind`].
    fn from(status: NtStatus) -> io::Error {
        #[cfg(windows)]
        {
            let code = crate::nt::dos_error_from_status(status);
            // RtlNtStatusToDosError returns ERROR_MR_MID_NOT_FOUND (317) for unknown values.
            if code != 317 {
                return io::Error::from_raw_os_error(code as i32);
            }
        }
        io::Error::new(status.error_kind(), NtStatusError(status))
    }
}

/// A set of `AFD_POLL_*` bits, as requested in and reported by [`AfdPollInfo`].
#[doc(alias = "AFD_POLL_RECEIVE")]
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PollEvents(pub u32);

impl PollEvents {
    /// No bits.
    pub const NONE: Self = Self(0);
    /// `AFD_POLL_RECEIVE`: data to read, or a pending connection on a listener (with `ACCEPT`).
    pub const RECEIVE: Self = Self(0x0001);
    /// `AFD_POLL_RECEIVE_EXPEDITED`: out-of-band data.
    pub const RECEIVE_EXPEDITED: Self = Self(0x0002);
    /// `AFD_POLL_SEND`: room to write; also set once a connect completes.
    pub const SEND: Self = Self(0x0004);
    /// `AFD_POLL_DISCONNECT`: the peer shut down its sending side (graceful close, FIN).
    pub const DISCONNECT: Self = Self(0x0008);
    /// `AFD_POLL_ABORT`: the connection was reset (RST): read- and write-closed.
    pub const ABORT: Self = Self(0x0010);
    /// `AFD_POLL_LOCAL_CLOSE`: the last handle to the socket was closed.
    pub const LOCAL_CLOSE: Self = Self(0x0020);
    /// `AFD_POLL_CONNECT`: historical; not reported reliably. Do not rely on it.
    pub const CONNECT: Self = Self(0x0040);
    /// `AFD_POLL_ACCEPT`: a connection is waiting on a listener.
    pub const ACCEPT: Self = Self(0x0080);
    /// `AFD_POLL_CONNECT_FAIL`: an outgoing connect failed.
    pub const CONNECT_FAIL: Self = Self(0x0100);

    /// True if every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if any bit of `other` is set in `self`.
    pub const fn intersects(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }

    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The union of both sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The bits in both sets.
    pub const fn intersection(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }

    /// The bits of `self` not in `other`.
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl std::ops::BitOr for PollEvents {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for PollEvents {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.union(rhs);
    }
}

impl std::ops::BitAnd for PollEvents {
    type Output = Self;
    fn bitand(self, rhs: Self) -> Self {
        self.intersection(rhs)
    }
}

impl fmt::Debug for PollEvents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [(PollEvents, &str); 9] = [
            (PollEvents::RECEIVE, "RECEIVE"),
            (PollEvents::RECEIVE_EXPEDITED, "RECEIVE_EXPEDITED"),
            (PollEvents::SEND, "SEND"),
            (PollEvents::DISCONNECT, "DISCONNECT"),
            (PollEvents::ABORT, "ABORT"),
            (PollEvents::LOCAL_CLOSE, "LOCAL_CLOSE"),
            (PollEvents::CONNECT, "CONNECT"),
            (PollEvents::ACCEPT, "ACCEPT"),
            (PollEvents::CONNECT_FAIL, "CONNECT_FAIL"),
        ];
        let mut first = true;
        let mut rest = self.0;
        for (bit, name) in NAMES {
            if self.contains(bit) {
                f.write_str(if first { "" } else { " | " })?;
                f.write_str(name)?;
                first = false;
                rest &= !bit.0;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{rest:#x}")?;
        } else if first {
            f.write_str("(empty)")?;
        }
        Ok(())
    }
}

/// `IO_STATUS_BLOCK`: where the kernel writes a request's final status and information.
///
/// While a request that names this block is in flight the kernel owns it: it must not move and
/// must not be freed until the request's completion has been dequeued.
#[doc(alias = "IO_STATUS_BLOCK")]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct IoStatusBlock {
    /// The union `{ NTSTATUS Status; PVOID Pointer; }`, stored at pointer width. Read it with
    /// [`IoStatusBlock::status`].
    pub status_or_pointer: isize,
    /// Request-specific information (bytes transferred).
    pub information: usize,
}

impl IoStatusBlock {
    /// A block holding `STATUS_PENDING`, the conventional value before a request is issued.
    pub const fn pending() -> Self {
        Self {
            status_or_pointer: NtStatus::PENDING.0 as isize,
            information: 0,
        }
    }

    /// The status half of the union.
    pub const fn status(&self) -> NtStatus {
        NtStatus(self.status_or_pointer as i32)
    }

    /// Store a status (as the kernel does at completion).
    pub fn set_status(&mut self, status: NtStatus) {
        self.status_or_pointer = status.0 as isize;
    }
}

impl Default for IoStatusBlock {
    fn default() -> Self {
        Self::pending()
    }
}

/// `AFD_POLL_HANDLE_INFO`: one polled handle, its requested (in) or reported (out) events and
/// its status.
#[doc(alias = "AFD_POLL_HANDLE_INFO")]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AfdPollHandleInfo {
    /// The (base) socket handle, as an integer.
    pub handle: usize,
    /// Requested events on input; reported events on output.
    pub events: PollEvents,
    /// Per-handle status on output (e.g. the error of a failed connect).
    pub status: NtStatus,
}

/// `AFD_POLL_INFO` for exactly one handle: the input and output buffer of `IOCTL_AFD_POLL`.
///
/// The kernel writes the output into the same buffer; like [`IoStatusBlock`] it is owned by the
/// kernel while the poll is in flight.
#[doc(alias = "AFD_POLL_INFO")]
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AfdPollInfo {
    /// Absolute or (negative) relative timeout in 100 ns units; `i64::MAX` means none.
    pub timeout: i64,
    /// Number of entries in `handles` (in), or of handles that reported events (out).
    pub number_of_handles: u32,
    /// Non-zero: this poll supersedes earlier polls on the same socket. Always 0 here.
    pub exclusive: u32,
    /// The polled handle.
    pub handles: [AfdPollHandleInfo; 1],
}

impl AfdPollInfo {
    /// A poll request for `socket` (a base socket handle, as an integer) and `events`, with no
    /// timeout and not exclusive.
    pub const fn new(socket: usize, events: PollEvents) -> Self {
        Self {
            timeout: i64::MAX,
            number_of_handles: 1,
            exclusive: 0,
            handles: [AfdPollHandleInfo {
                handle: socket,
                events,
                status: NtStatus::SUCCESS,
            }],
        }
    }

    /// The events reported by a completed poll: empty when the poll reported no handle.
    pub const fn reported_events(&self) -> PollEvents {
        if self.number_of_handles == 0 {
            PollEvents::NONE
        } else {
            self.handles[0].events
        }
    }
}

/// One dequeued completion: `FILE_IO_COMPLETION_INFORMATION`, which has the same layout as
/// Win32's `OVERLAPPED_ENTRY` (key, overlapped ≙ ApcContext, internal ≙ status, bytes ≙
/// information).
#[doc(alias = "FILE_IO_COMPLETION_INFORMATION")]
#[doc(alias = "OVERLAPPED_ENTRY")]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CompletionEntry {
    /// The completion key of the file (or the key given to `NtSetIoCompletion`).
    pub key: usize,
    /// The `ApcContext` the request was issued with (Win32 calls it `lpOverlapped`).
    pub apc_context: usize,
    /// The request's final status and information.
    pub io_status: IoStatusBlock,
}

impl CompletionEntry {
    /// An all-zero entry, to fill a dequeue buffer with.
    pub const fn zeroed() -> Self {
        Self {
            key: 0,
            apc_context: 0,
            io_status: IoStatusBlock {
                status_or_pointer: 0,
                information: 0,
            },
        }
    }

    /// The request's final status.
    pub const fn status(&self) -> NtStatus {
        self.io_status.status()
    }
}

impl Default for CompletionEntry {
    fn default() -> Self {
        Self::zeroed()
    }
}

// Layouts of the records the kernel reads and writes, checked at compile time for 64-bit targets
// (the only width this crate supports; see the lib.rs compile_error).
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<NtStatus>() == 4);
    assert!(size_of::<PollEvents>() == 4);
    assert!(size_of::<IoStatusBlock>() == 16);
    assert!(align_of::<IoStatusBlock>() == 8);
    assert!(offset_of!(IoStatusBlock, information) == 8);
    assert!(size_of::<AfdPollHandleInfo>() == 16);
    assert!(offset_of!(AfdPollHandleInfo, events) == 8);
    assert!(offset_of!(AfdPollHandleInfo, status) == 12);
    assert!(size_of::<AfdPollInfo>() == 32);
    assert!(offset_of!(AfdPollInfo, number_of_handles) == 8);
    assert!(offset_of!(AfdPollInfo, exclusive) == 12);
    assert!(offset_of!(AfdPollInfo, handles) == 16);
    assert!(size_of::<CompletionEntry>() == 32);
    assert!(offset_of!(CompletionEntry, apc_context) == 8);
    assert!(offset_of!(CompletionEntry, io_status) == 16);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_classes() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(
            NtStatus::TIMEOUT.is_success(),
            "STATUS_TIMEOUT is success-class"
        );
        assert!(NtStatus::PENDING.is_success());
        assert!(NtStatus::HANDLES_CLOSED.is_warning());
        assert!(!NtStatus::HANDLES_CLOSED.is_success());
        assert!(NtStatus::CANCELLED.is_error());
        assert!(!NtStatus::CANCELLED.is_success());
        assert!(!NtStatus::SUCCESS.is_error() && !NtStatus::SUCCESS.is_warning());
    }

    #[test]
    fn status_formats_with_name_and_hex() {
        assert_eq!(
            format!("{:?}", NtStatus::CANCELLED),
            "STATUS_CANCELLED (0xc0000120)"
        );
        assert_eq!(
            format!("{}", NtStatus(0xC000_1234_u32 as i32)),
            "NtStatus(0xc0001234)"
        );
    }

    #[test]
    fn status_converts_to_io_error_with_a_kind() {
        let err = io::Error::from(NtStatus::NOT_FOUND);
        #[cfg(not(windows))]
        {
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert!(err.to_string().contains("STATUS_NOT_FOUND"));
        }
        #[cfg(windows)]
        assert_eq!(err.raw_os_error(), Some(1168)); // ERROR_NOT_FOUND
    }

    #[test]
    fn poll_events_set_ops_and_debug() {
        let ev = PollEvents::RECEIVE | PollEvents::ABORT;
        assert!(ev.contains(PollEvents::RECEIVE));
        assert!(!ev.contains(PollEvents::RECEIVE | PollEvents::SEND));
        assert!(ev.intersects(PollEvents::ABORT | PollEvents::SEND));
        assert_eq!(ev.difference(PollEvents::ABORT), PollEvents::RECEIVE);
        assert_eq!(format!("{ev:?}"), "RECEIVE | ABORT");
        assert_eq!(format!("{:?}", PollEvents(0x1000 | 1)), "RECEIVE | 0x1000");
        assert_eq!(format!("{:?}", PollEvents::NONE), "(empty)");
    }

    #[test]
    fn poll_info_reports_nothing_when_no_handle_fired() {
        let mut info = AfdPollInfo::new(0x400, PollEvents::RECEIVE);
        assert_eq!(info.timeout, i64::MAX);
        assert_eq!(info.reported_events(), PollEvents::RECEIVE);
        info.number_of_handles = 0;
        assert_eq!(info.reported_events(), PollEvents::NONE);
    }

    #[test]
    fn io_status_block_round_trips_a_negative_status() {
        let mut iosb = IoStatusBlock::pending();
        assert_eq!(iosb.status(), NtStatus::PENDING);
        iosb.set_status(NtStatus::CANCELLED);
        assert_eq!(iosb.status(), NtStatus::CANCELLED);
    }
}
