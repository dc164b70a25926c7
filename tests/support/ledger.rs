//! A ledger of calls and allocations for fault scenarios.
//!
//! Every call a scenario makes is opened in the ledger with a unique key, which travels in the
//! request as the metadata label [`KEY_LABEL`]; the allocator wrapped by
//! [`Ledger::allocator`] records which game server it allocated for which key. When every call
//! has ended, [`Ledger::verify`] checks the books and returns the counts by outcome.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use agones_processor::{
    AllocationRequest, AllocationResponse,
    allocator::{AllocationError, Fleet},
    client::Error,
    proto::MetaPatch,
};
use tower::{Service, service_fn};

/// The metadata label carrying a call's ledger key.
pub(crate) const KEY_LABEL: &str = "ledger-key";

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Answered with this game server.
    Allocated(String),
    /// Answered with the allocator's refusal, of this gRPC code.
    Refused(tonic::Code),
    /// The client's allocation timeout.
    Timeout,
    /// The stream broke after the request was sent.
    Unknown,
    /// The client closed.
    Closed,
    /// The caller dropped the call while the client could not have sent it.
    DroppedUnsent,
    /// The caller's process died with the call.
    Gone,
}

impl Outcome {
    /// The name the counts use.
    pub(crate) fn name(&self) -> String {
        match self {
            Self::Allocated(_) => "allocated".into(),
            Self::Refused(code) => format!("refused {code:?}"),
            Self::Timeout => "timeout".into(),
            Self::Unknown => "outcome unknown".into(),
            Self::Closed => "closed".into(),
            Self::DroppedUnsent => "dropped unsent".into(),
            Self::Gone => "gone with its process".into(),
        }
    }

    /// The outcome of a client call's result.
    fn of(result: &Result<AllocationResponse, Error>) -> Self {
        match result {
            Ok(response) => Self::Allocated(response.game_server_name.clone()),
            Err(Error::Allocation(status)) => Self::Refused(status.code()),
            Err(Error::Timeout(_)) => Self::Timeout,
            Err(Error::OutcomeUnknown) => Self::Unknown,
            Err(Error::Closed) => Self::Closed,
            Err(other) => panic!("a call ended with an unexpected error: {other:?}"),
        }
    }
}

/// One call's entry.
#[derive(Debug)]
struct Call {
    client: String,
    ended: Option<(Outcome, Instant)>,
}

/// What an allocator did for one key.
#[derive(Debug, Default)]
struct Allocations {
    /// Calls of the allocator for the key.
    calls: usize,
    /// Game servers allocated for the key, with the allocator instance that did it.
    game_servers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Books {
    next_key: u64,
    calls: HashMap<String, Call>,
    allocations: HashMap<String, Allocations>,
}

/// The ledger of one scenario; clones share the books.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    books: Arc<Mutex<Books>>,
}

