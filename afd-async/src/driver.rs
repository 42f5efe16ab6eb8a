//! The thread's reactor: one [`Reactor`] per thread, the registrations and timers it serves, and
//! the dispatch of its events to the tasks that wait for them.

use crate::source::Source;
use crate::wait::WaitSource;
use afd_reactor::kernel::{Kernel, RawWaitable};
use afd_reactor::{
    Events, Interest, Mode, Reactor, Source as Registrable, Stats, Teardown, TimerId, Token,
};
use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

/// The token of the reactor waker that ends a blocking `poll` when a task is woken from another
/// thread. Wake events are told apart by `is_wake`, so it may equal a socket's or timer's token.
const WAKE_TOKEN: Token = Token(usize::MAX);

/// How many events one `poll` may return.
const EVENTS: usize = 1024;

/// What the async layer asks of a reactor, whatever its kernel: `Reactor<K>` with the kernel
/// type erased, so the layer's types need no kernel parameter.
pub(crate) trait Backend {
    fn register(&mut self, s: &dyn Registrable, token: Token, interest: Interest)
    -> io::Result<()>;
    fn rearm(&mut self, s: &dyn Registrable, interest: Interest) -> io::Result<()>;
    fn disarm(&mut self, s: &dyn Registrable, interest: Interest) -> io::Result<()>;
    fn deregister(&mut self, s: &dyn Registrable) -> io::Result<()>;
    /// Register the waitable handle whose value is `raw` in `Mode::Oneshot` (armed at once).
    /// `raw` must have been read from a handle the caller keeps open for the call (see
    /// [`RawHandle`]).
    fn register_waitable(&mut self, raw: RawWaitable, token: Token) -> io::Result<()>;
    /// Re-arm the waitable registered under `raw` (no kernel call until the next `poll`).
    fn reregister_waitable(&mut self, raw: RawWaitable, token: Token) -> io::Result<()>;
    /// Deregister the waitable registered under `raw`: true if a signal its wait consumed was
    /// not delivered.
    fn deregister_waitable(&mut self, raw: RawWaitable) -> io::Result<bool>;
    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()>;
    fn waker(&mut self, token: Token) -> io::Result<afd_reactor::Waker>;
    fn add_timer(&mut self, token: Token, delay: Duration) -> io::Result<TimerId>;
    fn cancel_timer(&mut self, id: TimerId) -> bool;
    fn stats(&self) -> Stats;
    fn shutdown(&mut self) -> io::Result<Teardown>;
    #[cfg(feature = "test-rig")]
    fn kernel_any(&self) -> &dyn std::any::Any;
}

impl<K: Kernel + 'static> Backend for Reactor<K> {
    fn register(
        &mut self,
        s: &dyn Registrable,
        token: Token,
        interest: Interest,
    ) -> io::Result<()> {
        self.register_with_mode(s, token, interest, Mode::Edge)
    }
    fn rearm(&mut self, s: &dyn Registrable, interest: Interest) -> io::Result<()> {
        Reactor::rearm(self, s, interest)
    }
    fn disarm(&mut self, s: &dyn Registrable, interest: Interest) -> io::Result<()> {
        Reactor::disarm(self, s, interest)
    }
    fn deregister(&mut self, s: &dyn Registrable) -> io::Result<()> {
        Reactor::deregister(self, s)
    }
    fn register_waitable(&mut self, raw: RawWaitable, token: Token) -> io::Result<()> {
        Reactor::register_waitable_with_mode(self, &RawHandle(raw), token, Mode::Oneshot)
    }
    fn reregister_waitable(&mut self, raw: RawWaitable, token: Token) -> io::Result<()> {
        Reactor::reregister_waitable(self, &RawHandle(raw), token)
    }
    fn deregister_waitable(&mut self, raw: RawWaitable) -> io::Result<bool> {
        Reactor::deregister_waitable(self, &RawHandle(raw))
    }
    fn poll(&mut self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        Reactor::poll(self, events, timeout)
    }
    fn waker(&mut self, token: Token) -> io::Result<afd_reactor::Waker> {
        Reactor::waker(self, token)
    }
    fn add_timer(&mut self, token: Token, delay: Duration) -> io::Result<TimerId> {
        Reactor::add_timer(self, token, delay, None)
    }
    fn cancel_timer(&mut self, id: TimerId) -> bool {
        Reactor::cancel_timer(self, id)
    }
    fn stats(&self) -> Stats {
        Reactor::stats(self)
    }
    fn shutdown(&mut self) -> io::Result<Teardown> {
        Reactor::shutdown(self)
    }
    #[cfg(feature = "test-rig")]
    fn kernel_any(&self) -> &dyn std::any::Any {
        self.kernel()
    }
}

