//! Waits on waitable objects (events, processes, semaphores, waitable timers) that end in a packet
//! on a completion port, by one of two means:
//!
//! - [`WaitPacket`]: a *wait completion packet* (`NtCreateWaitCompletionPacket`,
//!   `NtAssociateWaitCompletionPacket`, `NtCancelWaitCompletionPacket`; Windows 8 and later). The
//!   kernel itself waits and queues the packet. These calls are in no import library and neither
//!   Wine 8's nor Wine 10's ntdll exports them, so they are resolved at run time, once
//!   ([`wait_packets_available`]).
//! - [`PoolWaiter`]: the fallback, a thread-pool wait (`RegisterWaitForSingleObject` with
//!   `WT_EXECUTEONLYONCE`) whose callback posts the packet (`NtSetIoCompletion`).
//!
//! Either way the wait is satisfied as a wait on the object is: it consumes the signal of an
//! auto-reset event or a semaphore.

use super::ffi;
use super::port::CompletionPort;
use crate::afd::NtStatus;
use std::ffi::c_void;
use std::fmt;
use std::io;
use std::os::windows::io::{
    AsHandle, AsRawHandle, BorrowedHandle, FromRawHandle, OwnedHandle, RawHandle,
};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use windows_sys::Win32::Foundation::{
    DUPLICATE_SAME_ACCESS, DuplicateHandle, ERROR_INVALID_HANDLE, GENERIC_ALL, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
use windows_sys::Win32::System::Threading::{
    GetCurrentProcess, INFINITE, RegisterWaitForSingleObject, UnregisterWaitEx, WT_EXECUTEONLYONCE,
};

/// Duplicate the handle value `handle` within this process, with the same access
/// (`DuplicateHandle`, `DUPLICATE_SAME_ACCESS`): the result names the same object for as long as
/// it lives, whatever later becomes of `handle` (closed, its value reused).
///
/// The value is only passed to `DuplicateHandle`, which validates it. A pseudo-handle
/// (`GetCurrentProcess()`, `GetCurrentThread()`) gives a real handle to that process or thread.
///
/// # Errors
/// `InvalidInput` for a value that names no open handle; the call's failure otherwise (out of
/// handles, or an object that cannot be duplicated).
#[doc(alias = "DuplicateHandle")]
pub fn duplicate_handle(handle: RawHandle) -> io::Result<OwnedHandle> {
    let mut dup: HANDLE = ptr::null_mut();
    // SAFETY: a value, validated by the call itself; `dup` is a valid out-pointer. We ask for a
    // non-inheritable handle with the source's access and do not close the source.
    let ok = unsafe {
        DuplicateHandle(
            GetCurrentProcess(),
            handle as HANDLE,
            GetCurrentProcess(),
            &mut dup,
            0,
            0,
            DUPLICATE_SAME_ACCESS,
        )
    };
    if ok == 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(ERROR_INVALID_HANDLE as i32) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, err));
        }
        return Err(err);
    }
    // SAFETY: on success DuplicateHandle made a new handle that nothing else owns.
    Ok(unsafe { OwnedHandle::from_raw_handle(dup as RawHandle) })
}

// --- wait completion packets --------------------------------------------------------------------

/// The three wait-packet calls, resolved from ntdll.
struct WaitPacketApi {
    create: ffi::NtCreateWaitCompletionPacketFn,
    associate: ffi::NtAssociateWaitCompletionPacketFn,
    cancel: ffi::NtCancelWaitCompletionPacketFn,
}

/// The wait-packet calls, if this ntdll exports all three (resolved on first use).
fn api() -> Option<&'static WaitPacketApi> {
    static API: OnceLock<Option<WaitPacketApi>> = OnceLock::new();
    API.get_or_init(resolve).as_ref()
}

