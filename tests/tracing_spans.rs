//! The spans a processor's allocator calls run in, and those of the client's calls and
//! batches, over real gRPC on 127.0.0.1.
//!
//! A test binary of its own: tracing caches per call site whether anyone listens, and tests
//! without a subscriber running beside this one on other threads would race that cache.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agones_processor::server::{ProcessorHandler, recommended_server};
use agones_processor::{AllocationRequest, AllocationResponse, ProcessorClient};
use tokio::net::TcpListener;
use tower::{BoxError, ServiceBuilder};
use tracing::Instrument;

/// Records every new span as "name<parent> field=value ...", and every value recorded on a
/// span later as "record name field=value".
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<Vec<String>>>);

struct Fields<'a>(&'a mut String);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={:?}", field.name(), value));
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let parent = context
            .span(id)
            .and_then(|span| span.parent())
            .map_or("", |parent| parent.name());
        let mut line = format!("{}<{parent}>", attributes.metadata().name());
        attributes.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let name = context.span(id).map_or("", |span| span.name());
        let mut line = format!("record {name}");
        values.record(&mut Fields(&mut line));
        self.0.lock().unwrap().push(line);
    }
}

/// Runs an allocator call in a span of its own, as a tracing layer would.
fn in_allocate_span<F: Future>(future: F) -> tracing::instrument::Instrumented<F> {
    future.instrument(tracing::info_span!("allocate"))
}

// A current-thread runtime: the subscriber is set for this thread, where every task runs.
#[tokio::test(flavor = "current_thread")]
async fn tracing_layer_spans_nest_in_the_stream_and_batch_spans() {
    use tracing_subscriber::layer::SubscriberExt;

    let log = SpanLog::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let allocator = ServiceBuilder::new()
        .map_future(in_allocate_span)
        .service_fn(|request: AllocationRequest| async move {
            Ok::<_, BoxError>(AllocationResponse {
                game_server_name: request.namespace,
                ..Default::default()
            })
        });
    let (reporter, health) = tonic_health::server::health_reporter();
    let processor = ProcessorHandler::builder(allocator)
        .pull_interval(Duration::from_millis(20))
        .health_reporter(reporter)
        .build();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    let server = recommended_server()
        .add_routes(processor.routes(health))
        .serve_with_incoming(agones_processor::server::incoming(listener));
    tokio::spawn(server);
    let client = ProcessorClient::builder(format!("http://{address}"))
        .client_id("allocator-7")
        .spawn()
        .unwrap();
    let calls = ["a", "b"].map(|namespace| {
        client.allocate(AllocationRequest {
            namespace: namespace.into(),
            ..Default::default()
        })
    });
    for result in futures_util::future::join_all(calls).await {
        result.unwrap();
    }

    let spans = log.0.lock().unwrap().clone();
    let find = |prefix: &str| spans.iter().filter(|s| s.starts_with(prefix)).count();
    assert!(
        spans
            .iter()
            .any(|s| s.starts_with("processor_stream<") && s.contains("client_id=allocator-7")),
        "{spans:#?}"
    );
    assert!(find("batch<processor_stream>") >= 1, "{spans:#?}");
    assert!(
        spans
            .iter()
            .any(|s| s.starts_with("batch<") && s.contains("size="))
    );
    assert_eq!(find("allocate<batch>"), 2, "{spans:#?}");

    // The client's side: a span per call carrying its request id, a span per batch it sent.
    assert_eq!(
        find("allocate<>"),
        2,
        "one span per client call: {spans:#?}"
    );
    assert_eq!(find("record allocate request_id="), 2, "{spans:#?}");
    assert!(
        spans
            .iter()
            .any(|s| s.starts_with("batch<processor_client>") && s.contains("batch_id=")),
        "{spans:#?}"
    );
}
