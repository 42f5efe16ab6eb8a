//! Review 15b, written up without a test at the time: pseudo-handles given to `open_wait`.
#![cfg(windows)]

use afd_reactor::kernel::Kernel;
use afd_reactor::kernel::nt::NtKernel;
use std::io;

/// `-1` (the current process, and `INVALID_HANDLE_VALUE`) and `-2` (the current thread) used to
/// register without error and never fire (a process cannot see itself end); they are refused now.
#[test]
fn pseudo_handles_are_refused() {
    let mut kernel = NtKernel::new().unwrap();
    for value in [u64::MAX, u64::MAX - 1] {
        let e = kernel.open_wait(value).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{value:#x}: {e}");
    }
}
