use tonic::Code;
use tower::Layer;

use super::Record;

/// Wraps services in a [`Record`] that reports to a recorder.
#[derive(Debug, Clone)]
pub struct RecordLayer<R> {
    recorder: R,
    unallocated: Code,
}

impl<R> RecordLayer<R> {
    /// A layer reporting to `recorder`.
    ///
    /// The code of an `AllocationError::Unallocated` is `ResourceExhausted` until
    /// [`unallocated`](Self::unallocated) sets another.
    pub fn new(recorder: R) -> Self {
        Self {
            recorder,
            unallocated: Code::ResourceExhausted,
        }
    }

    /// The code recorded for `AllocationError::Unallocated`; set it to the processor's.
    ///
    /// Default: `ResourceExhausted`, the processor's default.
    pub fn unallocated(mut self, code: Code) -> Self {
        self.unallocated = code;
        self
    }
}

impl<S, R: Clone> Layer<S> for RecordLayer<R> {
    type Service = Record<S, R>;

    fn layer(&self, inner: S) -> Record<S, R> {
        Record::new(inner, self.recorder.clone(), self.unallocated)
    }
}
