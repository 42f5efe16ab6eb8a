//! Adversarial review 14 (branch `async` at a9d9dff): `Reactor::rearm` and the `Edge` contract
//! ("each readiness is reported once, and once more after every rearm of it"). No reactor-level
//! finding: the probe below checks the contract on the simulated kernel, under its faults, and
//! held up. (The findings are in afd-async/tests/review14_findings.rs.)

use afd_reactor::afd::PollEvents;
use afd_reactor::kernel::sim::{Faults, SimKernel};
use afd_reactor::{Events, Interest, Mode, Reactor, SimSocket, Token};
use std::time::Duration;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn holds_read(e: PollEvents) -> bool {
    e.intersects(PollEvents::RECEIVE | PollEvents::DISCONNECT | PollEvents::ABORT)
}
fn holds_write(e: PollEvents) -> bool {
    e.intersects(PollEvents::SEND | PollEvents::ABORT)
}

/// One random run: four Edge registrations (READABLE, widened to READABLE | WRITABLE at random,
/// as afd-async does), random readiness changes, rearms and polls into a buffer of `cap` events
/// (1 and 2 force events to be kept for later polls). The model: a readiness is *armed* from its
/// registration, widening or rearm until an event reports it.
/// - Liveness: after a settle (polls with nothing changing), no armed readiness holds unreported.
/// - Once: an event reports a readiness only if armed (a reset, which is both, excepted), for
///   registrations that never had an error event (after one, a rearm retries every readiness
///   not reported, which the model does not track).
fn run(seed: u64, faults: Faults, cap: usize, steps: usize) -> Result<(), String> {
    const N: usize = 4;
    let mut rng = Rng(seed | 1);
    let mut r = Reactor::with_kernel(SimKernel::new(seed));
    let socks: Vec<SimSocket> = (0..N)
        .map(|_| SimSocket(r.kernel().open_socket()))
        .collect();
    let mut interest = [Interest::READABLE; N];
    let mut armed = vec![[true, false]; N];
    let mut ready = [PollEvents::NONE; N];
    let mut errored = vec![false; N];
    for (i, s) in socks.iter().enumerate() {
        r.register_with_mode(s, Token(i), Interest::READABLE, Mode::Edge)
            .unwrap();
    }
    r.kernel().set_faults(faults);
    let mut events = Events::with_capacity(cap);
    let mut log: Vec<String> = Vec::new();
    let tail = |log: &Vec<String>| log[log.len().saturating_sub(30)..].join("\n");
    let mut take = |r: &mut Reactor<SimKernel>,
                    armed: &mut Vec<[bool; 2]>,
                    errored: &mut Vec<bool>,
                    log: &mut Vec<String>|
     -> Result<(), String> {
        r.poll(&mut events, Some(Duration::ZERO)).unwrap();
        for e in events.iter() {
            let j = e.token().0;
            log.push(format!("event {j} {e:?}"));
            if e.is_error() && !e.is_readable() && !e.is_writable() {
                armed[j] = [false, false];
                errored[j] = true;
                continue;
            }
            if !errored[j] && !e.is_reset() {
                if e.is_readable() && !armed[j][0] {
                    return Err(format!("readable reported twice on {j}\n{}", tail(log)));
                }
                if e.is_writable() && !armed[j][1] {
                    return Err(format!("writable reported twice on {j}\n{}", tail(log)));
                }
            }
            if e.is_readable() {
                armed[j][0] = false;
            }
            if e.is_writable() {
                armed[j][1] = false;
            }
        }
        Ok(())
    };
    for step in 0..steps {
        let i = rng.below(N as u64) as usize;
        match rng.below(6) {
            0 => {
                let mut e = PollEvents::NONE;
                if rng.below(2) == 0 {
                    e |= PollEvents::RECEIVE;
                }
                if rng.below(2) == 0 {
                    e |= PollEvents::SEND;
                }
                if rng.below(8) == 0 {
                    e |= PollEvents::DISCONNECT;
                }
                if rng.below(16) == 0 {
                    e |= PollEvents::ABORT;
                }
                ready[i] = e;
                r.kernel().set_readiness(socks[i].0, e);
                log.push(format!("{step}: {i} is {e:?}"));
            }
            1 => {
                r.rearm(&socks[i], Interest::READABLE).unwrap();
                armed[i][0] = true;
                log.push(format!("{step}: rearm {i} READABLE"));
            }
            2 => {
                if interest[i].is_writable() {
                    r.rearm(&socks[i], Interest::WRITABLE).unwrap();
                    log.push(format!("{step}: rearm {i} WRITABLE"));
                } else {
                    interest[i] = Interest::READABLE | Interest::WRITABLE;
                    r.reregister_with_mode(&socks[i], Token(i), interest[i], Mode::Edge)
                        .unwrap();
                    armed[i][0] = true;
                    log.push(format!("{step}: widen {i}"));
                }
                armed[i][1] = true;
            }
            _ => take(&mut r, &mut armed, &mut errored, &mut log)?,
        }
        if step % 50 == 49 {
            for _ in 0..12 {
                take(&mut r, &mut armed, &mut errored, &mut log)?;
            }
            for j in 0..N {
                if armed[j][0] && holds_read(ready[j]) {
                    return Err(format!("lost readable on {j}\n{}", tail(&log)));
                }
                if armed[j][1] && interest[j].is_writable() && holds_write(ready[j]) {
                    return Err(format!("lost writable on {j}\n{}", tail(&log)));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn p1_edge_rearm_model_holds_under_kept_events_and_kernel_faults() {
    let miri = cfg!(miri);
    let (seeds, steps) = if miri { (3, 100) } else { (300, 400) };
    let fault_sets = [
        Faults::none(),
        Faults {
            reorder: 300,
            cancel_race: 300,
            spurious: 100,
            ..Faults::none()
        },
        Faults {
            reorder: 300,
            cancel_race: 300,
            spurious: 100,
            submit_failure: 100,
            ..Faults::none()
        },
    ];
    let mut failures = Vec::new();
    for seed in 1..=seeds {
        for (f, faults) in fault_sets.iter().enumerate() {
            for cap in [1, 2, 64] {
                if let Err(e) = run(seed, *faults, cap, steps) {
                    failures.push(format!("seed {seed}, faults {f}, capacity {cap}: {e}"));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}",
        failures[..failures.len().min(2)].join("\n\n")
    );
}