/// A waitable handle's value, read once from the user's handle by
/// [`Waitable::new`](crate::Waitable::new), which passes it to the reactor through the erased [`Backend`] (whose
/// methods cannot be generic).
struct RawHandle(RawWaitable);

// SAFETY: `Waitable` asks that the value name a handle the implementer owns or borrows for the
// duration of the call. A `RawHandle` is made only by the `Backend` methods above, for one call,
// from a value that `crate::Waitable<T>` read from its own `T: afd_reactor::Waitable` (whose own
// implementation vouches for it) when it was made. The `Waitable<T>` owns that `T` (a handle, or
// a borrow of one for `T`'s lifetime) and hands out only `&T`, from before `register_waitable`
// until after `deregister_waitable` (in `into_inner` and in its drop, before `T` is dropped), so
// during every call the value still names the handle it was read from. (After registration the
// reactor uses the value only as the registration's key: it waits on a duplicate of its own.)
unsafe impl afd_reactor::Waitable for RawHandle {
    fn raw_waitable(&self) -> RawWaitable {
        self.0
    }
}

/// A vector with reusable keys.
pub(crate) struct Slab<T> {
    entries: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    const fn new() -> Self {
        Self {
            entries: Vec::new(),
            free: Vec::new(),
        }
    }
    pub(crate) fn insert(&mut self, value: T) -> usize {
        match self.free.pop() {
            Some(key) => {
                self.entries[key] = Some(value);
                key
            }
            None => {
                self.entries.push(Some(value));
                self.entries.len() - 1
            }
        }
    }
    pub(crate) fn remove(&mut self, key: usize) -> Option<T> {
        let value = self.entries.get_mut(key)?.take();
        if value.is_some() {
            self.free.push(key);
        }
        value
    }
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        self.entries.get(key)?.as_ref()
    }
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.entries.get_mut(key)?.as_mut()
    }
    pub(crate) fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().flatten()
    }
}

/// One timer of the thread: the reactor timer behind it and the task waiting for it.
pub(crate) struct TimerSlot {
    pub(crate) id: Option<TimerId>,
    pub(crate) fired: bool,
    pub(crate) waker: Option<Waker>,
}

/// The thread's reactor and everything it serves.
pub(crate) struct Driver {
    backend: RefCell<Box<dyn Backend>>,
    sources: RefCell<Slab<Rc<Source>>>,
    /// Registered waitables; a waitable's token is its key (`Event::is_waitable` tells its events
    /// from a socket's with the same key).
    waitables: RefCell<Slab<Rc<WaitSource>>>,
    timers: RefCell<Slab<TimerSlot>>,
    events: RefCell<Events>,
    /// Wakers taken out of the sources during a dispatch, woken once no borrow is held.
    to_wake: RefCell<Vec<Waker>>,
    /// Ends a blocking `poll` from another thread.
    pub(crate) reactor_waker: afd_reactor::Waker,
    /// How many `block_on`s drive this driver now (nested ones count).
    running: Cell<usize>,
}

