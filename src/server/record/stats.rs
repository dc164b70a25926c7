use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tonic::Code;

use super::Recorder;

/// Every gRPC code from `Ok` (0) to `Unauthenticated` (16).
const CODES: usize = 17;

/// Counts outcomes by code and sums their latencies; clones share the counts.
///
/// Each number is read on its own (relaxed), so a reading taken while calls end may mix
/// numbers from slightly different moments.
#[derive(Debug, Clone, Default)]
pub struct OutcomeStats {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    counts: [AtomicU64; CODES],
    latency_nanos: AtomicU64,
    max_latency_nanos: AtomicU64,
}

impl OutcomeStats {
    /// How many calls ended with `code`.
    pub fn count(&self, code: Code) -> u64 {
        self.inner.counts[code as usize].load(Ordering::Relaxed)
    }

    /// How many calls ended, whatever their code.
    pub fn total(&self) -> u64 {
        let counts = &self.inner.counts;
        counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// The mean latency of the calls that ended, or zero before any did.
    pub fn mean_latency(&self) -> Duration {
        let total = self.total();
        if total == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.inner.latency_nanos.load(Ordering::Relaxed) / total)
    }

    /// The longest latency of a call that ended.
    pub fn max_latency(&self) -> Duration {
        Duration::from_nanos(self.inner.max_latency_nanos.load(Ordering::Relaxed))
    }
}

impl Recorder for OutcomeStats {
    fn record(&self, code: Code, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        let inner = &self.inner;
        inner.counts[code as usize].fetch_add(1, Ordering::Relaxed);
        inner.latency_nanos.fetch_add(nanos, Ordering::Relaxed);
        inner.max_latency_nanos.fetch_max(nanos, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
    use tower_test::mock;

    use super::*;
    use crate::allocator::AllocationError;
    use crate::proto::{AllocationRequest, AllocationResponse};
    use crate::server::record::RecordLayer;

    #[tokio::test(start_paused = true)]
    async fn records_codes_and_latency_of_each_call() {
        let stats = OutcomeStats::default();
        let (service, mut handle) = mock::pair::<AllocationRequest, AllocationResponse>();
        let mut allocator = ServiceBuilder::new()
            .layer(RecordLayer::new(stats.clone()).unallocated(Code::NotFound))
            .service(service);

        let ok = allocator
            .ready()
            .await
            .unwrap()
            .call(AllocationRequest::default());
        let unallocated = allocator
            .ready()
            .await
            .unwrap()
            .call(AllocationRequest::default());
        let (_, first) = handle.next_request().await.unwrap();
        let (_, second) = handle.next_request().await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        first.send_response(AllocationResponse::default());
        second.send_error(AllocationError::Unallocated);

        assert!(ok.await.is_ok());
        let error: BoxError = unallocated.await.unwrap_err();
        assert!(error.is::<AllocationError>(), "the error passes unchanged");
        assert_eq!(stats.count(Code::Ok), 1);
        assert_eq!(stats.count(Code::NotFound), 1);
        assert_eq!(stats.total(), 2);
        assert_eq!(stats.max_latency(), Duration::from_millis(30));
        assert_eq!(stats.mean_latency(), Duration::from_millis(30));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_below_are_deadline_exceeded_and_dropped_calls_cancelled() {
        let stats = OutcomeStats::default();
        let (service, mut handle) = mock::pair::<AllocationRequest, AllocationResponse>();
        let mut allocator = ServiceBuilder::new()
            .layer(RecordLayer::new(stats.clone()))
            .timeout(Duration::from_secs(1))
            .service(service);

        let hanging = allocator
            .ready()
            .await
            .unwrap()
            .call(AllocationRequest::default());
        let _request = handle.next_request().await.unwrap();
        assert!(hanging.await.is_err());
        assert_eq!(stats.count(Code::DeadlineExceeded), 1);

        let abandoned = allocator
            .ready()
            .await
            .unwrap()
            .call(AllocationRequest::default());
        drop(abandoned);
        assert_eq!(stats.count(Code::Cancelled), 1);
        assert_eq!(stats.total(), 2);
    }
}
