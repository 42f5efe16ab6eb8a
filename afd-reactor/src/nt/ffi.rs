//! Declarations windows-sys does not provide. Declared once, here.

use crate::afd::{CompletionEntry, NtStatus};
use std::ffi::c_void;
use windows_sys::Win32::Foundation::HANDLE;

/// `IO_COMPLETION_ALL_ACCESS`.
pub(super) const IO_COMPLETION_ALL_ACCESS: u32 = 0x001F_0003;

#[link(name = "ntdll")]
unsafe extern "system" {
    /// `NTSTATUS NtCreateIoCompletion(PHANDLE, ACCESS_MASK, POBJECT_ATTRIBUTES, ULONG)`.
    pub(super) fn NtCreateIoCompletion(
        handle: *mut HANDLE,
        desired_access: u32,
        object_attributes: *const c_void,
        number_of_concurrent_threads: u32,
    ) -> NtStatus;

    /// `NTSTATUS NtSetIoCompletion(HANDLE, PVOID KeyContext, PVOID ApcContext, NTSTATUS,
    /// ULONG_PTR)`.
    pub(super) fn NtSetIoCompletion(
        port: HANDLE,
        key_context: usize,
        apc_context: usize,
        io_status: NtStatus,
        io_status_information: usize,
    ) -> NtStatus;

    /// `NTSTATUS NtRemoveIoCompletionEx(HANDLE, PFILE_IO_COMPLETION_INFORMATION, ULONG Count,
    /// PULONG NumEntriesRemoved, PLARGE_INTEGER Timeout, BOOLEAN Alertable)`.
    pub(super) fn NtRemoveIoCompletionEx(
        port: HANDLE,
        information: *mut CompletionEntry,
        count: u32,
        removed: *mut u32,
        timeout: *const i64,
        alertable: u8,
    ) -> NtStatus;
}
