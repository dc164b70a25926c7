use std::task::{Context, Poll};

use tokio::time::Instant;
use tonic::Code;
use tower::{BoxError, Service};

use super::{Recorder, ResponseFuture};

/// Reports each call's outcome code and latency to a [`Recorder`]; made by
/// [`RecordLayer`](super::RecordLayer).
///
/// Readiness is the inner service's; latency runs from `call` to the end of its future, so time
/// spent waiting for readiness is not part of it. Errors are mapped to codes as the processor
/// maps them to answers, by [`rpc_status_from_error`](crate::status::rpc_status_from_error),
/// and passed on unchanged.
#[derive(Debug, Clone)]
pub struct Record<S, R> {
    inner: S,
    recorder: R,
    unallocated: Code,
}

impl<S, R> Record<S, R> {
    pub(super) fn new(inner: S, recorder: R, unallocated: Code) -> Self {
        Self {
            inner,
            recorder,
            unallocated,
        }
    }
}

impl<S, R, Request> Service<Request> for Record<S, R>
where
    S: Service<Request>,
    S::Error: Into<BoxError>,
    R: Recorder + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, R>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        ResponseFuture::new(
            self.inner.call(request),
            self.recorder.clone(),
            started,
            self.unallocated,
        )
    }
}