/// `GetModuleHandleW("ntdll.dll")` + `GetProcAddress` for each call: all three, or none.
fn resolve() -> Option<WaitPacketApi> {
    const NTDLL: [u16; 10] = {
        let ascii = *b"ntdll.dll\0";
        let mut wide = [0u16; 10];
        let mut i = 0;
        while i < ascii.len() {
            wide[i] = ascii[i] as u16;
            i += 1;
        }
        wide
    };
    // SAFETY: a NUL-terminated wide string; ntdll is loaded in every process, and a module
    // handle from GetModuleHandleW needs no release.
    let ntdll = unsafe { GetModuleHandleW(NTDLL.as_ptr()) };
    if ntdll.is_null() {
        return None;
    }
    // SAFETY: `ntdll` is a loaded module (never unloaded); the names are NUL-terminated.
    let (create, associate, cancel) = unsafe {
        (
            GetProcAddress(ntdll, c"NtCreateWaitCompletionPacket".as_ptr().cast())?,
            GetProcAddress(ntdll, c"NtAssociateWaitCompletionPacket".as_ptr().cast())?,
            GetProcAddress(ntdll, c"NtCancelWaitCompletionPacket".as_ptr().cast())?,
        )
    };
    // SAFETY: each export has exactly the signature its type states (ffi.rs, from the public
    // headers); a function pointer of one `extern "system"` type is transmuted to another.
    unsafe {
        Some(WaitPacketApi {
            create: std::mem::transmute::<
                unsafe extern "system" fn() -> isize,
                ffi::NtCreateWaitCompletionPacketFn,
            >(create),
            associate: std::mem::transmute::<
                unsafe extern "system" fn() -> isize,
                ffi::NtAssociateWaitCompletionPacketFn,
            >(associate),
            cancel: std::mem::transmute::<
                unsafe extern "system" fn() -> isize,
                ffi::NtCancelWaitCompletionPacketFn,
            >(cancel),
        })
    }
}

/// True if this process's ntdll exports the three wait-packet calls (Windows 8 and later; not
/// Wine 8 or Wine 10). Resolved once.
pub fn wait_packets_available() -> bool {
    api().is_some()
}

/// A wait completion packet: a kernel object that, once associated with a port and a waitable
/// object, queues one packet on the port when the object is signaled. Closes on drop (which ends
/// any association: nothing of ours is named by it, so dropping is always safe).
///
/// It can be associated again once its packet was dequeued, or its association cancelled.
pub struct WaitPacket {
    handle: OwnedHandle,
}

impl fmt::Debug for WaitPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WaitPacket")
            .field(&self.handle.as_raw_handle())
            .finish()
    }
}

impl WaitPacket {
    /// Create one (`NtCreateWaitCompletionPacket`).
    ///
    /// # Errors
    /// `Unsupported` where ntdll lacks the wait-packet calls ([`wait_packets_available`]); the
    /// call's failure status otherwise.
    #[doc(alias = "NtCreateWaitCompletionPacket")]
    pub fn new() -> io::Result<Self> {
        let api = api().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                "ntdll does not export the wait completion packet calls",
            )
        })?;
        let mut raw: HANDLE = ptr::null_mut();
        // SAFETY: `raw` is a valid out-pointer; null object attributes are allowed.
        let status = unsafe { (api.create)(&mut raw, GENERIC_ALL, ptr::null_mut()) };
        if !status.is_success() {
            return Err(status.into());
        }
        // SAFETY: on success the call returned a new handle that nothing else owns.
        let handle = unsafe { OwnedHandle::from_raw_handle(raw as RawHandle) };
        Ok(Self { handle })
    }

    /// Associate the packet with `port` and `target` (`NtAssociateWaitCompletionPacket`): once
    /// `target` is signaled (at once, if it is now) the wait is satisfied, and one packet with
    /// `key`, `apc_context` and a success status is queued on `port`.
    ///
    /// Returns the call's `AlreadySignaled` answer, which is information only: the packet is
    /// queued in that case too.
    ///
    /// # Errors
    /// The call's failure status: nothing is associated and no packet will come (e.g.
    /// `STATUS_INVALID_PARAMETER_3` for a mutant, which cannot be waited on this way).
    #[doc(alias = "NtAssociateWaitCompletionPacket")]
    pub fn associate(
        &self,
        port: &CompletionPort,
        target: BorrowedHandle<'_>,
        key: usize,
        apc_context: usize,
    ) -> io::Result<bool> {
        let api = api().expect("a WaitPacket exists only where the calls were resolved");
        let mut already_signaled: u8 = 0;
        // SAFETY: all three handles are open for the duration of the call (owned or borrowed);
        // `already_signaled` is a valid out-pointer; the rest are values. The association names
        // no memory of ours.
        let status = unsafe {
            (api.associate)(
                self.handle.as_raw_handle() as HANDLE,
                port.as_handle().as_raw_handle() as HANDLE,
                target.as_raw_handle() as HANDLE,
                key,
                apc_context,
                NtStatus::SUCCESS,
                0,
                &mut already_signaled,
            )
        };
        if status.is_success() {
            Ok(already_signaled != 0)
        } else {
            Err(status.into())
        }
    }

    /// Cancel the association (`NtCancelWaitCompletionPacket`), leaving a queued packet where it
    /// is (`RemoveSignaledPacket = FALSE`). The status says what happened:
    /// `STATUS_SUCCESS`: the wait was still waiting, it is cancelled, nothing was consumed and no
    /// packet will come; `STATUS_PENDING`: the packet is queued (it stays queued);
    /// `STATUS_CANCELLED`: no association is active.
    #[doc(alias = "NtCancelWaitCompletionPacket")]
    pub fn cancel(&self) -> NtStatus {
        let api = api().expect("a WaitPacket exists only where the calls were resolved");
        // SAFETY: the packet handle is owned and open; the flag is a value.
        unsafe { (api.cancel)(self.handle.as_raw_handle() as HANDLE, 0) }
    }
}

