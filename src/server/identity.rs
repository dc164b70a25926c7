//! Who may register as which client: the identity checks a stream's registration passes.
//!
//! A stream names its client id in its first message, and the processor routes that client's
//! pulls and answers to it; a stream that registered under another client's id would take that
//! client's answers. Two checks bind the id to the caller, both applied when the registration
//! arrives, before the client is registered:
//!
//! - **Client certificates** (mutual TLS, feature `tls`): with
//!   [`Builder::certificate_identity`](super::Builder::certificate_identity), the id must be
//!   one that the client's certificate names, see [`CertificateIdentity`].
//! - **Permitted ids in the request**: when the request's extensions hold [`ClientIds`], the id
//!   must be one of them. [`BearerTokenLayer`](super::BearerTokenLayer) puts there the ids its
//!   token may use; an authenticating layer of your own can do the same.
//!
//! A stream without the credentials a check needs is refused with `Unauthenticated`, one whose
//! credentials do not name its id with `PermissionDenied`.

use std::fmt;

use tonic::Status;

/// The client ids a caller may register as: exact ids and id prefixes.
///
/// Put into a request's extensions (by [`BearerTokenLayer`](super::BearerTokenLayer) or a
/// layer of your own), it limits the ids a `StreamBatches` stream may register with.
///
/// ```
/// use agones_processor::server::ClientIds;
///
/// // Upstream allocators register with their pod name, which has a random suffix.
/// let ids = ClientIds::exact(["matchmaker"]).or_prefix("agones-allocator-");
/// assert!(ids.permits("matchmaker"));
/// assert!(ids.permits("agones-allocator-7f9c-x2kq"));
/// assert!(!ids.permits("agones-allocator-"));
/// assert!(!ids.permits("matchmaker-2"));
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientIds {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl ClientIds {
    /// Exactly these ids.
    pub fn exact<I>(ids: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self {
            exact: ids.into_iter().map(Into::into).collect(),
            prefixes: Vec::new(),
        }
    }

    /// Every id that starts with `prefix` and is longer than it.
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self::default().or_prefix(prefix)
    }

    /// These ids and `id`.
    pub fn or_exact(mut self, id: impl Into<String>) -> Self {
        self.exact.push(id.into());
        self
    }

    /// These ids and every id that starts with `prefix` and is longer than it.
    pub fn or_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefixes.push(prefix.into());
        self
    }

    /// Whether `client_id` is one of these ids.
    pub fn permits(&self, client_id: &str) -> bool {
        self.exact.iter().any(|id| id == client_id)
            || self.prefixes.iter().any(|prefix| {
                client_id.len() > prefix.len() && client_id.starts_with(prefix.as_str())
            })
    }
}

impl fmt::Debug for ClientIds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIds")
            .field("exact", &self.exact)
            .field("prefixes", &self.prefixes)
            .finish()
    }
}

/// How a client id is found in a client certificate's subject alternative names (SANs), for
/// [`Builder::certificate_identity`](super::Builder::certificate_identity).
///
/// A client may register as `id` when its certificate, which the TLS handshake verified
/// against the client CA, has
///
/// - a DNS name SAN equal to `id` (compared byte for byte; wildcard names never match), or
/// - a URI SAN equal to `id`, or equal to one of the configured URI prefixes followed by `id`
///   (for SPIFFE-style ids such as `spiffe://example.org/allocator/<id>`).
///
/// The certificate's subject (common name) is not looked at.
///
/// ```
/// use agones_processor::server::CertificateIdentity;
///
/// let identity = CertificateIdentity::new().uri_prefix("spiffe://games.example/allocator/");
/// # drop(identity);
/// ```
#[cfg(feature = "tls")]
#[derive(Debug, Clone, Default)]
pub struct CertificateIdentity {
    uri_prefixes: Vec<String>,
}

#[cfg(feature = "tls")]
impl CertificateIdentity {
    /// Matches client ids against DNS name and URI SANs, as they are.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also matches a client id against URI SANs made of `prefix` and the id.
    pub fn uri_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.uri_prefixes.push(prefix.into());
        self
    }

    /// Whether the end-entity certificate `certificate` (DER) names `client_id`.
    ///
    /// A certificate that does not parse names nothing.
    pub fn permits(&self, certificate: &[u8], client_id: &str) -> bool {
        let der = rustls_pki_types::CertificateDer::from(certificate);
        let Ok(certificate) = webpki::EndEntityCert::try_from(&der) else {
            return false;
        };
        let dns = certificate
            .valid_dns_names()
            .any(|name| !name.starts_with('*') && name == client_id);
        dns || certificate.valid_uri_names().any(|uri| {
            uri == client_id
                || self
                    .uri_prefixes
                    .iter()
                    .any(|prefix| uri.strip_prefix(prefix.as_str()) == Some(client_id))
        })
    }
}

/// What a stream's registration is checked against, taken from its request.
#[derive(Debug, Default)]
pub(crate) struct Credentials {
    /// The ids an authenticating layer permits.
    pub(crate) permitted: Option<ClientIds>,
    /// The client's certificate chain, when it connected with one.
    #[cfg(feature = "tls")]
    pub(crate) certificates: Option<std::sync::Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
}

impl Credentials {
    /// What `request` carries.
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Self {
        Self {
            permitted: request.extensions().get::<ClientIds>().cloned(),
            #[cfg(feature = "tls")]
            certificates: request.peer_certs(),
        }
    }
}

