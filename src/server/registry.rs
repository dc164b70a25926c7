//! The registry of connected clients, each with the only writer of its stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::proto::ProcessorMessage;

/// The sending half of a stream's outbound queue.
///
/// The response stream of an RPC is the receiving half, so whatever is sent here, and only that,
/// reaches the client: pulls and batch responses share this queue and never write to the stream
/// concurrently.
pub(crate) type Outbound = mpsc::Sender<Result<ProcessorMessage, tonic::Status>>;

/// Registered clients by id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    clients: Mutex<HashMap<String, Entry>>,
    next_connection: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    /// Tells this registration from a newer one with the same client id.
    connection: u64,
    outbound: Outbound,
    /// Dropped when a newer registration takes this entry's place.
    _replaced: oneshot::Sender<()>,
}

/// What a stream keeps of its registration.
#[derive(Debug)]
pub(crate) struct Registration {
    /// The key to pass to [`Registry::deregister`].
    pub(crate) connection: u64,
    /// Resolves when a newer registration with the same client id replaced this one.
    pub(crate) replaced: oneshot::Receiver<()>,
    /// Whether this registration took the place of an earlier one.
    pub(crate) replacing: bool,
}

/// The registry already holds its most clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

impl Registry {
    /// Registers `outbound` under `client_id`, replacing any earlier registration of that id.
    ///
    /// A new id is refused when `max_clients` are registered already; a replacement is not,
    /// since it does not add a client.
    pub(crate) fn register(
        &self,
        client_id: &str,
        outbound: Outbound,
        max_clients: usize,
    ) -> Result<Registration, Full> {
        let mut clients = self.lock();
        if clients.len() >= max_clients && !clients.contains_key(client_id) {
            return Err(Full);
        }
        let connection = self.next_connection.fetch_add(1, Ordering::Relaxed);
        let (replaced_tx, replaced) = oneshot::channel();
        let entry = Entry {
            connection,
            outbound,
            _replaced: replaced_tx,
        };
        let previous = clients.insert(client_id.to_owned(), entry);
        Ok(Registration {
            connection,
            replaced,
            replacing: previous.is_some(),
        })
    }

    /// Removes `client_id` if it is still registered by `connection`.
    ///
    /// A stream that was replaced finds the newer registration under its id and leaves it alone.
    pub(crate) fn deregister(&self, client_id: &str, connection: u64) -> bool {
        let mut clients = self.lock();
        match clients.get(client_id) {
            Some(entry) if entry.connection == connection => {
                clients.remove(client_id);
                true
            }
            _ => false,
        }
    }

    /// The registered client ids, sorted.
    pub(crate) fn client_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().keys().cloned().collect();
        ids.sort_unstable();
        ids
    }

    /// Calls `f` with every registered client id and outbound queue.
    ///
    /// The registry stays locked meanwhile, so `f` must not wait.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&str, &Outbound)) {
        for (client_id, entry) in self.lock().iter() {
            f(client_id, &entry.outbound);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // Nothing panics while holding the lock in this crate; should a caller's closure do so,
        // the map itself is still consistent.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound() -> Outbound {
        mpsc::channel(1).0
    }

    #[test]
    fn replaced_registration_cannot_remove_the_newer_one() {
        let registry = Registry::default();
        let mut first = registry.register("a", outbound(), 10).unwrap();
        assert!(!first.replacing);
        let second = registry.register("a", outbound(), 10).unwrap();
        assert!(second.replacing);

        assert!(matches!(
            first.replaced.try_recv(),
            Err(oneshot::error::TryRecvError::Closed)
        ));
        assert!(!registry.deregister("a", first.connection));
        assert_eq!(registry.client_ids(), ["a"]);

        assert!(registry.deregister("a", second.connection));
        assert!(registry.client_ids().is_empty());
    }

    #[test]
    fn client_ids_are_sorted() {
        let registry = Registry::default();
        for id in ["c", "a", "b"] {
            registry.register(id, outbound(), 10).unwrap();
        }
        assert_eq!(registry.client_ids(), ["a", "b", "c"]);
    }

    #[test]
    fn new_ids_beyond_the_limit_are_refused_but_replacements_are_not() {
        let registry = Registry::default();
        registry.register("a", outbound(), 2).unwrap();
        registry.register("b", outbound(), 2).unwrap();
        assert_eq!(registry.register("c", outbound(), 2).err(), Some(Full));
        assert!(registry.register("a", outbound(), 2).unwrap().replacing);
        assert_eq!(registry.client_ids(), ["a", "b"]);
    }
}
