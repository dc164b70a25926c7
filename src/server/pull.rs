//! The pull loop: while this replica leads, asks every registered client for its queued
//! requests every pull interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{oneshot, watch};
use tokio::time::MissedTickBehavior;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use super::HEALTH_SERVICE_NAME;
use super::counters::Counters;
use super::lifecycle::Phase;
use super::registry::{Outbound, Registry};
use crate::proto::{ProcessorMessage, PullRequest, processor_message::Payload};

/// The text of every pull, as upstream sends it.
const PULL_MESSAGE: &str = "pull";

/// Owns the pull loop task: dropping the handle stops the loop.
///
/// The loop is signalled rather than aborted so that it can report `NOT_SERVING` on its way out.
#[derive(Debug)]
pub(crate) struct PullLoopHandle {
    _stop: oneshot::Sender<()>,
}

/// What the pull loop reads and reports.
pub(crate) struct PullLoop {
    pub(crate) registry: Arc<Registry>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) interval: Duration,
    pub(crate) health: Option<HealthReporter>,
    /// `None`: this replica always leads.
    pub(crate) leadership: Option<watch::Receiver<bool>>,
    pub(crate) phase: watch::Receiver<Phase>,
    pub(crate) pulling: watch::Sender<bool>,
}

impl PullLoopHandle {
    /// Spawns the pull loop on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub(crate) fn spawn(pull_loop: PullLoop) -> Self {
        let (stop_tx, stop) = oneshot::channel();
        let span = tracing::info_span!("pull_loop", interval = ?pull_loop.interval);
        tokio::spawn(pull_loop.run(stop).instrument(span));
        Self { _stop: stop_tx }
    }
}

impl PullLoop {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let mut leadership = Leadership::new(self.leadership.take());
        let mut reported = None;
        loop {
            if !(leadership.leads() && *self.phase.borrow_and_update() == Phase::Running) {
                // Until this replica leads, clients must not pick it.
                self.set_health(&mut reported, ServingStatus::NotServing)
                    .await;
                tokio::select! {
                    biased;
                    _ = &mut stop => return,
                    _ = leadership.changed() => continue,
                    _ = self.phase.changed() => continue,
                }
            }

            // SERVING is reported before the first pull and withdrawn before the loop says it
            // stopped pulling, so health is SERVING exactly while pulls go out.
            self.set_health(&mut reported, ServingStatus::Serving).await;
            self.pulling.send_replace(true);
            tracing::info!("leading: pulling started");
            let stopped = self.pull_while_leading(&mut leadership, &mut stop).await;
            self.set_health(&mut reported, ServingStatus::NotServing)
                .await;
            self.pulling.send_replace(false);
            tracing::info!("pulling stopped");
            if stopped {
                return;
            }
        }
    }

    /// Pulls every interval until leadership is lost or shutdown begins (`false`) or the
    /// handler is dropped (`true`).
    async fn pull_while_leading(
        &mut self,
        leadership: &mut Leadership,
        stop: &mut oneshot::Receiver<()>,
    ) -> bool {
        // `Delay` rather than bursting: pulls that were missed are of no use to anyone, a client
        // only needs to know that it may send now.
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = &mut *stop => return true,
                _ = leadership.changed() => if !leadership.leads() {
                    tracing::info!("leadership lost");
                    return false;
                },
                _ = self.phase.changed() => if *self.phase.borrow_and_update() != Phase::Running {
                    return false;
                },
                _ = ticks.tick() => pull_all(&self.registry, &self.counters),
            }
        }
    }

    /// Reports `status` unless it is the one reported last: watchers are told of every report,
    /// changed or not.
    async fn set_health(&self, reported: &mut Option<ServingStatus>, status: ServingStatus) {
        if *reported == Some(status) {
            return;
        }
        *reported = Some(status);
        if let Some(health) = &self.health {
            health.set_service_status(HEALTH_SERVICE_NAME, status).await;
        }
    }
}

/// The user's leadership signal, or always leading without one.
struct Leadership {
    signal: Option<watch::Receiver<bool>>,
    /// The last value, kept once the signal's sender is gone.
    last: bool,
}

impl Leadership {
    fn new(signal: Option<watch::Receiver<bool>>) -> Self {
        let last = signal.as_ref().is_none_or(|signal| *signal.borrow());
        Self { signal, last }
    }

    fn leads(&mut self) -> bool {
        if let Some(signal) = &mut self.signal {
            self.last = *signal.borrow_and_update();
        }
        self.last
    }

    /// Resolves when the signal changed; never once its sender is gone, as nothing can change.
    async fn changed(&mut self) {
        let Some(signal) = &mut self.signal else {
            return std::future::pending().await;
        };
        if signal.changed().await.is_err() {
            self.last = *signal.borrow();
            self.signal = None;
            tracing::debug!(
                leading = self.last,
                "leadership signal dropped, last value kept"
            );
            std::future::pending::<()>().await;
        }
    }
}

/// Sends one pull to every registered client without waiting for any of them.
pub(crate) fn pull_all(registry: &Registry, counters: &Counters) {
    registry.for_each(|client_id, outbound| offer_pull(client_id, outbound, counters));
}

/// Queues a pull for one client unless its outbound queue is full or closed.
pub(crate) fn offer_pull(client_id: &str, outbound: &Outbound, counters: &Counters) {
    let pull = ProcessorMessage {
        client_id: client_id.to_owned(),
        payload: Some(Payload::Pull(PullRequest {
            message: PULL_MESSAGE.to_owned(),
        })),
    };
    match outbound.try_send(Ok(pull)) {
        Ok(()) => Counters::add(&counters.pulls_sent, 1),
        // The client has not read the pulls and answers already queued for it; one more
        // pull would tell it nothing new, and waiting would delay every other client.
        Err(TrySendError::Full(_)) => {
            Counters::add(&counters.pulls_skipped, 1);
            tracing::debug!(%client_id, "outbound queue full, pull skipped");
        }
        // The stream's own task removes it from the registry.
        Err(TrySendError::Closed(_)) => {
            Counters::add(&counters.pulls_skipped, 1);
            tracing::debug!(%client_id, "stream closed, pull skipped");
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    #[test]
    fn a_full_queue_skips_only_its_own_pull() {
        let registry = Registry::default();
        let counters = Counters::default();
        let (stuck, _stuck_rx) = mpsc::channel(1);
        let (free, mut free_rx) = mpsc::channel(4);
        registry.register("stuck", stuck, 10).unwrap();
        registry.register("free", free, 10).unwrap();

        pull_all(&registry, &counters);
        pull_all(&registry, &counters);

        assert_eq!(Counters::get(&counters.pulls_sent), 3);
        assert_eq!(Counters::get(&counters.pulls_skipped), 1);
        for _ in 0..2 {
            let pull = free_rx.try_recv().unwrap().unwrap();
            assert_eq!(pull.client_id, "free");
        }
    }
}