// --- thread-pool waits --------------------------------------------------------------------------

/// What a [`PoolWaiter`]'s callback did for the current arming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolWaitOutcome {
    /// The callback never ran: the wait was not satisfied (but see [`PoolWaiter::cancel`]).
    NotFired,
    /// The callback ran and its packet is on the port.
    Posted,
    /// The callback ran (the wait was satisfied: a signal consumed), could not post, and stopped
    /// because the wait was cancelled: no packet will come.
    Consumed,
}

const NOT_FIRED: u8 = 0;
const POSTED: u8 = 1;
const CONSUMED: u8 = 2;

/// The memory a thread-pool callback reads: owned by its [`PoolWaiter`], at a stable address, and
/// freed only once no registration naming it can run its callback.
struct PoolWaitContext {
    /// Kept open by this clone for as long as any callback may post to it.
    port: Arc<CompletionPort>,
    key: usize,
    /// The current arming's ApcContext (written before each registration).
    apc_context: AtomicUsize,
    /// `NOT_FIRED`, `POSTED` or `CONSUMED`.
    outcome: AtomicU8,
    /// Set by a cancel before it unregisters: a callback whose post fails stops retrying.
    cancelled: AtomicBool,
}

impl PoolWaitContext {
    /// The callback's work: post the packet, retrying with a growing pause while the post fails
    /// (out of quota) and the wait is not cancelled.
    fn fire(&self) {
        let apc_context = self.apc_context.load(Ordering::Acquire);
        let mut pause = Duration::from_millis(1);
        loop {
            if self
                .port
                .post(self.key, apc_context, NtStatus::SUCCESS, 0)
                .is_ok()
            {
                self.outcome.store(POSTED, Ordering::Release);
                return;
            }
            if self.cancelled.load(Ordering::Acquire) {
                self.outcome.store(CONSUMED, Ordering::Release);
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// The thread pool's callback (`WAITORTIMERCALLBACK`).
///
/// `_timed_out` is always false: every registration waits without a time limit.
unsafe extern "system" fn pool_wait_callback(context: *mut c_void, _timed_out: bool) {
    // SAFETY: `context` is the `PoolWaitContext` the registration was given; its `PoolWaiter`
    // frees it only after a successful blocking `UnregisterWaitEx` of every registration naming
    // it, which returns only once this callback has returned (or will never run).
    let context = unsafe { &*context.cast::<PoolWaitContext>() };
    context.fire();
}

/// A wait through the thread pool, for one object at a time: each [`arm`](Self::arm) registers a
/// one-shot wait (`RegisterWaitForSingleObject`, `WT_EXECUTEONLYONCE`) whose callback posts one
/// packet with the waiter's key and the arming's ApcContext (`NtSetIoCompletion`).
///
/// Owns the callback's context (one heap allocation for the waiter's whole life). The context is
/// freed only after every registration was unregistered with a blocking `UnregisterWaitEx`; if
/// one such call fails, the context is leaked on purpose (a callback might still read it).
///
/// # Wine
/// Wine's `UnregisterWaitEx(.., INVALID_HANDLE_VALUE)` (`TpWaitForWait(.., TRUE)`) drops a
/// callback that was queued but had not started, and its wait thread drops a satisfied wait
/// whose registration changed before it could queue the callback: in both cases the signal was
/// consumed and no callback runs. So a cancel racing the object's signal can report
/// [`PoolWaitOutcome::NotFired`] for a consumed auto-reset event or semaphore (a lost signal, not
/// a stray packet). Manual-reset events and processes lose nothing.
pub struct PoolWaiter {
    context: NonNull<PoolWaitContext>,
    /// The current (or last) registration, until it is unregistered.
    registered: Option<HANDLE>,
    /// An `UnregisterWaitEx` failed: a callback may still run, so the context is never freed and
    /// the waiter can no longer be armed.
    poisoned: bool,
}

// SAFETY: the context is only read through shared references (atomics, and an `Arc` to a port
// that is `Send + Sync`), so it may be reached from any thread; the registration handle is a
// plain value the thread pool accepts from any thread. The waiter owns both.
unsafe impl Send for PoolWaiter {}

impl fmt::Debug for PoolWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolWaiter")
            .field("registered", &self.registered.is_some())
            .field("outcome", &self.outcome())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl PoolWaiter {
    /// A waiter whose callbacks post to `port` with `key`. Nothing is registered yet.
    pub fn new(port: Arc<CompletionPort>, key: usize) -> Self {
        let context = Box::new(PoolWaitContext {
            port,
            key,
            apc_context: AtomicUsize::new(0),
            outcome: AtomicU8::new(NOT_FIRED),
            cancelled: AtomicBool::new(false),
        });
        Self {
            context: NonNull::from(Box::leak(context)),
            registered: None,
            poisoned: false,
        }
    }

    fn context(&self) -> &PoolWaitContext {
        // SAFETY: the context is allocated in `new` and freed only in `drop`; it is never
        // written except through its atomics.
        unsafe { self.context.as_ref() }
    }

    /// What the current (or last) arming's callback did.
    pub fn outcome(&self) -> PoolWaitOutcome {
        match self.context().outcome.load(Ordering::Acquire) {
            NOT_FIRED => PoolWaitOutcome::NotFired,
            POSTED => PoolWaitOutcome::Posted,
            _ => PoolWaitOutcome::Consumed,
        }
    }

    /// Unregister the current registration, if any, waiting for a running callback to return
    /// (`UnregisterWaitEx(.., INVALID_HANDLE_VALUE)`).
    ///
    /// # Errors
    /// The call's failure: the waiter is poisoned (its context will be leaked).
    fn unregister(&mut self) -> io::Result<()> {
        let Some(wait) = self.registered.take() else {
            return Ok(());
        };
        // SAFETY: `wait` is a registration we made and have not unregistered; the blocking form
        // returns once no callback of it is running, and no callback of it runs afterwards. It is
        // never called from a callback (which would deadlock).
        let ok = unsafe { UnregisterWaitEx(wait, INVALID_HANDLE_VALUE) };
        if ok == 0 {
            self.poisoned = true;
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Register a one-shot wait on `object`: once it is signaled (at once, if it is now) the
    /// callback posts one packet with `apc_context`. A previous registration is unregistered
    /// first (blocking: its callback may still be returning after its post).
    ///
    /// # Errors
    /// The failure of `UnregisterWaitEx` (for the previous registration: the waiter is then
    /// poisoned and every later `arm` fails) or of `RegisterWaitForSingleObject`: nothing is
    /// registered and no packet will come.
    #[doc(alias = "RegisterWaitForSingleObject")]
    pub fn arm(&mut self, object: BorrowedHandle<'_>, apc_context: usize) -> io::Result<()> {
        if self.poisoned {
            return Err(io::Error::other(
                "an earlier UnregisterWaitEx failed: this wait cannot be armed again",
            ));
        }
        self.unregister()?;
        let context = self.context();
        context.apc_context.store(apc_context, Ordering::Release);
        context.outcome.store(NOT_FIRED, Ordering::Release);
        context.cancelled.store(false, Ordering::Release);
        let mut wait: HANDLE = ptr::null_mut();
        // SAFETY: `wait` is a valid out-pointer; `object` is open for the call (the pool keeps its
        // own reference); the context stays allocated until this registration is unregistered
        // with a blocking `UnregisterWaitEx` (see `drop`), and the callback only reads it.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                object.as_raw_handle() as HANDLE,
                Some(pool_wait_callback),
                self.context.as_ptr().cast::<c_void>(),
                INFINITE,
                WT_EXECUTEONLYONCE,
            )
        };
        if ok == 0 {
            return Err(io::Error::last_os_error());
        }
        self.registered = Some(wait);
        Ok(())
    }

    /// Cancel the current arming: tell a retrying callback to stop, unregister (blocking, so a
    /// running callback has returned), and say what the callback did.
    ///
    /// `NotFired` means no packet will come and, except for the Wine race described on the type,
    /// nothing was consumed.
    ///
    /// # Errors
    /// `UnregisterWaitEx` failed: the waiter is poisoned; a callback may yet run and post.
    #[doc(alias = "UnregisterWaitEx")]
    pub fn cancel(&mut self) -> io::Result<PoolWaitOutcome> {
        self.context().cancelled.store(true, Ordering::Release);
        self.unregister()?;
        Ok(self.outcome())
    }
}

impl Drop for PoolWaiter {
    fn drop(&mut self) {
        self.context().cancelled.store(true, Ordering::Release);
        if self.unregister().is_err() || self.poisoned {
            // A callback may still read the context: leak it (and its port reference) rather
            // than free memory another thread can touch.
            return;
        }
        // SAFETY: allocated by `Box` in `new`; every registration naming it was unregistered with
        // a blocking UnregisterWaitEx that succeeded, so no callback can touch it any more.
        drop(unsafe { Box::from_raw(self.context.as_ptr()) });
    }
}
