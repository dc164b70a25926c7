//! Status codes: the HTTP to gRPC mapping of Agones and its inverse, and errors as
//! `google.rpc.Status`.

use std::error::Error as StdError;

use tonic::Code;

use crate::allocator::AllocationError;

/// The gRPC code Agones uses for an HTTP status, as its `GRPCCodeFromHTTPStatus` does.
///
/// The processor uses it to turn its configured "unallocated" HTTP status (429 by default) into
/// the code of the answer given when no game server matched. A status missing from the table
/// maps to `ResourceExhausted` with a warning.
///
/// ```
/// use agones_processor::status::grpc_code_from_http_status;
/// use tonic::Code;
///
/// assert_eq!(grpc_code_from_http_status(429), Code::ResourceExhausted);
/// assert_eq!(grpc_code_from_http_status(503), Code::Unavailable);
/// ```
pub fn grpc_code_from_http_status(status: u16) -> Code {
    match status {
        200 => Code::Ok,
        400 | 422 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        409 => Code::AlreadyExists,
        429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        500 => Code::Internal,
        501 => Code::Unimplemented,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        other => {
            tracing::warn!(
                http_status = other,
                "no gRPC code for HTTP status, using ResourceExhausted"
            );
            Code::ResourceExhausted
        }
    }
}

/// The HTTP status for a gRPC code: the inverse of [`grpc_code_from_http_status`], for
/// gateways that answer HTTP callers with the processor's errors.
///
/// | gRPC | HTTP |
/// | --- | --- |
/// | `Ok` | 200 |
/// | `InvalidArgument` | 400 |
/// | `Unauthenticated` | 401 |
/// | `PermissionDenied` | 403 |
/// | `NotFound` | 404 |
/// | `AlreadyExists` | 409 |
/// | `ResourceExhausted` | 429 |
/// | `Cancelled` | 499 |
/// | `Internal` | 500 |
/// | `Unimplemented` | 501 |
/// | `Unavailable` | 503 |
/// | `DeadlineExceeded` | 504 |
/// | any other code | 500 |
///
/// `InvalidArgument` comes back as 400, not 422, since both map to it. `Unknown`, `Aborted`
/// (contention on a game server), `FailedPrecondition`, `OutOfRange` and `DataLoss` have no
/// entry in Agones' table and are 500.
///
/// ```
/// use agones_processor::status::http_status_from_grpc_code;
/// use tonic::Code;
///
/// assert_eq!(http_status_from_grpc_code(Code::ResourceExhausted), 429);
/// assert_eq!(http_status_from_grpc_code(Code::Unknown), 500);
/// ```
pub fn http_status_from_grpc_code(code: Code) -> u16 {
    match code {
        Code::Ok => 200,
        Code::InvalidArgument => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Internal
        | Code::Unknown
        | Code::Aborted
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::DataLoss => 500,
    }
}

/// The `google.rpc.Status` a processor answers for an allocator's error.
///
/// The error and its sources are searched for a known error, the first found decides:
///
/// | error | code | message |
/// | --- | --- | --- |
/// | [`tonic::Status`] | its code | its message |
/// | [`AllocationError::Unallocated`] | `unallocated` | `no game server matched` |
/// | [`AllocationError::InvalidArgument`] | `InvalidArgument` | the error's |
/// | [`tower::timeout::error::Elapsed`] | `DeadlineExceeded` | the error's |
/// | [`tower::load_shed::error::Overloaded`] | `ResourceExhausted` | the error's |
///
/// Anything else is `Internal` with the error's message.
pub fn rpc_status_from_error(
    error: &(dyn StdError + 'static),
    unallocated: Code,
) -> tonic_types::Status {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(status) = error.downcast_ref::<tonic::Status>() {
            return rpc_status(status.code(), status.message());
        }
        if let Some(error) = error.downcast_ref::<AllocationError>() {
            let code = match error {
                AllocationError::Unallocated => unallocated,
                AllocationError::InvalidArgument(_) => Code::InvalidArgument,
            };
            return rpc_status(code, error.to_string());
        }
        if error.is::<tower::timeout::error::Elapsed>() {
            return rpc_status(Code::DeadlineExceeded, error.to_string());
        }
        if error.is::<tower::load_shed::error::Overloaded>() {
            return rpc_status(Code::ResourceExhausted, error.to_string());
        }
        current = error.source();
    }
    rpc_status(Code::Internal, error.to_string())
}

/// A `google.rpc.Status` with a code and message and no details.
pub fn rpc_status(code: Code, message: impl Into<String>) -> tonic_types::Status {
    tonic_types::Status {
        code: code as i32,
        message: message.into(),
        details: Vec::new(),
    }
}

