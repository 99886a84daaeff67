//! The checkout queue: who gets a released connection or a freed slot.
//!
//! Whatever a checkout can be given is a [`Grant`]: an open connection, or a
//! [`Slot`] to open one in. A grant goes to the oldest waiter first; it is
//! sent through that waiter's oneshot while the pool's lock is held, so a
//! newcomer (who looks at the idle set under the same lock) can never take
//! it first. A waiter that leaves (acquire timeout, or its future dropped)
//! takes itself out of the queue under the lock; if a grant reached it in
//! the meantime, the grant is passed on instead of being lost.
//!
//! Nothing here may drop a [`Conn`] or a [`Slot`] while the lock is held:
//! freeing a slot takes the lock to hand the slot on.

use std::{
    collections::VecDeque,
    sync::{Arc, Weak},
};

use tokio::sync::oneshot;

use super::{Conn, PoolError, Shared};

/// What a waiter is given.
pub(super) enum Grant {
    /// An open connection, ready for reuse.
    Conn(Conn),
    /// A free place to open a connection in.
    Slot(Slot),
}

/// One of the pool's `max` places for a connection. Every live connection,
/// and every connect in progress, holds one; dropping it hands the place to
/// the oldest waiter, or gives it back.
pub(super) struct Slot {
    // Weak: idle connections live inside the pool; a strong reference would
    // keep a dropped pool (and its sockets) alive.
    shared: Weak<Shared>,
}

impl Slot {
    /// A slot the caller has already counted in `State::live`.
    pub(super) fn counted(shared: &Arc<Shared>) -> Self {
        Self {
            shared: Arc::downgrade(shared),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return; // the pool is gone
        };
        let unclaimed = {
            let mut st = shared.state();
            if st.waiters.is_empty() {
                st.live -= 1;
                None
            } else {
                // The place changes hands: `live` is unchanged.
                st.waiters.hand_over(Grant::Slot(Slot::counted(&shared)))
            }
        };
        // Every waiter had left: this drop finds the queue empty and
        // gives the place back.
        drop(unclaimed);
    }
}

/// The waiters, oldest first.
#[derive(Default)]
pub(super) struct Waiters {
    queue: VecDeque<Waiter>,
    next_id: u64,
}

struct Waiter {
    id: u64,
    /// Checked out with `Pool::get_while_ejected`: an eject does not fail it.
    while_ejected: bool,
    tx: oneshot::Sender<Grant>,
}

impl Waiters {
    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues a new waiter at the back.
    fn push(&mut self, while_ejected: bool) -> (u64, oneshot::Receiver<Grant>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(Waiter {
            id,
            while_ejected,
            tx,
        });
        (id, rx)
    }

    /// Takes waiter `id` out of the queue; false if a grant was already
    /// sent to it (or the queue was cleared).
    fn remove(&mut self, id: u64) -> bool {
        let before = self.queue.len();
        self.queue.retain(|w| w.id != id);
        self.queue.len() != before
    }

    /// Gives `grant` to the oldest waiter still listening; returns it when
    /// there is none. Call with the pool's lock held.
    pub(super) fn hand_over(&mut self, mut grant: Grant) -> Option<Grant> {
        while let Some(w) = self.queue.pop_front() {
            match w.tx.send(grant) {
                Ok(()) => return None,
                // That waiter's receiver is gone: try the next one.
                Err(back) => grant = back,
            }
        }
        Some(grant)
    }

    /// Takes out every waiter not allowed while ejected; they see their
    /// sender dropped (once the caller drops what this returns).
    pub(super) fn eject(&mut self) -> Vec<oneshot::Sender<Grant>> {
        let (stay, leave): (VecDeque<_>, VecDeque<_>) =
            self.queue.drain(..).partition(|w| w.while_ejected);
        self.queue = stay;
        leave.into_iter().map(|w| w.tx).collect()
    }
}

/// A checkout's place in the queue. Dropping it leaves the queue; a grant
/// that reached it first is passed on.
pub(super) struct Waiting {
    id: u64,
    rx: oneshot::Receiver<Grant>,
    shared: Arc<Shared>,
    /// Set once the outcome is known, so that dropping does nothing.
    done: bool,
}

impl Waiting {
    /// Joins the back of the queue. Call with the pool's lock held, `waiters`
    /// being that lock's queue.
    pub(super) fn join(shared: &Arc<Shared>, waiters: &mut Waiters, while_ejected: bool) -> Self {
        let (id, rx) = waiters.push(while_ejected);
        Self {
            id,
            rx,
            shared: Arc::clone(shared),
            done: false,
        }
    }

    /// Waits for a grant until `deadline`.
    pub(super) async fn wait(mut self, deadline: tokio::time::Instant) -> Result<Grant, PoolError> {
        let outcome = match tokio::time::timeout_at(deadline, &mut self.rx).await {
            Ok(Ok(grant)) => Ok(grant),
            // Dropped unsent: the pool was ejected (never happens to a
            // waiter allowed while ejected).
            Ok(Err(_)) => Err(PoolError::Ejected),
            // A grant sent at the last moment is taken rather than wasted.
            Err(_) => self.leave().ok_or(PoolError::Timeout),
        };
        self.done = true;
        outcome
    }

    /// Leaves the queue; returns a grant that was sent before we left.
    fn leave(&mut self) -> Option<Grant> {
        if self.shared.state().waiters.remove(self.id) {
            return None;
        }
        // Not queued any more: any grant was sent under the lock, before
        // `remove` could take it, so it is in the channel now.
        self.rx.try_recv().ok()
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        match self.leave() {
            Some(Grant::Conn(conn)) => self.shared.release(conn),
            // Dropping the slot hands it on.
            Some(Grant::Slot(slot)) => drop(slot),
            None => {}
        }
    }
}