impl Ledger {
    fn books(&self) -> MutexGuard<'_, Books> {
        // A failed assertion elsewhere must not hide behind a poisoned lock.
        self.books.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a call by `client` and returns its key and its request.
    pub(crate) fn open(&self, client: &str) -> (String, AllocationRequest) {
        let mut books = self.books();
        let key = format!("k{}", books.next_key);
        books.next_key += 1;
        books.calls.insert(
            key.clone(),
            Call {
                client: client.to_owned(),
                ended: None,
            },
        );
        let request = AllocationRequest {
            namespace: "default".into(),
            metadata: Some(MetaPatch {
                labels: [(KEY_LABEL.to_owned(), key.clone())].into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        (key, request)
    }

    /// Ends the call `key` with the client's result.
    pub(crate) fn end(&self, key: &str, result: &Result<AllocationResponse, Error>) {
        self.end_with(key, Outcome::of(result));
    }

    /// Ends the call `key` with `outcome`.
    ///
    /// # Panics
    ///
    /// The call was never opened, or ended already.
    pub(crate) fn end_with(&self, key: &str, outcome: Outcome) {
        let mut books = self.books();
        let call = books.calls.get_mut(key).expect("an opened call");
        assert!(
            call.ended.is_none(),
            "{key} ended twice: {:?} then {outcome:?}",
            call.ended
        );
        call.ended = Some((outcome, Instant::now()));
    }

    /// The outcome of call `key`, if it ended.
    pub(crate) fn outcome(&self, key: &str) -> Option<Outcome> {
        let books = self.books();
        books.calls[key]
            .ended
            .as_ref()
            .map(|(outcome, _)| outcome.clone())
    }

    /// The keys of the calls made by `client`, sorted.
    pub(crate) fn keys_of(&self, client: &str) -> Vec<String> {
        let books = self.books();
        let mut keys: Vec<String> = books
            .calls
            .iter()
            .filter(|(_, call)| call.client == client)
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Whether the allocator was called for `key`.
    pub(crate) fn reached_allocator(&self, key: &str) -> bool {
        self.books().allocations.contains_key(key)
    }

    /// How many keys reached an allocator, in all.
    pub(crate) fn allocator_calls(&self) -> usize {
        self.books().allocations.len()
    }

    /// How many game servers the allocator `instance` allocated.
    pub(crate) fn allocated_by(&self, instance: &str) -> usize {
        let books = self.books();
        books
            .allocations
            .values()
            .flat_map(|allocations| &allocations.game_servers)
            .filter(|(by, _)| by == instance)
            .count()
    }

    /// A per-request allocator over `fleet` that records what it allocates as `instance`.
    ///
    /// It decides at once, in `call`, and answers `delay` later, so a batch stays in flight
    /// for that long after its game servers were allocated.
    pub(crate) fn allocator(
        &self,
        instance: &str,
        fleet: Fleet,
        delay: Duration,
    ) -> impl Service<
        AllocationRequest,
        Response = AllocationResponse,
        Error = AllocationError,
        Future: Send,
    > + Clone
    + Send
    + Sync
    + 'static {
        let ledger = self.clone();
        let instance = instance.to_owned();
        service_fn(move |request: AllocationRequest| {
            let result = fleet.allocate(&request);
            let key = request
                .metadata
                .as_ref()
                .and_then(|metadata| metadata.labels.get(KEY_LABEL))
                .expect("every scenario request carries its key")
                .clone();
            {
                let mut books = ledger.books();
                let allocations = books.allocations.entry(key).or_default();
                allocations.calls += 1;
                if let Ok(response) = &result {
                    allocations
                        .game_servers
                        .push((instance.clone(), response.game_server_name.clone()));
                }
            }
            async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                result
            }
        })
    }

    /// Checks the books and returns the number of calls by outcome, plus `reached allocator`
    /// and `allocated, answer lost` (allocated for a call that did not get the answer).
    ///
    /// # Panics
    ///
    /// A call never ended; an answer names a game server not allocated for its call; a call
    /// dropped unsent reached the allocator; a request reached the allocator twice; one
    /// allocator instance gave a game server to two calls.
    pub(crate) fn verify(&self) -> BTreeMap<String, usize> {
        let books = self.books();
        let mut counts = BTreeMap::new();
        let mut lost = 0;
        for (key, call) in &books.calls {
            let (outcome, _) = call
                .ended
                .as_ref()
                .unwrap_or_else(|| panic!("{key} of {} never ended", call.client));
            *counts.entry(outcome.name()).or_insert(0) += 1;
            let allocations = books.allocations.get(key);
            if let Some(allocations) = allocations {
                assert_eq!(allocations.calls, 1, "{key} reached the allocator twice");
            }
            let allocated = allocations.and_then(|allocations| allocations.game_servers.first());
            match outcome {
                Outcome::Allocated(name) => assert_eq!(
                    allocated.map(|(_, game_server)| game_server),
                    Some(name),
                    "{key} was answered with a game server not allocated for it"
                ),
                Outcome::DroppedUnsent => assert!(
                    allocations.is_none(),
                    "{key} was dropped before it was sent, yet reached the allocator"
                ),
                _ => lost += usize::from(allocated.is_some()),
            }
        }
        let mut given = HashSet::new();
        for allocations in books.allocations.values() {
            for game_server in &allocations.game_servers {
                assert!(given.insert(game_server), "{game_server:?} given twice");
            }
        }
        counts.insert("reached allocator".into(), books.allocations.len());
        counts.insert("allocated, answer lost".into(), lost);
        counts
    }
}
