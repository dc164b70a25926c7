//! The handler's lifecycle: running, draining for shutdown, closing its streams.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// Where the handler is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Pulling (while leading) and answering.
    Running,
    /// Shutting down: no more pulls, batches in flight are finished and answered.
    Draining,
    /// Shutting down: every stream ends.
    Closing,
}

/// The phase, and what is still in flight, for the shutdown to wait on.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    phase: watch::Sender<Phase>,
    /// Whether the pull loop is pulling; it publishes this itself.
    pulling: watch::Sender<bool>,
    batches: Arc<watch::Sender<usize>>,
    streams: Arc<watch::Sender<usize>>,
}

/// Counts one batch or stream in flight until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<watch::Sender<usize>>);

/// A number of things in flight that can be waited on until it is zero.
#[derive(Debug, Clone)]
pub(crate) struct InFlightCount(Arc<watch::Sender<usize>>);

impl InFlightCount {
    pub(crate) fn new() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }

    /// Counts one more until the returned guard is dropped.
    pub(crate) fn start(&self) -> InFlight {
        Lifecycle::started(&self.0)
    }

    /// How many are in flight now.
    pub(crate) fn count(&self) -> usize {
        *self.0.borrow()
    }

    /// Waits until nothing is in flight.
    pub(crate) async fn idle(&self) {
        let _ = self.0.subscribe().wait_for(|n| *n == 0).await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self {
            phase: watch::channel(Phase::Running).0,
            pulling: watch::channel(false).0,
            batches: Arc::new(watch::channel(0).0),
            streams: Arc::new(watch::channel(0).0),
        }
    }

    pub(crate) fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(crate) fn is_running(&self) -> bool {
        *self.phase.borrow() == Phase::Running
    }

    /// The sender the pull loop reports whether it pulls on.
    pub(crate) fn pulling(&self) -> &watch::Sender<bool> {
        &self.pulling
    }

    pub(crate) fn batch_started(&self) -> InFlight {
        Self::started(&self.batches)
    }

    /// How many registered streams are open.
    pub(crate) fn streams(&self) -> usize {
        *self.streams.borrow()
    }

    pub(crate) fn stream_started(&self) -> InFlight {
        Self::started(&self.streams)
    }

    fn started(counter: &Arc<watch::Sender<usize>>) -> InFlight {
        counter.send_modify(|n| *n += 1);
        InFlight(counter.clone())
    }

    /// Stops pulls, waits for the batches in flight, then ends the streams and waits for them.
    ///
    /// Returns whether everything finished before `grace` ran out; streams are told to end
    /// when it does, whatever still runs.
    pub(crate) async fn shutdown(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        self.phase.send_if_modified(|phase| {
            let first = *phase == Phase::Running;
            if first {
                *phase = Phase::Draining;
            }
            first
        });

        // The pull loop reports NOT_SERVING before it says it stopped pulling.
        let mut pulling = self.pulling.subscribe();
        let stopped = within(deadline, pulling.wait_for(|pulling| !pulling)).await;
        let mut batches = self.batches.subscribe();
        let drained = within(deadline, batches.wait_for(|n| *n == 0)).await;

        self.phase.send_replace(Phase::Closing);
        let mut streams = self.streams.subscribe();
        let closed = within(deadline, streams.wait_for(|n| *n == 0)).await;
        stopped && drained && closed
    }
}

/// Whether `wait` finished by `deadline`. A closed channel counts as finished: nothing is left
/// to wait for.
async fn within<T>(
    deadline: Instant,
    wait: impl Future<Output = Result<T, watch::error::RecvError>>,
) -> bool {
    tokio::time::timeout_at(deadline, wait).await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_batches_then_closes_streams() {
        let lifecycle = Arc::new(Lifecycle::new());
        let batch = lifecycle.batch_started();
        let stream = lifecycle.stream_started();
        let mut phase = lifecycle.phase();

        let shutdown = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.shutdown(Duration::from_secs(10)).await }
        });
        phase.changed().await.unwrap();
        assert_eq!(*phase.borrow_and_update(), Phase::Draining);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            *phase.borrow(),
            Phase::Draining,
            "closed before the batch finished"
        );

        drop(batch);
        phase.changed().await.unwrap();
        assert_eq!(*phase.borrow(), Phase::Closing);
        assert!(!shutdown.is_finished());
        drop(stream);
        assert!(shutdown.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_after_the_grace_period() {
        let lifecycle = Lifecycle::new();
        let _stuck = lifecycle.batch_started();
        let started = Instant::now();
        assert!(!lifecycle.shutdown(Duration::from_secs(5)).await);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(*lifecycle.phase().borrow(), Phase::Closing);
    }
}
