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
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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
    /// No callback claimed the arming: no packet will come (but see [`PoolWaiter`]'s notes on
    /// Wine: the signal may have been consumed all the same).
    NotFired,
    /// The callback posted the arming's packet.
    Posted,
    /// The callback claimed the arming (the wait was satisfied: a signal consumed), could not
    /// post, and stopped because the wait was cancelled: no packet will come.
    Consumed,
}

// A slot's state: the arming's generation above the phase bits.
const PHASE_BITS: u32 = 3;
/// Not armed (or the arming was cancelled before any callback claimed it).
const IDLE: u64 = 0;
/// Armed: the first callback of this generation to claim it posts the packet.
const ARMED: u64 = 1;
/// A callback claimed the arming and is posting.
const FIRING: u64 = 2;
/// The callback posted the packet.
const POSTED: u64 = 3;
/// The callback claimed the arming but stopped, cancelled, without posting.
const CONSUMED: u64 = 4;

/// Slots are numbered with this many bits in a callback's context value; the generation takes
/// the rest (44 bits: a slot would need 2^44 armings for an old callback to pass for a new one).
const INDEX_BITS: u32 = 20;
const GENERATION_MASK: u64 = (1 << (64 - INDEX_BITS)) - 1;
const SLOTS_PER_CHUNK: usize = 256;
const MAX_CHUNKS: usize = (1 << INDEX_BITS) / SLOTS_PER_CHUNK;

/// What a thread-pool callback reads. Slots live in chunks that are never freed (see
/// [`PoolWaiter`]: under Wine 8 a callback can run after `UnregisterWaitEx` returned), and are
/// recycled through a free list; a callback touches a slot's port only after claiming the slot's
/// current arming, which a cancel or a drop settles before the port can go.
struct PoolSlot {
    /// `generation << PHASE_BITS | phase`.
    state: AtomicU64,
    /// Set by a cancel before it unregisters: a claimed callback whose post fails stops.
    cancelled: AtomicBool,
    /// The current arming's ApcContext and key.
    apc_context: AtomicUsize,
    key: AtomicUsize,
    /// The port of the current arming: an `Arc<CompletionPort>`'s target, kept alive by the
    /// waiter until its arming is settled.
    port: AtomicPtr<CompletionPort>,
}

