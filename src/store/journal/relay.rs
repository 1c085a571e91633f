//! One wake-up per worker thread per group.
//!
//! The journal's writer answers every entry of a group at once. Answering
//! each entry's `oneshot` from the writer's thread wakes the waiting
//! request from outside its runtime, and a single-threaded runtime is
//! woken from outside through its driver: one `eventfd` write per entry,
//! and as many extra turns of the worker's event loop (measured at 32
//! connections: 0.94 writes per read from the journal's thread, and 0.62
//! `epoll_wait` calls per read on the worker against 0.11 in
//! pass-through; with the relay, 0.03 and 0.18).
//!
//! A relay is a task on the appending thread's runtime. The writer hands
//! it the answers of all its requests in a group and wakes it once; the
//! relay answers them from inside the runtime, where a wake-up is a push
//! on the local run queue.
//!
//! Only single-threaded runtimes get a relay (mdgate's workers are); on
//! any other, or outside a runtime, entries are answered directly, as
//! before. A relay belongs to one runtime: it is looked up by the
//! runtime's id, so a thread that drives several runtimes in turn never
//! hands an answer to a runtime that is not running.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{oneshot, Notify};

use super::JournalError;

/// An entry's answer: whether it is durable.
pub(super) type Answer = Result<(), JournalError>;
type Reply = (oneshot::Sender<Answer>, Answer);

/// The answers waiting for one runtime's relay task.
pub(super) struct Relay {
    runtime: tokio::runtime::Id,
    answers: Mutex<Vec<Reply>>,
    wake: Notify,
    /// `false` once the task is gone (its runtime shut down).
    alive: AtomicBool,
}

thread_local! {
    /// This thread's relays, one per runtime it appended from.
    static RELAYS: RefCell<Vec<Arc<Relay>>> = const { RefCell::new(Vec::new()) };
}

/// The relay of the runtime this is called on, started at its first use;
/// `None` where entries are answered directly.
pub(super) fn here() -> Option<Arc<Relay>> {
    let handle = Handle::try_current().ok()?;
    if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
        return None;
    }
    let id = handle.id();
    RELAYS.with(|relays| {
        let mut relays = relays.borrow_mut();
        relays.retain(|r| r.alive.load(Ordering::Acquire));
        if let Some(r) = relays.iter().find(|r| r.runtime == id) {
            return Some(r.clone());
        }
        let relay = Arc::new(Relay {
            runtime: id,
            answers: Mutex::new(Vec::new()),
            wake: Notify::new(),
            alive: AtomicBool::new(true),
        });
        handle.spawn(run(Running(relay.clone())));
        relays.push(relay.clone());
        Some(relay)
    })
}

/// Marks the relay gone when its task is dropped, polled or not.
struct Running(Arc<Relay>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::Release);
    }
}

async fn run(task: Running) {
    let relay = &task.0;
    loop {
        relay.wake.notified().await;
        let answers =
            std::mem::take(&mut *relay.answers.lock().unwrap_or_else(PoisonError::into_inner));
        for (done, answer) in answers {
            let _ = done.send(answer);
        }
    }
}

/// Answers a group's entries: through their relays, each woken once, or
/// directly where an entry has none or its relay is gone.
pub(super) fn answer_all(
    entries: impl IntoIterator<Item = (oneshot::Sender<Answer>, Option<Arc<Relay>>)>,
    answer: &Answer,
) {
    // Usually one relay per worker thread, and a handful of threads.
    let mut batches: Vec<(Arc<Relay>, Vec<Reply>)> = Vec::new();
    for (done, relay) in entries {
        match relay {
            Some(r) if r.alive.load(Ordering::Acquire) => {
                let reply = (done, answer.clone());
                match batches.iter_mut().find(|(b, _)| Arc::ptr_eq(b, &r)) {
                    Some((_, replies)) => replies.push(reply),
                    None => batches.push((r, vec![reply])),
                }
            }
            _ => {
                let _ = done.send(answer.clone());
            }
        }
    }
    for (relay, replies) in batches {
        relay
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(replies);
        relay.wake.notify_one();
        // Gone meanwhile: nobody waits for these any more, but do not
        // keep their senders.
        if !relay.alive.load(Ordering::Acquire) {
            relay
                .answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Answers sent from another thread through the relay reach every
    /// waiter, with the group's answer.
    #[test]
    fn answers_from_another_thread_reach_every_waiter() {
        let rt = runtime();
        rt.block_on(async {
            let relay = here().expect("a relay on a current-thread runtime");
            assert!(Arc::ptr_eq(&relay, &here().expect("same relay")));
            let (senders, waits): (Vec<_>, Vec<_>) =
                (0..50).map(|_| oneshot::channel::<Answer>()).unzip();
            let from = std::thread::spawn(move || {
                answer_all(
                    senders.into_iter().map(|s| (s, Some(relay.clone()))),
                    &Err(JournalError::Full),
                );
            });
            for w in waits {
                assert!(matches!(w.await, Ok(Err(JournalError::Full))));
            }
            from.join().expect("answering thread");
        });
    }

    /// A relay belongs to its runtime: a second runtime on the same thread
    /// gets its own, and once the first is dropped its relay is marked
    /// gone and answers go directly.
    #[test]
    fn each_runtime_has_its_own_relay_and_a_dropped_one_is_bypassed() {
        let first = runtime();
        let relay_one = first.block_on(async { here().expect("relay") });
        let second = runtime();
        let relay_two = second.block_on(async { here().expect("relay") });
        assert!(!Arc::ptr_eq(&relay_one, &relay_two));
        drop(first);
        assert!(!relay_one.alive.load(Ordering::Acquire));
        let (tx, rx) = oneshot::channel::<Answer>();
        answer_all([(tx, Some(relay_one.clone()))], &Ok(()));
        second.block_on(async {
            assert!(matches!(rx.await, Ok(Ok(()))));
            // The live runtime still finds its own relay.
            assert!(Arc::ptr_eq(&relay_two, &here().expect("relay")));
        });
        assert!(relay_one
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty());
    }

    /// No relay outside a runtime or on a multi-threaded one.
    #[test]
    fn only_current_thread_runtimes_get_a_relay() {
        assert!(here().is_none());
        let multi = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        multi.block_on(async { assert!(here().is_none()) });
    }
}
