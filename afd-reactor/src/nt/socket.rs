//! Base socket resolution through Layered Service Providers.

use std::io;
use std::mem::size_of;
use std::os::windows::io::{AsRawSocket, BorrowedHandle, BorrowedSocket, RawSocket};
use std::ptr;
use std::sync::Once;
use windows_sys::Win32::Networking::WinSock::{
    INVALID_SOCKET, SIO_BASE_HANDLE, SIO_BSP_HANDLE_POLL, SIO_BSP_HANDLE_SELECT, SO_TYPE, SOCKET,
    SOCKET_ERROR, SOL_SOCKET, WSADATA, WSAGetLastError, WSAIoctl, WSAStartup, getsockopt,
};

/// How many provider layers [`base_socket`] walks through before giving up.
const MAX_LAYERS: usize = 16;

fn init_winsock() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // SAFETY: WSADATA is plain data that WSAStartup fills in; the matching WSACleanup is never
        // called, as in std, so winsock stays initialised for the life of the process.
        unsafe {
            let mut data: WSADATA = std::mem::zeroed();
            WSAStartup(0x202, &mut data);
        }
    });
}

fn last_wsa_error() -> io::Error {
    // SAFETY: reads this thread's last winsock error; no preconditions.
    io::Error::from_raw_os_error(unsafe { WSAGetLastError() })
}

/// The socket's type (`getsockopt(SO_TYPE)`): the one question every socket answers and nothing
/// else does, whatever the Windows (or Wine) version.
///
/// It decides "is this a socket?" here, by what is true of the handle rather than by an error
/// code: Wine 8's `SIO_BASE_HANDLE` hands back *any* handle unchanged (a file, a pipe, a completion
/// port), Windows fails it with WSAENOTSOCK, and Wine 10 with WSAEOPNOTSUPP for a pipe or a port.
fn socket_type(socket: RawSocket) -> io::Result<i32> {
    let mut ty = 0i32;
    let mut len = size_of::<i32>() as i32;
    // SAFETY: `ty` and `len` are valid for writes for this synchronous call and `len` gives the
    // size of `ty`; winsock validates `socket` itself.
    let ret = unsafe {
        getsockopt(
            socket as SOCKET,
            SOL_SOCKET,
            SO_TYPE,
            (&raw mut ty).cast(),
            &mut len,
        )
    };
    if ret == SOCKET_ERROR {
        return Err(last_wsa_error());
    }
    Ok(ty)
}

fn ioctl_handle(socket: RawSocket, code: u32) -> io::Result<RawSocket> {
    let mut out: SOCKET = INVALID_SOCKET;
    let mut bytes = 0u32;
    // SAFETY: `out` and `bytes` are valid for writes for this synchronous call (no OVERLAPPED);
    // winsock validates `socket` itself and fails with WSAENOTSOCK if it is not one.
    let ret = unsafe {
        WSAIoctl(
            socket as SOCKET,
            code,
            ptr::null(),
            0,
            (&raw mut out).cast(),
            size_of::<SOCKET>() as u32,
            &mut bytes,
            ptr::null_mut(),
            None,
        )
    };
    if ret == SOCKET_ERROR {
        return Err(last_wsa_error());
    }
    if out == INVALID_SOCKET {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the socket provider returned INVALID_SOCKET as base handle",
        ));
    }
    Ok(out as RawSocket)
}

/// The error for a handle that is not a socket, keeping what the failing call said as its source.
fn not_a_socket(err: io::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, NotASocket(err))
}

/// What a failure while resolving the base socket means, once the handle itself has answered
/// whether it is a socket (`handle_is_socket`). Pure, so each case is unit-tested.
///
/// - Too many layers, or a provider that named `INVALID_SOCKET` (`InvalidData`): as they are.
/// - The handle is not a socket: `InvalidInput`, recognised by [`is_not_a_socket`], whatever code
///   the failing call returned (WSAENOTSOCK, WSAEOPNOTSUPP, ...).
/// - The handle is a socket, but its providers failed the walk or named a base that is not a
///   socket: an error of kind `Other` (never `InvalidInput`, which means "not a socket" to a
///   caller; std maps WSAEINVAL to `InvalidInput`), with the provider's error as its source.
fn judge_failure(err: io::Error, handle_is_socket: bool) -> io::Error {
    if err.kind() == io::ErrorKind::InvalidData {
        err
    } else if handle_is_socket {
        io::Error::other(ProviderFailed(err))
    } else {
        not_a_socket(err)
    }
}

/// Resolve the base (AFD) socket under any Layered Service Providers.
///
/// Asks `SIO_BASE_HANDLE` first; an LSP may refuse it, and then the handle `select`/`poll` would
/// use (`SIO_BSP_HANDLE_POLL`, then `SIO_BSP_HANDLE_SELECT`) is taken, and the walk repeats from
/// there until the handle stops changing. The result is then checked to be a socket
/// (`getsockopt(SO_TYPE)`), because Wine 8's `SIO_BASE_HANDLE` does not check.
///
/// # Errors
/// - A handle that is not a socket (a file, a pipe, an event, a closed socket):
///   [`io::ErrorKind::InvalidInput`], recognised by [`is_not_a_socket`], with the failing call's
///   error as its source. Whether the handle is a socket is decided by asking it
///   (`getsockopt(SO_TYPE)`), never by the error code a failing call returned: those differ
///   between Windows and Wine versions (WSAENOTSOCK, WSAEOPNOTSUPP, ...).
/// - A socket whose layered providers fail the walk, or name a base that is not a socket:
///   [`io::ErrorKind::Other`], with the provider's error as its source.
/// - More than 16 layers, or a provider that names `INVALID_SOCKET`:
///   [`io::ErrorKind::InvalidData`].
///
/// # Examples
/// ```no_run
/// # #[cfg(windows)] fn main() -> std::io::Result<()> {
/// use std::os::windows::io::{AsRawSocket, AsSocket};
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
/// let base = afd_reactor::nt::base_socket(listener.as_socket())?;
/// assert_eq!(base, listener.as_raw_socket()); // no LSP installed
/// # Ok(()) }
/// # #[cfg(not(windows))] fn main() {}
/// ```
#[doc(alias = "SIO_BASE_HANDLE")]
pub fn base_socket(socket: BorrowedSocket<'_>) -> io::Result<RawSocket> {
    let raw = socket.as_raw_socket();
    let base = base_socket_unverified(socket)?;
    match socket_type(base) {
        Ok(_) => Ok(base),
        // The base is not a socket: is the handle itself one (a provider's fault) or not?
        Err(e) => Err(judge_failure(e, base != raw && socket_type(raw).is_ok())),
    }
}

