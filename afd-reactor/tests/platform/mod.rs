//! Which Windows the Windows tests run on: a Wine version, or Windows itself.
//!
//! Tests that pin a fact on which Windows and Wine versions differ name the version they expect
//! it from, so that the first run on a new version shows which facts moved.

use std::ffi::CStr;
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};

/// The Windows the tests run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Wine, with its major version (8 for Debian 12's, 10 for Debian 13's).
    Wine(u32),
    /// Not Wine: Windows itself.
    Windows,
}

/// Asks ntdll: Wine's exports `wine_get_version`, Windows' does not.
pub fn platform() -> Platform {
    // SAFETY: ntdll is loaded in every process; both strings are NUL-terminated literals.
    let get = unsafe {
        GetProcAddress(
            GetModuleHandleA(c"ntdll.dll".as_ptr().cast()),
            c"wine_get_version".as_ptr().cast(),
        )
    };
    let Some(get) = get else {
        return Platform::Windows;
    };
    // SAFETY: Wine's `wine_get_version` takes no arguments and returns a static NUL-terminated
    // string ("8.0", "10.0", ...).
    let version = unsafe {
        let get: unsafe extern "C" fn() -> *const std::ffi::c_char = std::mem::transmute(get);
        CStr::from_ptr(get())
    };
    let major = version
        .to_str()
        .ok()
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    Platform::Wine(major)
}
