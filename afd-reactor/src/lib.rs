//! # afd-reactor
//!
//! A single-threaded reactor event loop for Windows built directly on NT internals: per-socket
//! `IOCTL_AFD_POLL` through ntdll, an I/O completion port, `NtSetIoCompletion` as the wake-up and
//! `NtCancelIoFileEx` for deregistration — the design of the WRL-001 specification, with the
//! corrections in the project's design notes.
//!
//! ## Layers
//! - [`afd`]: AFD/NT/winsock definitions — plain data shared by every layer (all platforms).
//! - `nt` (Windows only): safe wrappers over the NT calls; the crate's only FFI.
//! - [`kernel`]: the kernel boundary — one narrow trait, with the real NT implementation
//!   (`kernel::nt`, Windows) and the simulated one ([`kernel::sim`]) beside it.
//! - [`state`]: the per-socket state machine, pure logic.
//! - [`Reactor`] and its vocabulary ([`Token`], [`Interest`], [`Event`], [`Events`], [`Waker`]):
//!   the public API and the event loop.
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("afd-reactor supports 64-bit targets only");

pub mod afd;
pub mod kernel;
mod reactor;
pub mod state;

pub use reactor::{
    Config, Event, Events, Interest, NtCalls, Reactor, SimSocket, Source, Stats, Teardown, TimerId,
    Token, Waker,
};
pub use state::Mode;
#[cfg(windows)]
pub mod nt;

// Compile-time thread-safety contract (DESIGN-NOTES §2.9): the waker crosses threads, the reactor
// moves between threads (with a `Send` kernel) but is driven by one at a time.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Waker>();
    send_sync::<Token>();
    send_sync::<Interest>();
    send::<Events>();
    #[cfg(windows)]
    send::<Reactor<kernel::nt::NtKernel>>();

    // `Reactor` must not be `Sync`: if it were, the call below would be ambiguous.
    trait AmbiguousIfSync<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfSync<()> for T {}
    struct IsSync;
    impl<T: ?Sized + Sync> AmbiguousIfSync<IsSync> for T {}
    <Reactor<kernel::sim::SimKernel> as AmbiguousIfSync<_>>::check();
    #[cfg(windows)]
    <Reactor<kernel::nt::NtKernel> as AmbiguousIfSync<_>>::check();
};
