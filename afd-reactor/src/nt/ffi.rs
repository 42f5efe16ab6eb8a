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

#[link(name = "ntdll")]
unsafe extern "system" {
    /// `NTSTATUS NtQueryIoCompletion(HANDLE, IO_COMPLETION_INFORMATION_CLASS, PVOID, ULONG,
    /// PULONG)`; class 0 (`IoCompletionBasicInformation`) gives `LONG Depth`, the number of
    /// packets queued.
    pub(super) fn NtQueryIoCompletion(
        port: HANDLE,
        information_class: u32,
        information: *mut c_void,
        length: u32,
        result_length: *mut u32,
    ) -> NtStatus;
}

/// `IoCompletionBasicInformation`.
pub(super) const IO_COMPLETION_BASIC_INFORMATION: u32 = 0;

// The wait completion packet calls are in no import library and not exported by Wine's ntdll:
// they are resolved at run time (nt/wait.rs), through these types.

/// `NTSTATUS NtCreateWaitCompletionPacket(PHANDLE, ACCESS_MASK, POBJECT_ATTRIBUTES)`.
pub(super) type NtCreateWaitCompletionPacketFn = unsafe extern "system" fn(
    handle: *mut HANDLE,
    desired_access: u32,
    object_attributes: *mut c_void,
) -> NtStatus;

/// `NTSTATUS NtAssociateWaitCompletionPacket(HANDLE WaitCompletionPacketHandle,
/// HANDLE IoCompletionHandle, HANDLE TargetObjectHandle, PVOID KeyContext, PVOID ApcContext,
/// NTSTATUS IoStatus, ULONG_PTR IoStatusInformation, PBOOLEAN AlreadySignaled)`.
pub(super) type NtAssociateWaitCompletionPacketFn = unsafe extern "system" fn(
    packet: HANDLE,
    port: HANDLE,
    target: HANDLE,
    key_context: usize,
    apc_context: usize,
    io_status: NtStatus,
    io_status_information: usize,
    already_signaled: *mut u8,
) -> NtStatus;

/// `NTSTATUS NtCancelWaitCompletionPacket(HANDLE WaitCompletionPacketHandle,
/// BOOLEAN RemoveSignaledPacket)`.
pub(super) type NtCancelWaitCompletionPacketFn =
    unsafe extern "system" fn(packet: HANDLE, remove_signaled_packet: u8) -> NtStatus;
