//! The pull loop: asks every registered client for its queued requests, every pull interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;
use tokio::time::MissedTickBehavior;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::Instrument;

use super::HEALTH_SERVICE_NAME;
use super::registry::Registry;
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

impl PullLoopHandle {
    /// Spawns the pull loop on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime.
    pub(crate) fn spawn(
        registry: Arc<Registry>,
        interval: Duration,
        health: Option<HealthReporter>,
    ) -> Self {
        let (stop_tx, stop) = oneshot::channel();
        let span = tracing::info_span!("pull_loop", interval = ?interval);
        tokio::spawn(run(registry, interval, health, stop).instrument(span));
        Self { _stop: stop_tx }
    }
}

async fn run(
    registry: Arc<Registry>,
    interval: Duration,
    health: Option<HealthReporter>,
    mut stop: oneshot::Receiver<()>,
) {
    set_health(health.as_ref(), ServingStatus::Serving).await;
    tracing::info!("pull loop started");

    // `Delay` rather than bursting: pulls that were missed are of no use to anyone, a client
    // only needs to know that it may send now.
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            _ = ticks.tick() => pull_all(&registry),
        }
    }

    set_health(health.as_ref(), ServingStatus::NotServing).await;
    tracing::info!("pull loop stopped");
}

/// Sends one pull to every registered client without waiting for any of them.
fn pull_all(registry: &Registry) {
    registry.for_each(|client_id, outbound| {
        let pull = ProcessorMessage {
            client_id: client_id.to_owned(),
            payload: Some(Payload::Pull(PullRequest {
                message: PULL_MESSAGE.to_owned(),
            })),
        };
        match outbound.try_send(Ok(pull)) {
            Ok(()) => {}
            // The client has not read the pulls and answers already queued for it; one more
            // pull would tell it nothing new, and waiting would delay every other client.
            Err(TrySendError::Full(_)) => {
                tracing::debug!(%client_id, "outbound queue full, pull skipped");
            }
            // The stream's own task removes it from the registry.
            Err(TrySendError::Closed(_)) => {
                tracing::debug!(%client_id, "stream closed, pull skipped");
            }
        }
    });
}

async fn set_health(health: Option<&HealthReporter>, status: ServingStatus) {
    if let Some(health) = health {
        health.set_service_status(HEALTH_SERVICE_NAME, status).await;
    }
}
