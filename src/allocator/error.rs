use std::fmt;

/// Why an allocator could not allocate a game server for a request.
///
/// The processor answers [`AllocationError::Unallocated`] with its configured "unallocated"
/// code (`ResourceExhausted` by default) and [`AllocationError::InvalidArgument`] with
/// `InvalidArgument`; see [`crate::status::rpc_status_from_error`]. Custom allocators may
/// return this type too, or a [`tonic::Status`] to choose the code themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocationError {
    /// No game server matched any of the request's selectors.
    Unallocated,
    /// The request breaks a validation rule; the message names the field.
    InvalidArgument(String),
}

impl fmt::Display for AllocationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unallocated => f.write_str("no game server matched"),
            Self::InvalidArgument(message) => write!(f, "invalid request: {message}"),
        }
    }
}

impl std::error::Error for AllocationError {}
