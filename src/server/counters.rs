//! The handler's counters, shared by the pull loop, the stream workers and the batch tasks.

use std::sync::atomic::{AtomicU64, Ordering};

use tonic::Code;

/// Every gRPC code from `Ok` (0) to `Unauthenticated` (16).
const CODES: usize = 17;

/// Monotonic counters; read with relaxed ordering because each is a statistic on its own.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) pulls_sent: AtomicU64,
    pub(crate) pulls_skipped: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) requests: AtomicU64,
    answers: [AtomicU64; CODES],
    /// Streams opened and not registered yet: a gauge, not a counter.
    awaiting_registration: AtomicU64,
}

/// Counts one stream awaiting its registration until dropped.
#[derive(Debug)]
pub(crate) struct Awaiting<'a>(&'a AtomicU64);

impl Drop for Awaiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts one answer with `code`; a code outside the known range counts as `Unknown`.
    pub(crate) fn answered(&self, code: i32) {
        let index = usize::try_from(code)
            .ok()
            .filter(|index| *index < CODES)
            .unwrap_or(Code::Unknown as usize);
        Self::add(&self.answers[index], 1);
    }

    pub(crate) fn answers(&self, code: Code) -> u64 {
        Self::get(&self.answers[code as usize])
    }

    /// Counts a stream as awaiting its registration until the guard is dropped.
    pub(crate) fn awaiting_registration(&self) -> Awaiting<'_> {
        Self::add(&self.awaiting_registration, 1);
        Awaiting(&self.awaiting_registration)
    }

    /// How many streams await their registration now.
    pub(crate) fn awaiting(&self) -> u64 {
        Self::get(&self.awaiting_registration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_counted_by_code() {
        let counters = Counters::default();
        counters.answered(Code::Ok as i32);
        counters.answered(Code::InvalidArgument as i32);
        counters.answered(Code::InvalidArgument as i32);
        counters.answered(99);
        assert_eq!(counters.answers(Code::Ok), 1);
        assert_eq!(counters.answers(Code::InvalidArgument), 2);
        assert_eq!(counters.answers(Code::Unknown), 1);
    }
}
