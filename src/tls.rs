//! TLS and mutual TLS for the client and the server: certificates and keys in PEM, from files
//! or from memory. Requires the `tls` feature (on by default).
//!
//! The transport is rustls with its `ring` provider, through tonic's TLS support. A server
//! presents [`ServerTls`]: its certificate chain and key and, for mutual TLS, the CA that must
//! have signed every client's certificate. A client trusts the CA of [`ClientTls`] and, for
//! mutual TLS, presents a certificate and key of its own.
//!
//! ```no_run
//! use agones_processor::ProcessorClient;
//! use agones_processor::server::recommended_tls_server;
//! use agones_processor::tls::{ClientTls, ServerTls};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The processor: its own certificate, and the CA of its clients' certificates.
//! let tls = ServerTls::from_pem_files("processor.pem", "processor.key")?
//!     .client_ca_file("clients-ca.pem")?;
//! let server = recommended_tls_server(&tls)?;
//! # drop(server);
//!
//! // An allocator: the CA that signed the processor's certificate, and its own certificate.
//! let tls = ClientTls::from_ca_file("processor-ca.pem")?
//!     .identity_files("allocator-1.pem", "allocator-1.key")?;
//! let client = ProcessorClient::builder("https://processor.agones-system:9090")
//!     .client_id("allocator-1")
//!     .tls(tls)
//!     .spawn()?;
//! # drop(client);
//! # Ok(())
//! # }
//! ```
//!
//! PEM is checked when it is loaded, so a wrong file is reported by name before anything
//! connects. Whether a key matches its certificate is checked later, by rustls, when the
//! server or the client is built.
//!
//! rustls takes its process-wide default crypto provider for the server; should another crate
//! of the program turn on rustls' `aws-lc-rs` provider as well, install one with
//! `rustls::crypto::CryptoProvider::install_default` before building the server.

use std::{
    fmt, io,
    path::{Path, PathBuf},
    time::Duration,
};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// How long a TLS handshake may take before the server drops the connection, unless set.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate, key or CA that could not be loaded; names the file it came from.
#[derive(Debug)]
pub struct TlsError {
    /// What was being loaded: "certificate", "private key" or "CA certificate".
    what: &'static str,
    /// The file it came from; `None` for PEM given in memory.
    file: Option<PathBuf>,
    kind: ErrorKind,
}

#[derive(Debug)]
enum ErrorKind {
    Read(io::Error),
    Pem(rustls_pki_types::pem::Error),
    Empty,
}

impl TlsError {
    /// The file the error is about, or `None` for PEM given in memory.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{} file {}: ", self.what, file.display())?,
            None => write!(f, "{} (in-memory PEM): ", self.what)?,
        }
        match &self.kind {
            ErrorKind::Read(error) => write!(f, "cannot be read: {error}"),
            ErrorKind::Pem(error) => write!(f, "invalid PEM: {error}"),
            ErrorKind::Empty if self.what == PRIVATE_KEY => f.write_str("no private key in it"),
            ErrorKind::Empty => f.write_str("no certificate in it"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            ErrorKind::Read(error) => Some(error),
            ErrorKind::Pem(error) => Some(error),
            ErrorKind::Empty => None,
        }
    }
}

const CERTIFICATE: &str = "certificate";
const PRIVATE_KEY: &str = "private key";
const CA_CERTIFICATE: &str = "CA certificate";

/// PEM read from a file or given in memory, with where it came from for error messages.
struct Pem<'a> {
    bytes: Vec<u8>,
    what: &'static str,
    file: Option<&'a Path>,
}

impl<'a> Pem<'a> {
    fn memory(bytes: impl AsRef<[u8]>, what: &'static str) -> Self {
        Self {
            bytes: bytes.as_ref().to_vec(),
            what,
            file: None,
        }
    }

    fn file(path: &'a Path, what: &'static str) -> Result<Self, TlsError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Self {
                bytes,
                what,
                file: Some(path),
            }),
            Err(error) => Err(TlsError {
                what,
                file: Some(path.to_owned()),
                kind: ErrorKind::Read(error),
            }),
        }
    }

    fn error(&self, kind: ErrorKind) -> TlsError {
        TlsError {
            what: self.what,
            file: self.file.map(Path::to_owned),
            kind,
        }
    }

    /// Checks that the PEM holds at least one certificate and that every certificate in it
    /// decodes.
    fn certificates(self) -> Result<Certificate, TlsError> {
        let mut count = 0;
        for certificate in CertificateDer::pem_slice_iter(&self.bytes) {
            certificate.map_err(|error| self.error(ErrorKind::Pem(error)))?;
            count += 1;
        }
        if count == 0 {
            return Err(self.error(ErrorKind::Empty));
        }
        Ok(Certificate::from_pem(self.bytes))
    }

    /// Checks that the PEM holds a private key.
    fn key(self) -> Result<Vec<u8>, TlsError> {
        match PrivateKeyDer::from_pem_slice(&self.bytes) {
            Ok(_) => Ok(self.bytes),
            Err(rustls_pki_types::pem::Error::NoItemsFound) => Err(self.error(ErrorKind::Empty)),
            Err(error) => Err(self.error(ErrorKind::Pem(error))),
        }
    }
}

