use std::{fmt, time::Duration};

use tonic::Code;

/// Why a call through the processor client failed.
///
/// Converts into [`tonic::Status`] with the codes of the Agones processor client, so the client
/// can be called from a tonic handler and its error returned unchanged.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// No answer arrived within the allocation timeout. Maps to `DeadlineExceeded`.
    Timeout(Duration),
    /// The request was sent but the stream ended before its answer arrived, so whether a game
    /// server was allocated for it is unknown. Maps to `Unavailable`.
    OutcomeUnknown,
    /// The client was full and sheds load: the call was refused at once.
    /// Maps to `ResourceExhausted`.
    Overloaded,
    /// The client was shut down, or its driver stopped, before the request was answered.
    /// Maps to `Unavailable`.
    Closed,
    /// The processor answered the request with an error: the allocator's code and message,
    /// for example `ResourceExhausted` when no game server matched.
    Allocation(tonic::Status),
    /// The processor refused this client's stream: its credentials (client certificate or
    /// bearer token) are missing or wrong (`Unauthenticated`), or do not permit its client id
    /// (`PermissionDenied`). The status is the processor's. The request was never sent.
    ///
    /// Calls fail with it from the refusal until a later connection attempt is accepted.
    Refused(tonic::Status),
    /// The request is too large to be sent: a batch holding only this request would encode
    /// to `size` bytes, more than the client's `max_message_size` of `limit` bytes. It was
    /// never sent. Maps to `InvalidArgument`.
    TooLarge {
        /// The bytes the request needs in a batch message.
        size: usize,
        /// The client's message size limit.
        limit: usize,
    },
}

impl Error {
    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        match self {
            Self::Timeout(_) => Code::DeadlineExceeded,
            Self::OutcomeUnknown | Self::Closed => Code::Unavailable,
            Self::Overloaded => Code::ResourceExhausted,
            Self::Allocation(status) | Self::Refused(status) => status.code(),
            Self::TooLarge { .. } => Code::InvalidArgument,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(after) => write!(f, "allocation timeout after {after:?}"),
            Self::OutcomeUnknown => {
                f.write_str("processor stream ended before the answer arrived; outcome unknown")
            }
            Self::Overloaded => f.write_str("processor client overloaded"),
            Self::Closed => f.write_str("processor client closed"),
            Self::Allocation(status) => write!(f, "allocation failed: {}", status.message()),
            Self::Refused(status) => {
                write!(f, "processor refused this client: {}", status.message())
            }
            Self::TooLarge { size, limit } => write!(
                f,
                "request too large: a batch message with it takes {size} bytes, the limit is {limit}"
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        match error {
            Error::Allocation(status) | Error::Refused(status) => status,
            other => tonic::Status::new(other.code(), other.to_string()),
        }
    }
}

/// Why a [`Builder`](super::Builder) could not build a client.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// The processor address is not a valid URI.
    InvalidAddress(tonic::transport::Error),
    /// The processor address does not start with `http://` or `https://`.
    UnknownScheme {
        /// The address as given.
        address: String,
    },
    /// The address is `https://` but no TLS configuration was given, or TLS was configured
    /// for an address that is not `https://`, which would connect in the clear.
    SchemeMismatch {
        /// The address as given.
        address: String,
        /// Whether TLS was configured.
        tls: bool,
    },
    /// The TLS configuration was refused.
    Tls(tonic::transport::Error),
    /// The bearer token cannot be sent as metadata: it must be visible ASCII.
    InvalidToken,
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidAddress(_) => f.write_str("the processor address is not a valid URI"),
            Self::UnknownScheme { address } => write!(
                f,
                "the processor address {address:?} must start with http:// or https://"
            ),
            Self::SchemeMismatch { address, tls: true } => write!(
                f,
                "TLS is configured but the processor address {address:?} is not https://"
            ),
            Self::SchemeMismatch {
                address,
                tls: false,
            } => write!(
                f,
                "the processor address {address:?} is https:// but no TLS is configured"
            ),
            Self::Tls(_) => f.write_str("invalid TLS configuration"),
            Self::InvalidToken => f.write_str("the bearer token must be visible ASCII"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::InvalidAddress(error) | Self::Tls(error) => Some(error),
            Self::UnknownScheme { .. } | Self::SchemeMismatch { .. } | Self::InvalidToken => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_to_status_codes() {
        let cases = [
            (
                Error::Timeout(Duration::from_secs(30)),
                Code::DeadlineExceeded,
                "30s",
            ),
            (Error::OutcomeUnknown, Code::Unavailable, "outcome unknown"),
            (Error::Closed, Code::Unavailable, "closed"),
            (Error::Overloaded, Code::ResourceExhausted, "overloaded"),
            (
                Error::TooLarge {
                    size: 5_000_000,
                    limit: 4_194_304,
                },
                Code::InvalidArgument,
                "5000000 bytes, the limit is 4194304",
            ),
            (
                Error::Allocation(tonic::Status::resource_exhausted("no game server matched")),
                Code::ResourceExhausted,
                "no game server matched",
            ),
            (
                Error::Refused(tonic::Status::permission_denied("not your id")),
                Code::PermissionDenied,
                "not your id",
            ),
        ];
        for (error, code, text) in cases {
            assert_eq!(error.code(), code, "{error}");
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code);
            assert!(
                status.message().contains(text),
                "{:?} lacks {text:?}",
                status.message()
            );
        }
    }

    #[test]
    fn allocation_status_passes_through_unchanged() {
        let status = tonic::Status::aborted("contended");
        let converted = tonic::Status::from(Error::Allocation(status.clone()));
        assert_eq!(converted.code(), status.code());
        assert_eq!(converted.message(), status.message());
    }
}