/// A [`tonic::Status`] from a `google.rpc.Status` received on the wire.
///
/// A code this crate does not know, and `OK` (an error cannot be a success), become
/// `Unknown`; the details are kept.
pub fn status_from_rpc(status: tonic_types::Status) -> tonic::Status {
    // An error that claims success would turn into a success further up (an HTTP 200, an `Ok`
    // status); it is an error of unknown kind.
    let code = match Code::from_i32(status.code) {
        Code::Ok => Code::Unknown,
        code => code,
    };
    if status.details.is_empty() {
        return tonic::Status::new(code, status.message);
    }
    let details = prost::Message::encode_to_vec(&status);
    tonic::Status::with_details(code, status.message, details.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_table_matches_agones() {
        let table = [
            (200, Code::Ok),
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (409, Code::AlreadyExists),
            (422, Code::InvalidArgument),
            (429, Code::ResourceExhausted),
            (499, Code::Cancelled),
            (500, Code::Internal),
            (501, Code::Unimplemented),
            (503, Code::Unavailable),
            (504, Code::DeadlineExceeded),
            (418, Code::ResourceExhausted),
            (302, Code::ResourceExhausted),
        ];
        for (http, code) in table {
            assert_eq!(grpc_code_from_http_status(http), code, "HTTP {http}");
        }
    }

    #[test]
    fn grpc_to_http_table() {
        let table = [
            (Code::Ok, 200),
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
            (Code::Unknown, 500),
            (Code::Aborted, 500),
            (Code::FailedPrecondition, 500),
            (Code::OutOfRange, 500),
            (Code::DataLoss, 500),
        ];
        for (code, http) in table {
            assert_eq!(http_status_from_grpc_code(code), http, "{code:?}");
        }
    }

    #[test]
    fn http_to_grpc_to_http_returns_every_listed_status_but_422() {
        for http in [200, 400, 401, 403, 404, 409, 429, 499, 500, 501, 503, 504] {
            let code = grpc_code_from_http_status(http);
            assert_eq!(http_status_from_grpc_code(code), http, "HTTP {http}");
        }
        assert_eq!(
            http_status_from_grpc_code(grpc_code_from_http_status(422)),
            400
        );
    }

    #[test]
    fn tonic_status_keeps_code_and_message() {
        let error = tonic::Status::aborted("game server contended");
        let status = rpc_status_from_error(&error, Code::ResourceExhausted);
        assert_eq!(status.code, Code::Aborted as i32);
        assert_eq!(status.message, "game server contended");
    }

    #[test]
    fn unallocated_uses_configured_code() {
        let status = rpc_status_from_error(&AllocationError::Unallocated, Code::NotFound);
        assert_eq!(status.code, Code::NotFound as i32);
        assert_eq!(status.message, "no game server matched");
    }

    #[test]
    fn invalid_argument_is_invalid_argument() {
        let error = AllocationError::InvalidArgument("metadata.labels: bad key".into());
        let status = rpc_status_from_error(&error, Code::ResourceExhausted);
        assert_eq!(status.code, Code::InvalidArgument as i32);
        assert!(status.message.contains("metadata.labels"));
    }

    #[test]
    fn tower_errors_map_to_their_codes() {
        let elapsed = tower::timeout::error::Elapsed::new();
        let status = rpc_status_from_error(&elapsed, Code::ResourceExhausted);
        assert_eq!(status.code, Code::DeadlineExceeded as i32);

        let overloaded = tower::load_shed::error::Overloaded::new();
        let status = rpc_status_from_error(&overloaded, Code::ResourceExhausted);
        assert_eq!(status.code, Code::ResourceExhausted as i32);
    }

    #[test]
    fn known_error_found_in_source_chain() {
        #[derive(Debug)]
        struct Wrapper(AllocationError);
        impl std::fmt::Display for Wrapper {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("allocator failed")
            }
        }
        impl StdError for Wrapper {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                Some(&self.0)
            }
        }
        let status = rpc_status_from_error(
            &Wrapper(AllocationError::Unallocated),
            Code::ResourceExhausted,
        );
        assert_eq!(status.code, Code::ResourceExhausted as i32);
    }

    #[test]
    fn unknown_error_is_internal() {
        let error = std::io::Error::other("disk on fire");
        let status = rpc_status_from_error(&error, Code::ResourceExhausted);
        assert_eq!(status.code, Code::Internal as i32);
        assert_eq!(status.message, "disk on fire");
    }

    #[test]
    fn rpc_round_trip_keeps_code_and_message() {
        let status = status_from_rpc(rpc_status(
            Code::ResourceExhausted,
            "no game server matched",
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "no game server matched");
        let unknown = status_from_rpc(tonic_types::Status {
            code: 99,
            ..Default::default()
        });
        assert_eq!(unknown.code(), Code::Unknown);
    }
}
