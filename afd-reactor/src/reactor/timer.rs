//! One-shot and repeating timers on the loop (docs/design.md §11).

use crate::reactor::event::Token;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Numbers each timer set, so an id from one reactor names nothing on another.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// "Never": a deadline 100 years from `now` (what a delay too large to represent becomes).
pub(crate) fn far_future(now: Instant) -> Instant {
    let century = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(century).unwrap_or(now)
}

/// Identifies a timer, to cancel it. Unique within the process: an id from one reactor cancels
/// nothing on another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId {
    owner: u64,
    id: u64,
}

#[derive(Debug)]
struct Timer {
    token: Token,
    period: Option<Duration>,
    deadline: Instant,
}

/// A min-heap of deadlines with lazy cancellation.
#[derive(Debug)]
pub(crate) struct Timers {
    owner: u64,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Timer>,
    next_id: u64,
    /// Repeating timers that fired in the current poll, with their next deadline: they go back
    /// into the heap when the next poll starts ([`Timers::new_poll`]), so none fires twice in one
    /// poll however long that poll's dispatch takes.
    refire: Vec<(Instant, u64)>,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next_id: 0,
            refire: Vec::new(),
        }
    }
}

impl Timers {
    pub fn add(&mut self, token: Token, deadline: Instant, period: Option<Duration>) -> TimerId {
        self.next_id += 1;
        let id = self.next_id;
        self.heap.push(Reverse((deadline, id)));
        self.live.insert(
            id,
            Timer {
                token,
                period,
                deadline,
            },
        );
        TimerId {
            owner: self.owner,
            id,
        }
    }

    /// A poll starts: the timers that fired in the last one may fire again.
    pub fn new_poll(&mut self) {
        for (deadline, id) in self.refire.drain(..) {
            self.heap.push(Reverse((deadline, id)));
        }
    }

    pub fn cancel(&mut self, id: TimerId) -> bool {
        if id.owner != self.owner {
            return false;
        }
        let removed = self.live.remove(&id.id).is_some();
        // Cancelled entries leave the heap lazily; rebuild it before they pile up.
        if self.heap.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.heap.retain(|Reverse((deadline, id))| {
                live.get(id).is_some_and(|t| t.deadline == *deadline)
            });
        }
        removed
    }

    /// Drop every timer (teardown). The owner stays, so an old id still cancels nothing.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.live.clear();
        self.refire.clear();
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// The nearest live deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            match self.live.get(&id) {
                Some(t) if t.deadline == deadline => return Some(deadline),
                _ => {
                    self.heap.pop(); // cancelled or rescheduled
                }
            }
        }
        None
    }

    /// True if a timer is due at `now` (and has not fired in this poll).
    pub fn is_due(&mut self, now: Instant) -> bool {
        self.next_deadline().is_some_and(|d| d <= now)
    }

    /// Pop one timer due at `now`, rescheduling it if it repeats (from the next poll on). Returns
    /// its token.
    pub fn pop_due(&mut self, now: Instant) -> Option<Token> {
        let deadline = self.next_deadline()?;
        if deadline > now {
            return None;
        }
        let Reverse((_, id)) = self.heap.pop().expect("peeked");
        let timer = self.live.get_mut(&id).expect("checked live");
        let token = timer.token;
        match timer.period {
            Some(period) => {
                // Next tick on the period grid, skipping ticks missed while the loop was busy;
                // past the clock's range, it never fires again.
                let mut next = timer
                    .deadline
                    .checked_add(period)
                    .unwrap_or(far_future(now));
                if next <= now {
                    let behind = now.duration_since(timer.deadline).as_nanos();
                    let periods = behind / period.as_nanos().max(1) + 1;
                    next = u32::try_from(periods)
                        .ok()
                        .and_then(|n| timer.deadline.checked_add(period.checked_mul(n)?))
                        .filter(|&n| n > now)
                        .unwrap_or_else(|| now.checked_add(period).unwrap_or(far_future(now)));
                }
                timer.deadline = next;
                self.refire.push((next, id));
            }
            None => {
                self.live.remove(&id);
            }
        }
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_repeat() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(Token(2), now + Duration::from_millis(20), None);
        t.add(
            Token(1),
            now + Duration::from_millis(10),
            Some(Duration::from_millis(15)),
        );
        assert_eq!(t.pop_due(now), None);
        let later = now + Duration::from_millis(21);
        assert_eq!(t.pop_due(later), Some(Token(1)));
        assert_eq!(t.pop_due(later), Some(Token(2)));
        assert_eq!(t.pop_due(later), None, "repeat is due at 25 ms");
        t.new_poll();
        assert_eq!(t.pop_due(later), None, "repeat is due at 25 ms");
        let at_25 = now + Duration::from_millis(25);
        assert_eq!(t.pop_due(at_25), Some(Token(1)));
        assert_eq!(
            t.pop_due(at_25 + Duration::from_secs(1)),
            None,
            "once per poll"
        );
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancelled_timers_never_fire() {
        let mut t = Timers::default();
        let now = Instant::now();
        let id = t.add(Token(1), now, None);
        assert!(t.cancel(id));
        assert!(!t.cancel(id));
        assert_eq!(t.pop_due(now + Duration::from_secs(1)), None);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn huge_periods_and_many_cancels_are_harmless() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(Token(1), now, Some(Duration::MAX));
        assert_eq!(t.pop_due(now), Some(Token(1)));
        t.new_poll();
        assert_eq!(
            t.pop_due(now + Duration::from_secs(3600)),
            None,
            "next tick is far away"
        );
        t.add(Token(2), now, Some(Duration::from_nanos(1)));
        assert_eq!(t.pop_due(now + Duration::from_secs(10)), Some(Token(2)));
        t.new_poll();
        assert_eq!(
            t.pop_due(now + Duration::from_secs(10)),
            None,
            "one catch-up, not billions"
        );
        for _ in 0..10_000 {
            let id = t.add(Token(3), now + Duration::from_secs(1000), None);
            t.cancel(id);
        }
        assert!(
            t.heap.len() < 200,
            "cancelled timers pile up: {}",
            t.heap.len()
        );
    }

    #[test]
    fn a_late_repeating_timer_skips_missed_ticks() {
        let mut t = Timers::default();
        let now = Instant::now();
        t.add(Token(1), now, Some(Duration::from_millis(10)));
        assert_eq!(t.pop_due(now + Duration::from_millis(35)), Some(Token(1)));
        t.new_poll();
        assert_eq!(t.next_deadline(), Some(now + Duration::from_millis(40)));
    }

    #[test]
    fn ids_belong_to_their_timer_set() {
        let (mut one, mut two) = (Timers::default(), Timers::default());
        let now = Instant::now();
        let id = one.add(Token(1), now, None);
        two.add(Token(2), now, None);
        assert!(
            !two.cancel(id),
            "an id of one set cancelled a timer of another"
        );
        assert_eq!(two.pop_due(now), Some(Token(2)));
        assert!(one.cancel(id));
    }
}
