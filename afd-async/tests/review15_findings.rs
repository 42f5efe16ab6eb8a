//! Adversarial review 15 (branch `waitable2` at 948d00d): `Waitable<T>`, `Signaled`, `child_exit`.
//!
//! No afd-async-specific finding. Checked and found sound: the `signaled` flag (one signal per
//! `wait()`, a second waiter re-arms once), error counting (a wait fails only for a refusal after
//! it started waiting), the token space apart from sockets' (then a `WAITABLE_BIT` in the token;
//! now the reactor's `Event::is_waitable` flag), `RawHandle`'s `unsafe impl` (the `T` is owned until after
//! deregistration), `Drop`/`into_inner_with_signal` ordering, `Signaled`'s drop inside a waker's
//! drop, and `child_exit` (pidfd opened only before the child is reaped, under `&mut Child`).
//!
//! `into_inner_with_signal` relays the reactor's answer, so it inherits finding F1 (the
//! thread-pool path under Wine loses consumed signals without reporting them):
//! afd-reactor/tests/review15_nt_findings.rs.
