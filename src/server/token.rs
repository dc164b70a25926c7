//! Bearer tokens: a tower layer that authenticates requests by the token in their
//! `authorization` metadata, for processors reached without mutual TLS.

use std::{
    fmt,
    future::{Ready, ready},
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::future::Either;
use tonic::Status;
use tower::{Layer, Service};

use super::identity::ClientIds;

/// The path prefix of gRPC health, which the layer leaves open unless told otherwise.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// The bearer tokens a processor accepts, each with the client ids it may register as.
///
/// ```
/// use agones_processor::server::{BearerTokenLayer, BearerTokens, ClientIds, recommended_server};
///
/// let tokens = BearerTokens::new()
///     .token("token-of-the-matchmaker", ClientIds::exact(["matchmaker"]))
///     .token("token-of-the-allocators", ClientIds::prefix("agones-allocator-"));
/// let server = recommended_server().layer(BearerTokenLayer::new(tokens));
/// # drop(server);
/// ```
#[derive(Clone, Default)]
pub struct BearerTokens {
    tokens: Vec<(Box<[u8]>, ClientIds)>,
}

impl BearerTokens {
    /// No tokens: every request that needs one is refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token`, for streams that register as one of `ids`.
    ///
    /// # Panics
    ///
    /// Panics if `token` is empty.
    pub fn token(mut self, token: impl AsRef<[u8]>, ids: ClientIds) -> Self {
        let token = token.as_ref();
        assert!(!token.is_empty(), "a bearer token must not be empty");
        self.tokens.push((token.into(), ids));
        self
    }

    /// How many tokens are accepted.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The ids `token` may register as, or `None` for a token not accepted.
    ///
    /// Every accepted token is compared, each in time that depends only on the lengths, so
    /// the time taken does not tell how much of a guess was right.
    fn ids(&self, token: &[u8]) -> Option<&ClientIds> {
        let mut found = None;
        for (accepted, ids) in &self.tokens {
            if constant_time_eq(accepted, token) {
                found = Some(ids);
            }
        }
        found
    }
}

impl fmt::Debug for BearerTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The tokens are secrets; only what they permit is shown.
        f.debug_list()
            .entries(self.tokens.iter().map(|(_, ids)| ids))
            .finish()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// A tower layer for the processor's server that lets through only requests with an accepted
/// bearer token (`authorization: Bearer <token>` metadata), and tells the handler which client
/// ids that token may register as.
///
/// - No `authorization` metadata, another scheme, or a token not accepted: the request is
///   answered `Unauthenticated` without reaching any service.
/// - An accepted token: the request goes on with the token's [`ClientIds`] in its extensions;
///   a `StreamBatches` stream that then registers with another id is refused with
///   `PermissionDenied`, so a token cannot take another client's answers.
/// - gRPC health (`grpc.health.v1.Health`) stays open by default, for probes that cannot send
///   metadata; see [`BearerTokenLayer::require_for_health`].
///
/// Tokens travel in the clear without TLS: use it on networks where nobody can read the
/// traffic, or over TLS. Clients send theirs with
/// [`Builder::bearer_token`](crate::client::Builder::bearer_token).
#[derive(Debug, Clone)]
pub struct BearerTokenLayer {
    tokens: Arc<BearerTokens>,
    health_open: bool,
}

impl BearerTokenLayer {
    /// A layer accepting `tokens`.
    pub fn new(tokens: BearerTokens) -> Self {
        Self {
            tokens: Arc::new(tokens),
            health_open: true,
        }
    }

    /// Whether gRPC health needs a token too.
    ///
    /// Default: `false`; health answers without one.
    pub fn require_for_health(mut self, required: bool) -> Self {
        self.health_open = !required;
        self
    }
}

impl<S> Layer<S> for BearerTokenLayer {
    type Service = BearerToken<S>;

    fn layer(&self, inner: S) -> BearerToken<S> {
        BearerToken {
            inner,
            tokens: self.tokens.clone(),
            health_open: self.health_open,
        }
    }
}

/// The service of a [`BearerTokenLayer`].
#[derive(Debug, Clone)]
pub struct BearerToken<S> {
    inner: S,
    tokens: Arc<BearerTokens>,
    health_open: bool,
}

impl<S> BearerToken<S> {
    /// The ids the request's token may register as, or the status that refuses it.
    fn authenticate(&self, headers: &http::HeaderMap) -> Result<ClientIds, Status> {
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(Status::unauthenticated("a bearer token is required"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token else {
            return Err(Status::unauthenticated(
                "authorization metadata is not a bearer token",
            ));
        };
        match self.tokens.ids(token.as_bytes()) {
            Some(ids) => Ok(ids.clone()),
            None => Err(Status::unauthenticated("bearer token not accepted")),
        }
    }
}

impl<S, B, ResBody> Service<http::Request<B>> for BearerToken<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if self.health_open && request.uri().path().starts_with(HEALTH_PATH) {
            return Either::Left(self.inner.call(request));
        }
        match self.authenticate(request.headers()) {
            Ok(ids) => {
                request.extensions_mut().insert(ids);
                Either::Left(self.inner.call(request))
            }
            Err(status) => {
                tracing::warn!(
                    path = request.uri().path(),
                    reason = status.message(),
                    "request refused"
                );
                Either::Right(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    /// A service that answers with the client ids it found in the request, in a header.
    fn echo_ids() -> impl Service<
        http::Request<()>,
        Response = http::Response<String>,
        Error = Infallible,
        Future = impl Send,
    > + Clone {
        tower::service_fn(|request: http::Request<()>| async move {
            let ids = request.extensions().get::<ClientIds>().cloned();
            Ok(http::Response::new(format!("{ids:?}")))
        })
    }

    fn layer() -> BearerTokenLayer {
        BearerTokenLayer::new(
            BearerTokens::new()
                .token("alpha", ClientIds::exact(["a"]))
                .token("beta", ClientIds::prefix("b-")),
        )
    }

    async fn call(layer: &BearerTokenLayer, path: &str, authorization: Option<&str>) -> String {
        let mut request = http::Request::builder().uri(path);
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = layer
            .layer(echo_ids())
            .oneshot(request.body(()).unwrap())
            .await
            .unwrap();
        match Status::from_header_map(response.headers()) {
            Some(status) => format!("{:?}: {}", status.code(), status.message()),
            None => response.into_body(),
        }
    }

    const STREAM: &str = "/allocation.Processor/StreamBatches";

    #[tokio::test]
    async fn accepted_tokens_carry_their_ids() {
        let layer = layer();
        let a = call(&layer, STREAM, Some("Bearer alpha")).await;
        assert_eq!(a, format!("{:?}", Some(ClientIds::exact(["a"]))));
        let b = call(&layer, STREAM, Some("bearer beta")).await;
        assert_eq!(b, format!("{:?}", Some(ClientIds::prefix("b-"))));
    }

    #[tokio::test]
    async fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
        let layer = layer();
        let cases = [
            (None, "required"),
            (Some("alpha"), "not a bearer token"),
            (Some("Basic YTpi"), "not a bearer token"),
            (Some("Bearer gamma"), "not accepted"),
            (Some("Bearer alph"), "not accepted"),
            (Some("Bearer alphaa"), "not accepted"),
            (Some("Bearer "), "not accepted"),
        ];
        for (authorization, reason) in cases {
            let answer = call(&layer, STREAM, authorization).await;
            assert!(
                answer.starts_with("Unauthenticated: ") && answer.contains(reason),
                "{authorization:?}: {answer}"
            );
        }
    }

    #[tokio::test]
    async fn health_is_open_unless_required() {
        let health = "/grpc.health.v1.Health/Check";
        assert_eq!(call(&layer(), health, None).await, "None");
        let closed = layer().require_for_health(true);
        assert!(
            call(&closed, health, None)
                .await
                .starts_with("Unauthenticated")
        );
        assert!(
            call(&closed, health, Some("Bearer beta"))
                .await
                .contains("b-")
        );
    }

    #[test]
    fn tokens_do_not_show_in_debug_output() {
        let tokens = BearerTokens::new().token("very-secret", ClientIds::exact(["a"]));
        assert_eq!(tokens.len(), 1);
        let debug = format!("{tokens:?} {:?}", BearerTokenLayer::new(tokens.clone()));
        assert!(!debug.contains("very-secret"), "{debug}");
    }

    #[test]
    fn comparison_needs_every_byte() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"toke"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
