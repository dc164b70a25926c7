use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project::{pin_project, pinned_drop};
use tokio::time::Instant;
use tonic::Code;
use tower::BoxError;

use super::Recorder;
use crate::status::rpc_status_from_error;

/// The future of a [`Record`](super::Record) call.
#[pin_project(PinnedDrop)]
pub struct ResponseFuture<F, R: Recorder> {
    #[pin]
    inner: F,
    /// Taken when the outcome is recorded, so that dropping the future afterwards records
    /// nothing more.
    recorder: Option<R>,
    started: Instant,
    unallocated: Code,
}

impl<F, R: Recorder> ResponseFuture<F, R> {
    pub(super) fn new(inner: F, recorder: R, started: Instant, unallocated: Code) -> Self {
        Self {
            inner,
            recorder: Some(recorder),
            started,
            unallocated,
        }
    }
}

impl<F, R, T, E> Future for ResponseFuture<F, R>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    R: Recorder,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        let code = match &result {
            Ok(_) => Code::Ok,
            Err(error) => Code::from_i32(rpc_status_from_error(&**error, *this.unallocated).code),
        };
        if let Some(recorder) = this.recorder.take() {
            recorder.record(code, this.started.elapsed());
        }
        Poll::Ready(result)
    }
}

#[pinned_drop]
impl<F, R: Recorder> PinnedDrop for ResponseFuture<F, R> {
    fn drop(self: Pin<&mut Self>) {
        let this = self.project();
        // The caller gave up before the call finished.
        if let Some(recorder) = this.recorder.take() {
            recorder.record(Code::Cancelled, this.started.elapsed());
        }
    }
}

impl<F, R: Recorder> fmt::Debug for ResponseFuture<F, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}