/// A `block_on` driving a driver, while it lives.
pub(crate) struct Running<'a>(&'a Driver);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.set(self.0.running.get() - 1);
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Driver>>> = const { RefCell::new(None) };
}

impl Driver {
    fn new(mut backend: Box<dyn Backend>) -> io::Result<Self> {
        let reactor_waker = backend.waker(WAKE_TOKEN)?;
        Ok(Self {
            backend: RefCell::new(backend),
            sources: RefCell::new(Slab::new()),
            waitables: RefCell::new(Slab::new()),
            timers: RefCell::new(Slab::new()),
            events: RefCell::new(Events::with_capacity(EVENTS)),
            to_wake: RefCell::new(Vec::new()),
            reactor_waker,
            running: Cell::new(0),
        })
    }

    /// The thread's driver, made with the platform's reactor on first use.
    pub(crate) fn current() -> io::Result<Rc<Driver>> {
        CURRENT
            .try_with(|cell| {
                if let Some(d) = &*cell.borrow() {
                    return Ok(Rc::clone(d));
                }
                let driver = Rc::new(Driver::new(default_backend()?)?);
                *cell.borrow_mut() = Some(Rc::clone(&driver));
                Ok(driver)
            })
            .unwrap_or_else(|_| Err(thread_exiting()))
    }