/// The checks a handler applies to every registration.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdentityChecks {
    #[cfg(feature = "tls")]
    pub(crate) certificate: Option<CertificateIdentity>,
}

impl IdentityChecks {
    /// Whether `credentials` allow registering as `client_id`.
    pub(crate) fn check(&self, credentials: &Credentials, client_id: &str) -> Result<(), Status> {
        if let Some(permitted) = &credentials.permitted
            && !permitted.permits(client_id)
        {
            return Err(Status::permission_denied(format!(
                "client id {client_id:?} is not permitted for these credentials"
            )));
        }
        #[cfg(feature = "tls")]
        if let Some(identity) = &self.certificate {
            let Some(certificate) = credentials
                .certificates
                .as_ref()
                .and_then(|chain| chain.first())
            else {
                return Err(Status::unauthenticated("a client certificate is required"));
            };
            if !identity.permits(certificate, client_id) {
                return Err(Status::permission_denied(format!(
                    "client id {client_id:?} is not named by the client certificate"
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn exact_ids_and_prefixes() {
        let ids = ClientIds::exact(["a", "b"]).or_prefix("pod-");
        for id in ["a", "b", "pod-1", "pod-abc"] {
            assert!(ids.permits(id), "{id}");
        }
        for id in ["", "c", "A", "pod-", "pod", "xpod-1", "a "] {
            assert!(!ids.permits(id), "{id}");
        }
        assert!(!ClientIds::default().permits("a"), "nothing is permitted");
        assert!(ClientIds::prefix("p").or_exact("q").permits("q"));
    }

    #[test]
    fn permitted_ids_in_the_request_are_enforced() {
        let checks = IdentityChecks::default();
        let credentials = Credentials {
            permitted: Some(ClientIds::exact(["mine"])),
            ..Default::default()
        };
        assert!(checks.check(&credentials, "mine").is_ok());
        let refused = checks.check(&credentials, "theirs").unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
        assert!(
            checks.check(&Credentials::default(), "anyone").is_ok(),
            "without checks or permitted ids, any id registers"
        );
    }

    #[cfg(feature = "tls")]
    mod certificates {
        use rcgen::{CertificateParams, KeyPair, SanType};

        use super::*;

        fn certificate(sans: Vec<SanType>) -> Vec<u8> {
            let mut params = CertificateParams::default();
            params.subject_alt_names = sans;
            params
                .self_signed(&KeyPair::generate().unwrap())
                .unwrap()
                .der()
                .to_vec()
        }

        fn dns(name: &str) -> SanType {
            SanType::DnsName(name.try_into().unwrap())
        }

        fn uri(uri: &str) -> SanType {
            SanType::URI(uri.try_into().unwrap())
        }

        #[test]
        fn dns_and_uri_names_match_exactly() {
            let identity = CertificateIdentity::new();
            let cert = certificate(vec![dns("allocator-1"), uri("urn:allocator:two")]);
            assert!(identity.permits(&cert, "allocator-1"));
            assert!(identity.permits(&cert, "urn:allocator:two"));
            for id in ["allocator-2", "allocator", "Allocator-1", "two", ""] {
                assert!(!identity.permits(&cert, id), "{id}");
            }
        }

        #[test]
        fn uri_prefixes_map_ids() {
            let cert = certificate(vec![uri("spiffe://games.example/allocator/a-1")]);
            assert!(!CertificateIdentity::new().permits(&cert, "a-1"));
            let identity =
                CertificateIdentity::new().uri_prefix("spiffe://games.example/allocator/");
            assert!(identity.permits(&cert, "a-1"));
            assert!(!identity.permits(&cert, "a-2"));
            assert!(!identity.permits(&cert, "allocator/a-1"));
        }

        #[test]
        fn wildcard_names_and_common_names_never_match() {
            let identity = CertificateIdentity::new();
            let cert = certificate(vec![dns("*.allocators.example")]);
            assert!(!identity.permits(&cert, "a.allocators.example"));
            assert!(!identity.permits(&cert, "*.allocators.example"));

            let mut params = CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "allocator-1");
            let cert = params.self_signed(&KeyPair::generate().unwrap()).unwrap();
            assert!(!identity.permits(cert.der(), "allocator-1"));
            assert!(!identity.permits(b"not a certificate", "allocator-1"));
        }

        #[test]
        fn certificate_checks_need_a_certificate_naming_the_id() {
            let checks = IdentityChecks {
                certificate: Some(CertificateIdentity::new()),
            };
            let none = checks.check(&Credentials::default(), "a").unwrap_err();
            assert_eq!(none.code(), Code::Unauthenticated);

            let chain = vec![rustls_pki_types::CertificateDer::from(certificate(vec![
                dns("a"),
            ]))];
            let credentials = Credentials {
                certificates: Some(std::sync::Arc::new(chain)),
                ..Default::default()
            };
            assert!(checks.check(&credentials, "a").is_ok());
            let refused = checks.check(&credentials, "b").unwrap_err();
            assert_eq!(refused.code(), Code::PermissionDenied);

            // Both checks apply when both are present.
            let credentials = Credentials {
                permitted: Some(ClientIds::exact(["b"])),
                ..credentials
            };
            assert_eq!(
                checks.check(&credentials, "a").unwrap_err().code(),
                Code::PermissionDenied
            );
            assert_eq!(
                checks.check(&credentials, "b").unwrap_err().code(),
                Code::PermissionDenied
            );
        }
    }
}
