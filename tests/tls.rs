//! TLS, mutual TLS and client identity over real gRPC on 127.0.0.1, with certificates made
//! at test time.
//!
//! They run on the real clock with short durations: a paused clock would jump ahead while
//! bytes cross the loopback interface.
#![cfg(feature = "tls")]

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use agones_processor::{
    AllocationRequest, AllocationResponse, ProcessorClient,
    client::Error,
    server::{
        BearerTokenLayer, BearerTokens, CertificateIdentity, ClientIds, ProcessorHandler, incoming,
        recommended_server, recommended_tls_server,
    },
    tls::{ClientTls, ServerTls},
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tonic::Code;

const PULL_INTERVAL: Duration = Duration::from_millis(20);
/// The name in the processor's certificate; clients reach it by IP address and check this name.
const PROCESSOR_NAME: &str = "processor.test";

/// A certificate authority made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Pem {
    certificate: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn sign(&self, sans: Vec<SanType>, usage: ExtendedKeyUsagePurpose) -> Pem {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![usage];
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        Pem {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    fn processor(&self) -> Pem {
        self.sign(
            vec![dns(PROCESSOR_NAME)],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    fn client(&self, sans: Vec<SanType>) -> Pem {
        self.sign(sans, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn uri(uri: &str) -> SanType {
    SanType::URI(uri.try_into().unwrap())
}

/// A running processor, with how many requests reached its allocator.
struct Processor {
    address: SocketAddr,
    handler: ProcessorHandler<Allocator>,
    allocated: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Allocator =
    tower::util::BoxCloneSyncService<AllocationRequest, AllocationResponse, Infallible>;

/// How a test processor is served.
#[derive(Default)]
struct Setup {
    tls: Option<ServerTls>,
    certificate_identity: Option<CertificateIdentity>,
    tokens: Option<BearerTokens>,
}

impl Setup {
    /// Serves a processor whose allocator names each game server after its request's
    /// namespace.
    async fn start(self) -> Processor {
        let allocated = Arc::new(AtomicUsize::new(0));
        let allocator: Allocator = {
            let allocated = allocated.clone();
            tower::util::BoxCloneSyncService::new(tower::service_fn(
                move |request: AllocationRequest| {
                    allocated.fetch_add(1, SeqCst);
                    async move {
                        Ok(AllocationResponse {
                            game_server_name: request.namespace,
                            ..Default::default()
                        })
                    }
                },
            ))
        };
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let mut builder = ProcessorHandler::builder(allocator)
            .pull_interval(PULL_INTERVAL)
            .health_reporter(health_reporter);
        if let Some(identity) = self.certificate_identity {
            builder = builder.certificate_identity(identity);
        }
        let handler = builder.build();
        let routes = handler.routes(health_service);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let server = match &self.tls {
            Some(tls) => recommended_tls_server(tls).unwrap(),
            None => recommended_server(),
        };
        let task = match self.tokens {
            Some(tokens) => tokio::spawn(async move {
                let mut server = server.layer(BearerTokenLayer::new(tokens));
                server
                    .add_routes(routes)
                    .serve_with_incoming(incoming(listener))
                    .await
                    .expect("processor failed");
            }),
            None => tokio::spawn(async move {
                let mut server = server;
                server
                    .add_routes(routes)
                    .serve_with_incoming(incoming(listener))
                    .await
                    .expect("processor failed");
            }),
        };
        Processor {
            address,
            handler,
            allocated,
            task,
        }
    }
}

/// The processor's TLS with a certificate from `ca`, and mutual TLS when `client_ca` is given.
fn server_tls(ca: &Ca, client_ca: Option<&Ca>) -> ServerTls {
    let pem = ca.processor();
    let tls = ServerTls::from_pem(&pem.certificate, &pem.key).unwrap();
    match client_ca {
        Some(client_ca) => tls.client_ca_pem(client_ca.pem()).unwrap(),
        None => tls,
    }
}

/// A processor with TLS, and mutual TLS when `client_ca` is given.
async fn tls_processor(ca: &Ca, client_ca: Option<&Ca>) -> Processor {
    Setup {
        tls: Some(server_tls(ca, client_ca)),
        ..Default::default()
    }
    .start()
    .await
}

/// Client settings for a processor at `address` with short timeouts.
fn builder(address: SocketAddr, scheme: &str, id: &str) -> agones_processor::client::Builder {
    ProcessorClient::builder(format!("{scheme}://{address}"))
        .client_id(id)
        .allocation_timeout(Duration::from_secs(5))
        .reconnect_interval(Duration::from_millis(50))
        .max_reconnect_interval(Duration::from_millis(200))
}

/// The CA of `ca` trusted, the processor checked against its certificate's name.
fn client_tls(ca: &Ca) -> ClientTls {
    ClientTls::from_ca_pem(ca.pem())
        .unwrap()
        .domain_name(PROCESSOR_NAME)
}

fn request(namespace: &str) -> AllocationRequest {
    AllocationRequest {
        namespace: namespace.into(),
        ..Default::default()
    }
}

/// Sends `count` calls at once and checks each got its own answer.
async fn allocate_all(client: &ProcessorClient, count: usize) {
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let namespace = format!("ns-{i}");
            let call = client.clone().allocate_owned(request(&namespace));
            tokio::spawn(async move { (namespace, call.await) })
        })
        .collect();
    for call in calls {
        let (namespace, result) = call.await.unwrap();
        let response = result.unwrap_or_else(|error| panic!("{namespace}: {error}"));
        assert_eq!(response.game_server_name, namespace);
    }
}

/// Makes one call and returns its error, which must be the processor's refusal.
async fn refusal(client: &ProcessorClient) -> tonic::Status {
    match client.allocate(request("refused")).await {
        Err(Error::Refused(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn tls_round_trip_answers_allocations() {
    let ca = Ca::new("processor CA");
    let processor = tls_processor(&ca, None).await;
    let client = builder(processor.address, "https", "allocator-1")
        .tls(client_tls(&ca))
        .spawn()
        .unwrap();
    allocate_all(&client, 50).await;
    assert_eq!(processor.allocated.load(SeqCst), 50);
    assert_eq!(processor.handler.connected_clients(), ["allocator-1"]);
}

#[tokio::test]
async fn mutual_tls_round_trip_answers_allocations() {
    let ca = Ca::new("processor CA");
    let clients = Ca::new("clients CA");
    let processor = tls_processor(&ca, Some(&clients)).await;
    let pem = clients.client(vec![dns("allocator-1")]);
    let tls = client_tls(&ca)
        .identity_pem(&pem.certificate, &pem.key)
        .unwrap();
    let client = builder(processor.address, "https", "allocator-1")
        .tls(tls)
        .spawn()
        .unwrap();
    allocate_all(&client, 50).await;
    assert_eq!(processor.allocated.load(SeqCst), 50);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let ca = Ca::new("processor CA");
    let clients = Ca::new("clients CA");
    let processor = tls_processor(&ca, Some(&clients)).await;
    let client = builder(processor.address, "https", "allocator-1")
        .tls(client_tls(&ca))
        .spawn()
        .unwrap();

    let status = refusal(&client).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("CertificateRequired"),
        "{status:?}"
    );
    // Calls keep failing at once while the processor refuses, instead of waiting for a
    // stream that will not come.
    assert_eq!(refusal(&client).await.code(), Code::Unauthenticated);
    assert_eq!(client.stats().connects, 0);
    assert_eq!(processor.allocated.load(SeqCst), 0);
    assert!(processor.handler.connected_clients().is_empty());
}

#[tokio::test]
async fn mutual_tls_refuses_a_certificate_signed_by_another_ca() {
    let ca = Ca::new("processor CA");
    let clients = Ca::new("clients CA");
    let processor = tls_processor(&ca, Some(&clients)).await;
    // The right name, from the wrong authority.
    let pem = Ca::new("impostor CA").client(vec![dns("allocator-1")]);
    let client = builder(processor.address, "https", "allocator-1")
        .tls(
            client_tls(&ca)
                .identity_pem(&pem.certificate, &pem.key)
                .unwrap(),
        )
        .spawn()
        .unwrap();

    let status = refusal(&client).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("UnknownCA"), "{status:?}");
    assert_eq!(processor.allocated.load(SeqCst), 0);
    assert!(processor.handler.connected_clients().is_empty());
}

#[tokio::test]
async fn client_refuses_a_processor_it_does_not_trust() {
    let ca = Ca::new("processor CA");
    let processor = tls_processor(&ca, None).await;

    // A certificate from a CA the client does not trust.
    let other = Ca::new("other CA");
    let client = builder(processor.address, "https", "allocator-1")
        .tls(client_tls(&other))
        .spawn()
        .unwrap();
    let status = refusal(&client).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("UnknownIssuer"), "{status:?}");

    // The right CA, but the certificate does not name the address the client dialled.
    let client = builder(processor.address, "https", "allocator-1")
        .tls(ClientTls::from_ca_pem(ca.pem()).unwrap())
        .spawn()
        .unwrap();
    let status = refusal(&client).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("not valid for name"),
        "{status:?}"
    );
    assert_eq!(processor.allocated.load(SeqCst), 0);
}

#[tokio::test]
async fn certificate_identity_refuses_ids_the_certificate_does_not_name() {
    let ca = Ca::new("processor CA");
    let clients = Ca::new("clients CA");
    let processor = Setup {
        tls: Some(server_tls(&ca, Some(&clients))),
        certificate_identity: Some(
            CertificateIdentity::new().uri_prefix("spiffe://games.test/allocator/"),
        ),
        ..Default::default()
    }
    .start()
    .await;
    let connect = |pem: &Pem, id: &str| {
        let tls = client_tls(&ca)
            .identity_pem(&pem.certificate, &pem.key)
            .unwrap();
        builder(processor.address, "https", id)
            .tls(tls)
            .spawn()
            .unwrap()
    };

    // A DNS name SAN, and a URI SAN under the configured prefix.
    let a = connect(&clients.client(vec![dns("allocator-a")]), "allocator-a");
    allocate_all(&a, 20).await;
    let b_pem = clients.client(vec![uri("spiffe://games.test/allocator/allocator-b")]);
    let b = connect(&b_pem, "allocator-b");
    allocate_all(&b, 20).await;

    // B's valid certificate does not let it register as A, which would take A's answers.
    let impostor = connect(&b_pem, "allocator-a");
    let status = refusal(&impostor).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("allocator-a"), "{status:?}");
    assert_eq!(impostor.stats().connects, 0);

    // A kept its stream and its answers.
    allocate_all(&a, 20).await;
    assert_eq!(a.stats().connects, 1, "A's stream was never replaced");
    assert_eq!(
        processor.handler.connected_clients(),
        ["allocator-a", "allocator-b"]
    );
    assert_eq!(processor.allocated.load(SeqCst), 60);
}

#[tokio::test]
async fn bearer_tokens_bind_client_ids() {
    let tokens = BearerTokens::new()
        .token("token-a", ClientIds::exact(["allocator-a"]))
        .token("token-b", ClientIds::prefix("allocator-b-"));
    let processor = Setup {
        tokens: Some(tokens),
        ..Default::default()
    }
    .start()
    .await;
    let connect = |token: Option<&str>, id: &str| {
        let builder = builder(processor.address, "http", id);
        match token {
            Some(token) => builder.bearer_token(token),
            None => builder,
        }
        .spawn()
        .unwrap()
    };

    let a = connect(Some("token-a"), "allocator-a");
    allocate_all(&a, 20).await;
    let b = connect(Some("token-b"), "allocator-b-7f3a");
    allocate_all(&b, 20).await;

    let missing = refusal(&connect(None, "allocator-a")).await;
    assert_eq!(missing.code(), Code::Unauthenticated);
    assert!(missing.message().contains("required"), "{missing:?}");

    let unknown = connect(Some("token-c"), "allocator-a");
    let status = refusal(&unknown).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("not accepted"), "{status:?}");
    assert_eq!(refusal(&unknown).await.code(), Code::Unauthenticated);

    // B's token is valid but does not let it register as A.
    let impostor = connect(Some("token-b"), "allocator-a");
    let status = refusal(&impostor).await;
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(impostor.stats().connects, 0);

    allocate_all(&a, 20).await;
    assert_eq!(a.stats().connects, 1, "A's stream was never replaced");
    assert_eq!(
        processor.handler.connected_clients(),
        ["allocator-a", "allocator-b-7f3a"]
    );
    assert_eq!(processor.allocated.load(SeqCst), 60);
}

#[tokio::test]
async fn bearer_tokens_over_mutual_tls() {
    let ca = Ca::new("processor CA");
    let clients = Ca::new("clients CA");
    let processor = Setup {
        tls: Some(server_tls(&ca, Some(&clients))),
        certificate_identity: Some(CertificateIdentity::new()),
        tokens: Some(BearerTokens::new().token("token-a", ClientIds::exact(["allocator-a"]))),
    }
    .start()
    .await;
    let pem = clients.client(vec![dns("allocator-a")]);
    let connect = |token: &str| {
        let tls = client_tls(&ca)
            .identity_pem(&pem.certificate, &pem.key)
            .unwrap();
        builder(processor.address, "https", "allocator-a")
            .tls(tls)
            .bearer_token(token)
            .spawn()
            .unwrap()
    };

    // The certificate names the id, but the token is wrong: both checks must pass.
    let status = refusal(&connect("token-b")).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    let client = connect("token-a");
    allocate_all(&client, 20).await;
    assert_eq!(processor.allocated.load(SeqCst), 20);
}

#[tokio::test]
async fn builder_refuses_mismatched_schemes_and_bad_tokens() {
    let ca = Ca::new("processor CA");
    let address: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let plain = builder(address, "http", "a").tls(client_tls(&ca)).build();
    let error = plain.unwrap_err();
    assert!(error.to_string().contains("not https://"), "{error}");

    let error = builder(address, "https", "a").build().unwrap_err();
    assert!(error.to_string().contains("no TLS"), "{error}");

    let error = builder(address, "http", "a")
        .bearer_token("line\nbreak")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, agones_processor::client::BuildError::InvalidToken),
        "{error}"
    );
}

#[tokio::test]
async fn connections_that_never_finish_the_handshake_are_dropped() {
    let ca = Ca::new("processor CA");
    let pem = ca.processor();
    let tls = ServerTls::from_pem(&pem.certificate, &pem.key)
        .unwrap()
        .handshake_timeout(Duration::from_millis(200));
    let processor = Setup {
        tls: Some(tls),
        ..Default::default()
    }
    .start()
    .await;

    // A connection that sends nothing: the server must not keep it waiting for a handshake.
    let mut stalled = tokio::net::TcpStream::connect(processor.address)
        .await
        .unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut stalled, &mut buffer),
    )
    .await
    .expect("the server kept a connection that never started its handshake");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the server sent {read:?} instead of closing"
    );

    // The server still serves clients that do complete it.
    let client = builder(processor.address, "https", "allocator-1")
        .tls(client_tls(&ca))
        .spawn()
        .unwrap();
    allocate_all(&client, 5).await;
}
