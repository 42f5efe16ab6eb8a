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
//!   (`kernel::nt`, Windows) and the simulated one (`kernel::sim`, feature `test-rig`) beside it.
//! - `state`: the per-socket state machine, pure logic.
//! - [`Reactor`] and its vocabulary ([`Token`], [`Interest`], [`Event`], [`Events`], [`Waker`]):
//!   the public API and the event loop.
//!
//! ## Features
//! - `test-rig` (off by default): the crate's test rig — the simulated kernel
//!   (`kernel::sim::SimKernel`, `SimSocket`), debugging hooks into the reactor
//!   (`Reactor::debug_slots`), the state machine's types (`state`) and the raw NT layer (`nt`).
//!   The crate's own tests and benches enable it; enable it in your dev-dependencies to test
//!   your own code against the simulated kernel. A default build contains the reactor only.
#![deny(missing_docs, missing_debug_implementations, unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(not(target_pointer_width = "64"))]
compile_error!("afd-reactor supports 64-bit targets only");

pub mod afd;
pub mod kernel;
mod reactor;
#[cfg(feature = "test-rig")]
pub mod state;
#[cfg(not(feature = "test-rig"))]
mod state;

#[cfg(feature = "test-rig")]
pub use reactor::SimSocket;
pub use reactor::{
    Config, Event, Events, Interest, NtCalls, Reactor, Source, Stats, Teardown, TimerId, Token,
    Waker,
};
pub use state::Mode;
#[cfg(all(windows, feature = "test-rig"))]
pub mod nt;
#[cfg(all(windows, not(feature = "test-rig")))]
#[allow(dead_code, unused_imports)]
mod nt;

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

    // `Reactor` must not be `Sync`: if it were, the calls below would be ambiguous. (Checked for
    // each kernel there is: a generic `Reactor<K>` proves nothing.)
    #[cfg(any(windows, feature = "test-rig"))]
    {
        trait AmbiguousIfSync<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfSync<()> for T {}
        struct IsSync;
        impl<T: ?Sized + Sync> AmbiguousIfSync<IsSync> for T {}
        #[cfg(feature = "test-rig")]
        <Reactor<kernel::sim::SimKernel> as AmbiguousIfSync<_>>::check();
        #[cfg(windows)]
        <Reactor<kernel::nt::NtKernel> as AmbiguousIfSync<_>>::check();
    }
};