/// [`base_socket`] without the final `getsockopt(SO_TYPE)`: one winsock call (two wineserver
/// requests under Wine) cheaper. Under Wine the result may name a handle that is not a socket;
/// use it only where the next call on it fails for a non-socket anyway (an `IOCTL_AFD_POLL`
/// through the helper handle does: each handle it names must be a socket).
///
/// # Errors
/// As [`base_socket`], except that where Wine's `SIO_BASE_HANDLE` hands a handle back unchecked
/// it is not refused: under Wine 8 any value (a file, a pipe, a port, even a closed value), under
/// Wine 10 a file. The poll that follows refuses those.
pub fn base_socket_unverified(socket: BorrowedSocket<'_>) -> io::Result<RawSocket> {
    init_winsock();
    let raw = socket.as_raw_socket();
    // Only on failure (so at the error path's cost): is the handle a socket at all?
    walk_layers(raw).map_err(|e| judge_failure(e, socket_type(raw).is_ok()))
}

/// The walk of [`base_socket_unverified`], with the error of the last call that failed.
fn walk_layers(socket: RawSocket) -> io::Result<RawSocket> {
    let mut current = socket;
    for _ in 0..MAX_LAYERS {
        if let Ok(base) = ioctl_handle(current, SIO_BASE_HANDLE) {
            return Ok(base);
        }
        let next = ioctl_handle(current, SIO_BSP_HANDLE_POLL)
            .or_else(|_| ioctl_handle(current, SIO_BSP_HANDLE_SELECT))?;
        if next == current {
            return Ok(current);
        }
        current = next;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "more than 16 layered service providers above the socket",
    ))
}

/// Borrow a socket as the kernel handle it is (every base socket is an NT file handle), so that
/// NT calls such as [`submit_poll`](super::submit_poll) can be issued on it.
pub fn socket_as_handle(socket: BorrowedSocket<'_>) -> BorrowedHandle<'_> {
    // SAFETY: a SOCKET from the base provider is an NT handle; the borrow has the socket's
    // lifetime, so it stays open for as long as the returned handle is used.
    unsafe { BorrowedHandle::borrow_raw(socket.as_raw_socket() as _) }
}

/// The source of the error [`base_socket`] returns for a handle that is not a socket.
#[derive(Debug)]
struct NotASocket(io::Error);

impl std::fmt::Display for NotASocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the handle is not a socket ({})", self.0)
    }
}

impl std::error::Error for NotASocket {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The source of the error [`base_socket`] returns for a socket whose layered providers give no
/// usable base handle.
#[derive(Debug)]
struct ProviderFailed(io::Error);

impl std::fmt::Display for ProviderFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the socket's layered service providers gave no usable base handle ({})",
            self.0
        )
    }
}

impl std::error::Error for ProviderFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// True if `err` came from [`base_socket`] given a handle that is not a socket.
pub fn is_not_a_socket(err: &io::Error) -> bool {
    err.get_ref()
        .is_some_and(|e| e.downcast_ref::<NotASocket>().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;
    use windows_sys::Win32::Networking::WinSock::{WSAEINVAL, WSAENOTSOCK, WSAEOPNOTSUPP};

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn a_handle_that_is_not_a_socket_is_refused_whatever_the_code() {
        for code in [
            WSAENOTSOCK,
            WSAEOPNOTSUPP,
            WSAEINVAL,
            6, /* ERROR_INVALID_HANDLE */
        ] {
            let e = judge_failure(os(code), false);
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{code}: {e}");
            assert!(is_not_a_socket(&e), "{code}: {e}");
            let source = e.source().and_then(|s| s.downcast_ref::<io::Error>());
            assert_eq!(source.and_then(io::Error::raw_os_error), Some(code));
        }
    }

    #[test]
    fn a_socket_whose_providers_fail_keeps_their_error_and_is_never_invalid_input() {
        // std maps WSAEINVAL to InvalidInput, which to a caller means "not a socket".
        for code in [WSAEINVAL, WSAEOPNOTSUPP, WSAENOTSOCK] {
            let e = judge_failure(os(code), true);
            assert_eq!(e.kind(), io::ErrorKind::Other, "{code}: {e}");
            assert!(!is_not_a_socket(&e), "{code}: {e}");
            assert!(e.to_string().contains("layered service providers"), "{e}");
            let source = e.source().and_then(|s| s.downcast_ref::<io::Error>());
            assert_eq!(source.and_then(io::Error::raw_os_error), Some(code));
        }
    }

    #[test]
    fn too_many_layers_is_reported_as_it_is() {
        for is_socket in [true, false] {
            let e = judge_failure(
                io::Error::new(io::ErrorKind::InvalidData, "layers"),
                is_socket,
            );
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(!is_not_a_socket(&e));
        }
    }
}
