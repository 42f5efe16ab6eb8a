//! The conformance suite on the simulated kernel (every platform, and under Miri).

#[macro_use]
mod conformance;

use afd_reactor::afd::PollEvents;
use afd_reactor::kernel::sim::SimKernel;
use afd_reactor::{Reactor, SimSocket};
use conformance::Harness;
use std::time::Duration;

struct SimHarness {
    reactor: Reactor<SimKernel>,
}

impl Harness for SimHarness {
    type K = SimKernel;
    type Sock = SimSocket;

    fn new() -> Self {
        Self {
            reactor: Reactor::with_kernel(SimKernel::new(0x5EED)),
        }
    }

    fn reactor(&mut self) -> &mut Reactor<SimKernel> {
        &mut self.reactor
    }

    fn socket(&mut self) -> SimSocket {
        let k = self.reactor.kernel();
        let raw = k.open_socket();
        k.set_readiness(raw, PollEvents::SEND); // connected: writable, nothing to read
        SimSocket(raw)
    }

    fn make_readable(&mut self, s: &SimSocket) {
        self.reactor
            .kernel()
            .add_readiness(s.0, PollEvents::RECEIVE);
    }

    fn drain(&mut self, s: &SimSocket) {
        self.reactor
            .kernel()
            .clear_readiness(s.0, PollEvents::RECEIVE);
    }

    fn peer_shutdown(&mut self, s: &SimSocket) {
        self.reactor
            .kernel()
            .add_readiness(s.0, PollEvents::DISCONNECT);
    }

    fn peer_close(&mut self, s: &SimSocket) {
        self.peer_shutdown(s); // the same FIN
    }

    fn peer_reset(&mut self, s: &SimSocket) {
        self.reactor.kernel().add_readiness(s.0, PollEvents::ABORT);
    }

    fn failing_connect(&mut self) -> SimSocket {
        let k = self.reactor.kernel();
        let raw = k.open_socket();
        k.set_readiness(raw, PollEvents::CONNECT_FAIL);
        SimSocket(raw)
    }

    fn close(&mut self, s: SimSocket) {
        self.reactor.kernel().close_socket(s.0);
    }

    fn bind_elsewhere(&mut self, s: &SimSocket) {
        self.reactor.kernel().bind_to_foreign_port(s.0).unwrap();
    }

    fn cancel_io(&mut self, s: &SimSocket) {
        self.reactor.kernel().cancel_io(s.0);
    }

    fn quiet(&self) -> Duration {
        // The simulation completes polls synchronously: nothing arrives late.
        Duration::from_millis(5)
    }

    fn reuses_handles_at_once(&self) -> bool {
        true
    }

    fn not_sockets(&mut self) -> Vec<(&'static str, u64)> {
        vec![("a file", self.reactor.kernel().open_non_socket())]
    }

    fn invalid_value(&self) -> u64 {
        0xBAD_0000
    }

    fn closed_socket_value(&mut self) -> (u64, Box<dyn std::any::Any>) {
        // Each harness has its own simulated kernel: nothing else can be handed the value.
        let k = self.reactor.kernel();
        let s = k.open_socket();
        k.close_socket(s);
        (s, Box::new(()))
    }

    fn churn_rounds(&self) -> usize {
        if cfg!(miri) { 30 } else { 5_000 }
    }
}

afd_reactor_conformance!(SimHarness);