/// A certificate chain and its key, checked.
fn identity(certificate: Pem<'_>, key: Pem<'_>) -> Result<Identity, TlsError> {
    let certificate = certificate.certificates()?;
    let key = key.key()?;
    Ok(Identity::from_pem(certificate, key))
}

/// The server's side of TLS: its certificate chain and key and, for mutual TLS, the CA that
/// must have signed its clients' certificates.
///
/// With a client CA ([`client_ca_pem`](Self::client_ca_pem),
/// [`client_ca_file`](Self::client_ca_file)) every client must present a certificate signed by
/// it; a client without one, or with one signed by another CA, fails the handshake. The
/// certificate's subject alternative names can then bind client ids, see
/// [`CertificateIdentity`](crate::server::CertificateIdentity).
///
/// Handed to [`recommended_tls_server`](crate::server::recommended_tls_server), or to
/// `tonic::transport::Server::tls_config` through [`ServerTls::to_config`].
#[derive(Clone)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<Certificate>,
    handshake_timeout: Duration,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("requires_client_certificate", &self.client_ca.is_some())
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The server's certificate chain (its own certificate first, then intermediates) and its
    /// private key (PKCS#8, PKCS#1 or SEC1), in PEM.
    ///
    /// # Errors
    ///
    /// Either has no item of its kind or is not valid PEM.
    pub fn from_pem(
        certificate_chain: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<Self, TlsError> {
        Ok(Self::new(identity(
            Pem::memory(certificate_chain, CERTIFICATE),
            Pem::memory(key, PRIVATE_KEY),
        )?))
    }

    /// As [`from_pem`](Self::from_pem), reading PEM files.
    ///
    /// # Errors
    ///
    /// A file cannot be read, or as [`from_pem`](Self::from_pem); the error names the file.
    pub fn from_pem_files(
        certificate_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        Ok(Self::new(identity(
            Pem::file(certificate_chain.as_ref(), CERTIFICATE)?,
            Pem::file(key.as_ref(), PRIVATE_KEY)?,
        )?))
    }

    fn new(identity: Identity) -> Self {
        Self {
            identity,
            client_ca: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Requires every client to present a certificate signed by one of the CA certificates in
    /// `pem`: mutual TLS.
    ///
    /// # Errors
    ///
    /// `pem` has no certificate or is not valid PEM.
    pub fn client_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self, TlsError> {
        self.client_ca = Some(Pem::memory(pem, CA_CERTIFICATE).certificates()?);
        Ok(self)
    }

    /// As [`client_ca_pem`](Self::client_ca_pem), reading a PEM file.
    ///
    /// # Errors
    ///
    /// The file cannot be read, has no certificate or is not valid PEM; the error names it.
    pub fn client_ca_file(mut self, path: impl AsRef<Path>) -> Result<Self, TlsError> {
        self.client_ca = Some(Pem::file(path.as_ref(), CA_CERTIFICATE)?.certificates()?);
        Ok(self)
    }

    /// How long a client may take to complete the TLS handshake before its connection is
    /// dropped, so that connections that never finish it do not pile up.
    ///
    /// Default: [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 seconds.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Whether clients must present a certificate (a client CA is set).
    pub fn requires_client_certificate(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The configuration for `tonic::transport::Server::tls_config`.
    pub fn to_config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new()
            .identity(self.identity.clone())
            .timeout(self.handshake_timeout);
        match &self.client_ca {
            Some(ca) => config.client_ca_root(ca.clone()),
            None => config,
        }
    }
}

/// The client's side of TLS: the CA to trust for the processor's certificate, the name to
/// check it against and, for mutual TLS, the client's own certificate and key.
///
/// Given to [`Builder::tls`](crate::client::Builder::tls); the processor's address must then
/// be `https://`.
#[derive(Clone)]
pub struct ClientTls {
    ca: Certificate,
    domain_name: Option<String>,
    identity: Option<Identity>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("domain_name", &self.domain_name)
            .field("has_identity", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `pem`, and only them, for the processor's certificate.
    ///
    /// # Errors
    ///
    /// `pem` has no certificate or is not valid PEM.
    pub fn from_ca_pem(pem: impl AsRef<[u8]>) -> Result<Self, TlsError> {
        Ok(Self::new(Pem::memory(pem, CA_CERTIFICATE).certificates()?))
    }

    /// As [`from_ca_pem`](Self::from_ca_pem), reading a PEM file.
    ///
    /// # Errors
    ///
    /// The file cannot be read, has no certificate or is not valid PEM; the error names it.
    pub fn from_ca_file(path: impl AsRef<Path>) -> Result<Self, TlsError> {
        Ok(Self::new(
            Pem::file(path.as_ref(), CA_CERTIFICATE)?.certificates()?,
        ))
    }

    fn new(ca: Certificate) -> Self {
        Self {
            ca,
            domain_name: None,
            identity: None,
        }
    }

    /// The name the processor's certificate must hold, instead of the host of its address;
    /// for connecting by IP address or through a name the certificate does not carry.
    ///
    /// Default: the host of the processor's address.
    pub fn domain_name(mut self, name: impl Into<String>) -> Self {
        self.domain_name = Some(name.into());
        self
    }

    /// The client's certificate chain and private key in PEM, presented to a processor that
    /// requires client certificates (mutual TLS).
    ///
    /// # Errors
    ///
    /// Either has no item of its kind or is not valid PEM.
    pub fn identity_pem(
        mut self,
        certificate_chain: impl AsRef<[u8]>,
        key: impl AsRef<[u8]>,
    ) -> Result<Self, TlsError> {
        self.identity = Some(identity(
            Pem::memory(certificate_chain, CERTIFICATE),
            Pem::memory(key, PRIVATE_KEY),
        )?);
        Ok(self)
    }

    /// As [`identity_pem`](Self::identity_pem), reading PEM files.
    ///
    /// # Errors
    ///
    /// A file cannot be read, or as [`identity_pem`](Self::identity_pem); the error names the
    /// file.
    pub fn identity_files(
        mut self,
        certificate_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        self.identity = Some(identity(
            Pem::file(certificate_chain.as_ref(), CERTIFICATE)?,
            Pem::file(key.as_ref(), PRIVATE_KEY)?,
        )?);
        Ok(self)
    }

    /// The configuration for `tonic::transport::Endpoint::tls_config`.
    pub fn to_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().ca_certificate(self.ca.clone());
        if let Some(name) = &self.domain_name {
            config = config.domain_name(name.clone());
        }
        if let Some(identity) = &self.identity {
            config = config.identity(identity.clone());
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["processor".to_owned()]).unwrap();
        let certificate = params.self_signed(&key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    /// A file in the system's temporary directory, removed when dropped.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "agones-processor-tls-{}-{name}",
                uuid::Uuid::new_v4()
            ));
            std::fs::write(&path, contents).unwrap();
            Self(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn loads_pem_from_memory_and_files() {
        let (certificate, key) = pem_pair();
        let server = ServerTls::from_pem(&certificate, &key)
            .unwrap()
            .client_ca_pem(&certificate)
            .unwrap();
        assert!(server.requires_client_certificate());

        let certificate_file = TempFile::new("cert.pem", &certificate);
        let key_file = TempFile::new("key.pem", &key);
        let server = ServerTls::from_pem_files(&certificate_file.0, &key_file.0).unwrap();
        assert!(!server.requires_client_certificate());
        ClientTls::from_ca_file(&certificate_file.0)
            .unwrap()
            .identity_files(&certificate_file.0, &key_file.0)
            .unwrap();
    }

    #[test]
    fn a_missing_file_is_named() {
        let (certificate, _) = pem_pair();
        let certificate_file = TempFile::new("cert.pem", &certificate);
        let missing = std::env::temp_dir().join("agones-processor-tls-no-such-file.key");
        let error = ServerTls::from_pem_files(&certificate_file.0, &missing).unwrap_err();
        assert_eq!(error.file(), Some(missing.as_path()));
        let text = error.to_string();
        assert!(text.starts_with("private key file "), "{text}");
        assert!(text.contains("no-such-file.key"), "{text}");
        assert!(text.contains("cannot be read"), "{text}");
    }

    #[test]
    fn a_file_of_the_wrong_kind_is_named() {
        let (certificate, key) = pem_pair();
        let key_file = TempFile::new("key.pem", &key);
        let certificate_file = TempFile::new("cert.pem", &certificate);

        // A key where a certificate belongs, and the other way round.
        let error = ClientTls::from_ca_file(&key_file.0).unwrap_err();
        assert_eq!(error.file(), Some(key_file.0.as_path()));
        assert!(
            error.to_string().ends_with("no certificate in it"),
            "{error}"
        );
        let error =
            ServerTls::from_pem_files(&certificate_file.0, &certificate_file.0).unwrap_err();
        assert_eq!(error.file(), Some(certificate_file.0.as_path()));
        assert!(error.to_string().starts_with("private key file"), "{error}");
        assert!(
            error.to_string().ends_with("no private key in it"),
            "{error}"
        );
    }

    #[test]
    fn broken_pem_in_memory_is_refused() {
        let (certificate, key) = pem_pair();
        let truncated = certificate.replacen("-----END CERTIFICATE-----", "", 1);
        let error = ServerTls::from_pem(&truncated, &key).unwrap_err();
        assert_eq!(error.file(), None);
        let text = error.to_string();
        assert!(text.starts_with("certificate (in-memory PEM): "), "{text}");
        assert!(ClientTls::from_ca_pem("not pem at all").is_err());
        assert!(
            ClientTls::from_ca_pem(&certificate)
                .unwrap()
                .identity_pem(&certificate, "")
                .is_err()
        );
    }
}
