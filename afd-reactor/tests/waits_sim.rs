//! The waitable conformance suite on the simulated kernel, on both wait paths (every platform,
//! and under Miri).

#[macro_use]
mod waits;

use afd_reactor::kernel::sim::{SimKernel, WaitPath};
use afd_reactor::{Reactor, SimWaitable};
use waits::WaitHarness;

/// The simulated kernel's world, on the wait path `P` names (0: packets, 1: thread pool).
struct SimWaits<const P: u8> {
    reactor: Reactor<SimKernel>,
}

impl<const P: u8> WaitHarness for SimWaits<P> {
    type K = SimKernel;
    type W = SimWaitable;

    fn new() -> Self {
        let kernel = SimKernel::new(0x5EED);
        kernel.set_wait_path(if P == 0 {
            WaitPath::Packets
        } else {
            WaitPath::ThreadPool
        });
        Self {
            reactor: Reactor::with_kernel(kernel),
        }
    }

    fn reactor(&mut self) -> &mut Reactor<SimKernel> {
        &mut self.reactor
    }

    fn auto_event(&mut self, signaled: bool) -> SimWaitable {
        SimWaitable(self.reactor.kernel().open_event(false, signaled))
    }

    fn manual_event(&mut self, signaled: bool) -> SimWaitable {
        SimWaitable(self.reactor.kernel().open_event(true, signaled))
    }

    fn set(&mut self, w: &SimWaitable) {
        self.reactor.kernel().signal(w.0);
    }

    fn reset(&mut self, _w: &SimWaitable) {
        // A wait consumed an auto-reset event's signal already.
    }

    fn is_set(&mut self, w: &SimWaitable) -> bool {
        self.reactor.kernel().signals(w.0) > 0
    }

    fn process(&mut self) -> SimWaitable {
        SimWaitable(self.reactor.kernel().open_process())
    }

    fn end_process(&mut self, w: &SimWaitable) {
        self.reactor.kernel().exit_process(w.0);
    }

    fn duplicate(&mut self, w: &SimWaitable) -> SimWaitable {
        SimWaitable(self.reactor.kernel().duplicate_handle(w.0))
    }

    fn close(&mut self, w: SimWaitable) {
        self.reactor.kernel().close_socket(w.0);
    }
}

mod packets {
    use super::*;
    afd_reactor_wait_conformance!(SimWaits<0>);
}

mod thread_pool {
    use super::*;
    afd_reactor_wait_conformance!(SimWaits<1>);
}