impl PoolSlot {
    const fn new() -> Self {
        Self {
            state: AtomicU64::new(IDLE),
            cancelled: AtomicBool::new(false),
            apc_context: AtomicUsize::new(0),
            key: AtomicUsize::new(0),
            port: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// The callback's work for arming `generation`: claim it, then post the packet, retrying
    /// with a growing pause while the post fails (out of quota) and the wait is not cancelled.
    /// A callback of an older arming (a late one) claims nothing and touches nothing else.
    fn fire(&self, generation: u64) {
        let armed = generation << PHASE_BITS | ARMED;
        let firing = generation << PHASE_BITS | FIRING;
        if self
            .state
            .compare_exchange(armed, firing, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        // SAFETY: the arming is claimed (FIRING): its waiter keeps the port alive until the state
        // leaves FIRING (`PoolWaiter::settle`), and stored the pointer before arming.
        let port = unsafe { &*self.port.load(Ordering::Acquire) };
        let key = self.key.load(Ordering::Acquire);
        let apc_context = self.apc_context.load(Ordering::Acquire);
        let mut pause = Duration::from_millis(1);
        loop {
            if port.post(key, apc_context, NtStatus::SUCCESS, 0).is_ok() {
                self.state
                    .store(generation << PHASE_BITS | POSTED, Ordering::Release);
                return;
            }
            if self.cancelled.load(Ordering::Acquire) {
                self.state
                    .store(generation << PHASE_BITS | CONSUMED, Ordering::Release);
                return;
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

/// The slot chunks (never freed) and the free list.
static CHUNKS: [AtomicPtr<PoolSlot>; MAX_CHUNKS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CHUNKS];

#[derive(Default)]
struct SlotAllocator {
    free: Vec<u32>,
    next: u32,
}

static ALLOCATOR: Mutex<SlotAllocator> = Mutex::new(SlotAllocator {
    free: Vec::new(),
    next: 0,
});

/// The slot numbered `index`, which must have been handed out by `alloc_slot`.
fn slot(index: u32) -> &'static PoolSlot {
    let chunk = CHUNKS[index as usize / SLOTS_PER_CHUNK].load(Ordering::Acquire);
    assert!(!chunk.is_null(), "slot {index} was never allocated");
    // SAFETY: the chunk is a leaked allocation of SLOTS_PER_CHUNK slots, published (Release)
    // before any of its indices was handed out, and never freed.
    unsafe { &*chunk.add(index as usize % SLOTS_PER_CHUNK) }
}

/// A free slot (recycled, or new).
fn alloc_slot() -> io::Result<u32> {
    let mut a = ALLOCATOR.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(index) = a.free.pop() {
        return Ok(index);
    }
    let index = a.next;
    let chunk = index as usize / SLOTS_PER_CHUNK;
    if chunk >= MAX_CHUNKS {
        return Err(io::Error::new(
            io::ErrorKind::OutOfMemory,
            "too many thread-pool waits",
        ));
    }
    if (index as usize).is_multiple_of(SLOTS_PER_CHUNK) {
        let slots: Box<[PoolSlot]> = (0..SLOTS_PER_CHUNK).map(|_| PoolSlot::new()).collect();
        // Leaked on purpose: a late callback may read any slot at any time.
        let slots: &'static mut [PoolSlot] = Box::leak(slots);
        CHUNKS[chunk].store(slots.as_mut_ptr(), Ordering::Release);
    }
    a.next += 1;
    Ok(index)
}

fn free_slot(index: u32) {
    ALLOCATOR
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .free
        .push(index);
}

/// The thread pool's callback (`WAITORTIMERCALLBACK`). Its context value is not a pointer but a
/// slot number and the arming's generation.
///
/// `_timed_out` is always false: every registration waits without a time limit.
unsafe extern "system" fn pool_wait_callback(context: *mut c_void, _timed_out: bool) {
    let value = context as usize as u64;
    let index = (value & ((1 << INDEX_BITS) - 1)) as u32;
    slot(index).fire(value >> INDEX_BITS);
}

/// A wait through the thread pool, for one object at a time: each [`arm`](Self::arm) registers a
/// one-shot wait (`RegisterWaitForSingleObject`, `WT_EXECUTEONLYONCE`) whose callback posts one
/// packet with the waiter's key and the arming's ApcContext (`NtSetIoCompletion`).
///
/// # Memory
/// The callback reads a *slot*, from process-wide chunks that are never freed and are recycled
/// between waiters; its context value names the slot and the arming's generation, and the callback
/// claims that generation (`ARMED` to `FIRING`) before it touches the port. A cancel, a re-arm and
/// a drop first *settle* the current arming: unregister (blocking), then either take the
/// unclaimed arming back (so a callback that comes later claims nothing) or wait for the claimed
/// one to finish. This holds even though, under Wine 8, a callback can run *after* a blocking
/// `UnregisterWaitEx` returned (seen in tests/nt_waits.rs: a packet posted after the cancel), so
/// freeing callback memory after that call would not be safe there.
///
/// # Wine: consumed signals
/// A cancel racing the object's signal can consume the signal with no callback claiming it:
/// Wine 8 runs the callback late (it then claims nothing), and Wine 10's wait thread drops a
/// satisfied wait whose registration changed meanwhile (dlls/ntdll/threadpool.c). The answer is
/// then [`PoolWaitOutcome::NotFired`] though an auto-reset event was reset or a semaphore
/// decremented: a lost signal, never a stray packet. Manual-reset events and processes lose
/// nothing.
pub struct PoolWaiter {
    index: u32,
    port: Arc<CompletionPort>,
    /// The current (or last) arming's generation; 0 before the first.
    generation: u64,
    /// The current (or last) registration, until it is unregistered.
    registered: Option<HANDLE>,
}

// SAFETY: the slot is reached only through atomics (and the port, `Send + Sync`, through an
// `Arc`); the registration handle is a plain value the thread pool accepts from any thread.
unsafe impl Send for PoolWaiter {}

impl fmt::Debug for PoolWaiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolWaiter")
            .field("slot", &self.index)
            .field("generation", &self.generation)
            .field("registered", &self.registered.is_some())
            .finish()
    }
}

impl PoolWaiter {
    /// A waiter whose callbacks post to `port`. Nothing is registered yet.
    ///
    /// # Errors
    /// `OutOfMemory` past 2^20 waiters alive at once.
    pub fn new(port: Arc<CompletionPort>) -> io::Result<Self> {
        let index = alloc_slot()?;
        Ok(Self {
            index,
            port,
            generation: slot(index).state.load(Ordering::Acquire) >> PHASE_BITS,
            registered: None,
        })
    }

    fn slot(&self) -> &'static PoolSlot {
        slot(self.index)
    }

    /// Unregister the current registration, if any, waiting for a running callback to return
    /// (`UnregisterWaitEx(.., INVALID_HANDLE_VALUE)`).
    fn unregister(&mut self) -> io::Result<()> {
        let Some(wait) = self.registered.take() else {
            return Ok(());
        };
        // SAFETY: `wait` is a registration we made and have not unregistered. It is never called
        // from a callback (which would deadlock).
        if unsafe { UnregisterWaitEx(wait, INVALID_HANDLE_VALUE) } == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Settle the current arming: tell a claimed callback to stop retrying, unregister (a failure
    /// is harmless here: a later callback claims nothing), take the arming back if no callback
    /// claimed it, else wait until the claimed callback finishes. Afterwards no callback touches
    /// the port for it.
    fn settle(&mut self) -> PoolWaitOutcome {
        let slot = self.slot();
        slot.cancelled.store(true, Ordering::Release);
        let _ = self.unregister();
        let g = self.generation << PHASE_BITS;
        let mut pause = Duration::from_micros(50);
        loop {
            match slot.state.compare_exchange(
                g | ARMED,
                g | IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return PoolWaitOutcome::NotFired,
                Err(s) if s == g | FIRING => {
                    // A callback is posting right now (or retrying, until it sees `cancelled`).
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(s) if s == g | POSTED => return PoolWaitOutcome::Posted,
                Err(s) if s == g | CONSUMED => return PoolWaitOutcome::Consumed,
                // IDLE: never armed, or settled already.
                Err(_) => return PoolWaitOutcome::NotFired,
            }
        }
    }

    /// Register a one-shot wait on `object`: once it is signaled (at once, if it is now) the
    /// callback posts one packet with `key` and `apc_context`. The previous arming must have
    /// ended (its packet dequeued, or cancelled): it is settled first, and its registration
    /// unregistered (blocking: its callback may still be returning after its post).
    ///
    /// # Errors
    /// The failure of `RegisterWaitForSingleObject`: nothing is registered and no packet will
    /// come.
    ///
    /// # Safety
    /// `object` must stay open (naming the same object) until this arming is settled: until the
    /// next `arm`, `cancel`, or the waiter's drop. The thread pool keeps no reference to the
    /// object: it waits on the handle *value*, which a close would free for a new object to take
    /// (its signals would then be consumed, and a packet posted, for an object never given here).
    #[doc(alias = "RegisterWaitForSingleObject")]
    pub unsafe fn arm(
        &mut self,
        object: BorrowedHandle<'_>,
        key: usize,
        apc_context: usize,
    ) -> io::Result<()> {
        self.settle();
        let slot = self.slot();
        let generation = (self.generation + 1) & GENERATION_MASK;
        slot.apc_context.store(apc_context, Ordering::Release);
        slot.key.store(key, Ordering::Release);
        slot.port
            .store(Arc::as_ptr(&self.port).cast_mut(), Ordering::Release);
        slot.cancelled.store(false, Ordering::Release);
        // Published last: a callback that claims this generation sees everything above.
        slot.state
            .store(generation << PHASE_BITS | ARMED, Ordering::Release);
        self.generation = generation;
        let context = (generation << INDEX_BITS | u64::from(self.index)) as usize;
        let mut wait: HANDLE = ptr::null_mut();
        // SAFETY: `wait` is a valid out-pointer; `object` stays open until this arming is settled
        // (our caller's contract), and is open for the call; the context is a number naming a
        // slot that is never freed.
        let ok = unsafe {
            RegisterWaitForSingleObject(
                &mut wait,
                object.as_raw_handle() as HANDLE,
                Some(pool_wait_callback),
                context as *const c_void,
                INFINITE,
                WT_EXECUTEONLYONCE,
            )
        };
        if ok == 0 {
            let err = io::Error::last_os_error();
            slot.state
                .store(generation << PHASE_BITS | IDLE, Ordering::Release);
            return Err(err);
        }
        self.registered = Some(wait);
        Ok(())
    }

    /// Cancel the current arming and say what its callback did (see [`PoolWaitOutcome`]).
    /// Returns once no callback is deciding its fate: the registration is unregistered (blocking),
    /// and a callback that runs later (Wine 8) can no longer claim it.
    #[doc(alias = "UnregisterWaitEx")]
    pub fn cancel(&mut self) -> PoolWaitOutcome {
        self.settle()
    }
}

impl Drop for PoolWaiter {
    fn drop(&mut self) {
        // After this no callback touches the port through this slot; the slot itself stays (a
        // callback of an old generation may read its state at any time).
        self.settle();
        free_slot(self.index);
    }
}