    /// Make `reactor` the thread's reactor. Fails if the thread already has one.
    pub(crate) fn install(backend: Box<dyn Backend>) -> io::Result<()> {
        CURRENT.try_with(|cell| {
            if cell.borrow().is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "afd-async: this thread already has a reactor (with_reactor must come before \
                     the thread's first Async, Timer or block_on)",
                ));
            }
            *cell.borrow_mut() = Some(Rc::new(Driver::new(backend)?));
            Ok(())
        })
        .unwrap_or_else(|_| Err(thread_exiting()))
    }

    /// True if this is the thread's driver (without taking a reference to it).
    pub(crate) fn is_current(&self) -> bool {
        CURRENT
            .try_with(|cell| {
                cell.borrow()
                    .as_ref()
                    .is_some_and(|d| std::ptr::eq(&**d, self))
            })
            .unwrap_or(false)
    }

    /// The thread's driver if it has one (never makes one).
    pub(crate) fn existing() -> Option<Rc<Driver>> {
        CURRENT
            .try_with(|cell| cell.borrow().clone())
            .ok()
            .flatten()
    }

    /// Forget the thread's driver; it is torn down once the last `Async` and `Timer` using it
    /// are dropped. Returns whether there was one; refused while a `block_on` drives it (its
    /// tasks would be left waiting on a reactor nobody drives).
    pub(crate) fn uninstall() -> io::Result<Option<Rc<Driver>>> {
        CURRENT
            .try_with(|cell| {
                if cell.borrow().as_ref().is_some_and(|d| d.running.get() > 0) {
                    return Err(io::Error::new(
                        io::ErrorKind::ResourceBusy,
                        "afd-async: a block_on is driving this thread's reactor",
                    ));
                }
                Ok(cell.borrow_mut().take())
            })
            .unwrap_or(Ok(None))
    }

    /// Count a `block_on` driving this driver, while the result lives.
    pub(crate) fn enter(&self) -> Running<'_> {
        self.running.set(self.running.get() + 1);
        Running(self)
    }

    pub(crate) fn backend(&self) -> std::cell::RefMut<'_, Box<dyn Backend>> {
        self.backend.borrow_mut()
    }

    pub(crate) fn stats(&self) -> Stats {
        self.backend.borrow().stats()
    }

    pub(crate) fn shutdown(&self) -> io::Result<Teardown> {
        self.backend.borrow_mut().shutdown()
    }

    #[cfg(feature = "test-rig")]
    pub(crate) fn with_kernel<K: 'static, R>(&self, f: impl FnOnce(&K) -> R) -> Option<R> {
        let backend = self.backend.borrow();
        backend.kernel_any().downcast_ref::<K>().map(f)
    }

    /// Register `io` (readable and writable, in `Edge` mode, disarmed: a direction is armed
    /// when a task first waits for it) and keep its source: its key is its token.
    pub(crate) fn add_source(&self, io: &dyn Registrable) -> io::Result<Rc<Source>> {
        let both = Interest::READABLE | Interest::WRITABLE;
        let mut sources = self.sources.borrow_mut();
        let source = Rc::new(Source::new());
        let key = sources.insert(Rc::clone(&source));
        source.key.set(key);
        let mut backend = self.backend.borrow_mut();
        if let Err(e) = backend.register(io, Token(key), both) {
            // Nothing of ours was registered (`AlreadyExists` means someone else's is: leave it).
            sources.remove(key);
            return Err(e);
        }
        if let Err(e) = backend.disarm(io, both) {
            let _ = backend.deregister(io);
            sources.remove(key);
            return Err(e);
        }
        Ok(source)
    }

    /// Deregister `io` and forget its source.
    pub(crate) fn remove_source(&self, source: &Source, io: &dyn Registrable) -> io::Result<()> {
        let result = self.backend.borrow_mut().deregister(io);
        let removed = self.sources.borrow_mut().remove(source.key.get());
        // Dropped with no borrow held: the wakers it may still hold run code of their own.
        drop(removed);
        result
    }

    /// Register the waitable handle whose value is `raw` (read from the caller's handle, which
    /// it keeps open until `remove_waitable`) in `Oneshot` mode, armed, and keep its state.
    pub(crate) fn add_waitable(&self, raw: RawWaitable) -> io::Result<Rc<WaitSource>> {
        let mut waitables = self.waitables.borrow_mut();
        let source = Rc::new(WaitSource::new(raw));
        let key = waitables.insert(Rc::clone(&source));
        source.key.set(key);
        if let Err(e) = self.backend.borrow_mut().register_waitable(raw, Token(key)) {
            waitables.remove(key);
            return Err(e);
        }
        Ok(source)
    }

    /// Re-arm a waitable (after its event, or a failure to arm): no kernel call now, one at the
    /// reactor's next turn.
    pub(crate) fn rearm_waitable(&self, source: &WaitSource) -> io::Result<()> {
        self.backend
            .borrow_mut()
            .reregister_waitable(source.raw, Token(source.key.get()))
    }

    /// Deregister a waitable and forget its state: true if a signal its wait consumed was not
    /// delivered (the reactor's answer).
    pub(crate) fn remove_waitable(&self, source: &WaitSource) -> io::Result<bool> {
        let result = self.backend.borrow_mut().deregister_waitable(source.raw);
        let removed = self.waitables.borrow_mut().remove(source.key.get());
        // Dropped with no borrow held: the wakers it may still hold run code of their own.
        drop(removed);
        result
    }

    pub(crate) fn add_timer(&self, delay: Duration) -> io::Result<usize> {
        let mut timers = self.timers.borrow_mut();
        let key = timers.insert(TimerSlot {
            id: None,
            fired: false,
            waker: None,
        });
        match self.backend.borrow_mut().add_timer(Token(key), delay) {
            Ok(id) => {
                if let Some(slot) = timers.get_mut(key) {
                    slot.id = Some(id);
                }
                Ok(key)
            }
            Err(e) => {
                timers.remove(key);
                Err(e)
            }
        }
    }

    /// Poll timer `key`: true once it fired (then it is gone), else its waker is kept.
    pub(crate) fn poll_timer(&self, key: usize, waker: &Waker) -> bool {
        // What is replaced or removed is dropped after the borrow ends: a waker's drop runs code
        // of its own, which may use the timers.
        let mut timers = self.timers.borrow_mut();
        let Some(slot) = timers.get_mut(key) else {
            return true;
        };
        if slot.fired {
            let gone = timers.remove(key);
            drop(timers);
            drop(gone);
            return true;
        }
        let old = match &mut slot.waker {
            Some(w) if w.will_wake(waker) => None,
            w => w.replace(waker.clone()),
        };
        drop(timers);
        drop(old);
        false
    }

    pub(crate) fn remove_timer(&self, key: usize) {
        let removed = self.timers.borrow_mut().remove(key);
        if let Some(TimerSlot {
            id: Some(id),
            fired: false,
            ..
        }) = &removed
        {
            self.backend.borrow_mut().cancel_timer(*id);
        }
        drop(removed);
    }

    /// What this driver holds.
    pub(crate) fn held(&self) -> crate::Held {
        let sources = self.sources.borrow();
        let waitables = self.waitables.borrow();
        let waiters = sources
            .iter()
            .filter_map(|s| s.state.try_borrow().ok())
            .map(|s| s.dirs.iter().map(|d| d.waiters.len()).sum::<usize>())
            .sum::<usize>()
            + waitables
                .iter()
                .filter_map(|w| w.state.try_borrow().ok())
                .map(|w| w.waiters.len())
                .sum::<usize>();
        crate::Held {
            sources: sources.len(),
            waitables: waitables.len(),
            timers: self.timers.borrow().len(),
            waiters,
        }
    }

    /// Wait for events (at most `timeout`), call `awake`, and wake the tasks they concern.
    pub(crate) fn react(&self, timeout: Option<Duration>, awake: impl FnOnce()) -> io::Result<()> {
        let mut to_wake = std::mem::take(&mut *self.to_wake.borrow_mut());
        {
            let mut events = self.events.borrow_mut();
            let polled = self.backend.borrow_mut().poll(&mut events, timeout);
            awake();
            polled?;
            let sources = self.sources.borrow();
            let waitables = self.waitables.borrow();
            let mut timers = self.timers.borrow_mut();
            for event in events.iter() {
                let key = event.token().0;
                if event.is_wake() {
                    continue;
                }
                if event.is_timer() {
                    if let Some(slot) = timers.get_mut(key) {
                        slot.fired = true;
                        to_wake.extend(slot.waker.take());
                    }
                } else if event.is_waitable() {
                    // A waitable's signal, or its error event (it could not be re-armed): the
                    // flag tells it from a socket's event on the same key.
                    if let Some(w) = waitables.get(key) {
                        w.on_event(event, &mut to_wake);
                    }
                } else if let Some(source) = sources.get(key) {
                    source.on_event(event, &mut to_wake);
                }
            }
        }
        // No borrow is held: a waker may do anything, even drop an `Async`.
        for waker in to_wake.drain(..) {
            waker.wake();
        }
        let mut kept = self.to_wake.borrow_mut();
        if kept.capacity() < to_wake.capacity() {
            *kept = to_wake;
        }
        Ok(())
    }
}

/// The error of using the async layer in a thread-local destructor, once the thread's reactor
/// is gone.
fn thread_exiting() -> io::Error {
    io::Error::other("afd-async: the thread is exiting: its reactor is gone")
}

/// How long a `Timer` at `when` waits from now.
pub(crate) fn delay_until(when: Instant) -> Duration {
    when.saturating_duration_since(Instant::now())
}

#[cfg(windows)]
fn default_backend() -> io::Result<Box<dyn Backend>> {
    Ok(Box::new(afd_reactor::NtReactor::new()?))
}

#[cfg(target_os = "linux")]
fn default_backend() -> io::Result<Box<dyn Backend>> {
    Ok(Box::new(afd_reactor::EpollReactor::new()?))
}

#[cfg(not(any(windows, target_os = "linux")))]
fn default_backend() -> io::Result<Box<dyn Backend>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "afd-async: no reactor for this platform (Windows and Linux have one); install one with \
         with_reactor",
    ))
}
