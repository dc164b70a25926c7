//! Arbitrary bytes as protocol messages.

use std::fmt::Debug;

use agones_processor::{
    AllocationRequest, AllocationResponse,
    allocator::{Counter, Fleet, GameServer, GameServerState, List, Players},
    proto::{
        BatchRequest, BatchResponse, ProcessorMessage, PullRequest, RequestWrapper,
        ResponseWrapper, response_wrapper,
    },
    status::status_from_rpc,
};
use prost::Message;

/// The message types [`check_decode`] reads, by the first byte of its input.
pub(crate) const MESSAGE_TYPES: [&str; 9] = [
    "ProcessorMessage",
    "PullRequest",
    "BatchRequest",
    "RequestWrapper",
    "BatchResponse",
    "ResponseWrapper",
    "AllocationRequest",
    "AllocationResponse",
    "google.rpc.Status",
];

/// Decodes `data[1..]` as the message type chosen by `data[0]` (see [`MESSAGE_TYPES`]); what
/// decodes must encode to what decodes to the same message, and the conversions the crate
/// applies to received messages must not panic.
pub(crate) fn check_decode(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match usize::from(selector) % MESSAGE_TYPES.len() {
        0 => {
            if let Some(message) = round_trip::<ProcessorMessage>(bytes) {
                use agones_processor::proto::processor_message::Payload;
                if let Some(Payload::BatchResponse(batch)) = message.payload {
                    answers(batch.responses);
                }
            }
        }
        1 => drop(round_trip::<PullRequest>(bytes)),
        2 => drop(round_trip::<BatchRequest>(bytes)),
        3 => drop(round_trip::<RequestWrapper>(bytes)),
        4 => {
            if let Some(batch) = round_trip::<BatchResponse>(bytes) {
                answers(batch.responses);
            }
        }
        5 => {
            if let Some(wrapper) = round_trip::<ResponseWrapper>(bytes) {
                answers(vec![wrapper]);
            }
        }
        6 => {
            if let Some(request) = round_trip::<AllocationRequest>(bytes) {
                json_round_trip(&request);
            }
        }
        7 => {
            if let Some(response) = round_trip::<AllocationResponse>(bytes) {
                json_round_trip(&response);
            }
        }
        _ => {
            if let Some(status) = round_trip::<tonic_types::Status>(bytes) {
                drop(status_from_rpc(status));
            }
        }
    }
}

/// Decodes `bytes` as `M`; if it decodes, checks that it encodes to what it claims and that
/// its encoding decodes to the same message and encodes to the same bytes.
fn round_trip<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len(), "{message:?}");
    let again = M::decode(encoded.as_slice()).expect("an encoded message decodes");
    assert_eq!(again, message);
    assert_eq!(again.encode_to_vec(), encoded, "encoding is deterministic");

    let delimited = message.encode_length_delimited_to_vec();
    let again = M::decode_length_delimited(delimited.as_slice()).expect("delimited decodes");
    assert_eq!(again, message);
    Some(message)
}

/// What the client makes of answers: an error for each that is not a response.
fn answers(responses: Vec<ResponseWrapper>) {
    for wrapper in responses {
        if let Some(response_wrapper::Result::Error(status)) = wrapper.result {
            let status = status_from_rpc(status);
            assert_ne!(
                status.code(),
                tonic::Code::Ok,
                "an error answer is never OK"
            );
        }
    }
}

/// With the `json` feature: a message that encodes as JSON decodes from it to itself.
#[cfg(feature = "json")]
fn json_round_trip<M>(message: &M)
where
    M: serde::Serialize + serde::de::DeserializeOwned + PartialEq + Debug,
{
    // Enum fields holding a number the schema does not name have no JSON form.
    let Ok(json) = serde_json::to_string(message) else {
        return;
    };
    let again: M = serde_json::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"));
    assert_eq!(&again, message, "{json}");
}

#[cfg(not(feature = "json"))]
fn json_round_trip<M>(_message: &M) {}

/// Allocates every request of `data` (length-delimited `AllocationRequest`s after a first
/// byte that seeds the fleet's randomness) from a small fleet whose counters, lists and player
/// counts sit at the edges of their ranges. Nothing may panic, and every success names a game
/// server of the request's namespace that is then Allocated. Returns how many succeeded.
pub(crate) fn check_allocate(data: &[u8]) -> usize {
    let seed = data.first().copied().unwrap_or_default();
    let fleet = Fleet::new(edge_fleet()).with_seed(u64::from(seed));
    let mut bytes = data.get(1..).unwrap_or_default();
    let mut allocated = 0;
    for _ in 0..16 {
        let Ok(request) = AllocationRequest::decode_length_delimited(&mut bytes) else {
            break;
        };
        // A refusal leaves the fleet as it was; the fleet's own tests check when each applies.
        if let Ok(allocation) = fleet.allocate_with_report(&request) {
            allocated += 1;
            let name = &allocation.response.game_server_name;
            let game_server = fleet
                .get(&request.namespace, name)
                .unwrap_or_else(|| panic!("{name} is not in {}", request.namespace));
            assert_eq!(game_server.state, GameServerState::Allocated);
        }
    }
    allocated
}

/// Eight game servers in two namespaces, with counts and capacities at the edges of `i64`.
fn edge_fleet() -> Vec<GameServer> {
    let extremes = [
        (0, 0),
        (i64::MAX, i64::MAX),
        (i64::MIN, i64::MAX),
        (i64::MAX - 1, 10),
        (-5, i64::MIN),
        (3, 10),
        (10, 3),
        (i64::MIN, i64::MIN),
    ];
    extremes
        .iter()
        .enumerate()
        .map(|(i, &(count, capacity))| GameServer {
            name: format!("gs-{i}"),
            namespace: if i % 2 == 0 { "default" } else { "game-eu" }.into(),
            labels: [
                ("mode".to_owned(), "ctf".to_owned()),
                ("version".to_owned(), "1.4.2".to_owned()),
            ]
            .into(),
            state: if i % 3 == 0 {
                GameServerState::Allocated
            } else {
                GameServerState::Ready
            },
            node_name: format!("node-{}", i % 3),
            players: (i % 2 == 1).then_some(Players { count, capacity }),
            counters: [("rooms".to_owned(), Counter { count, capacity })].into(),
            lists: [(
                "players".to_owned(),
                List {
                    values: vec!["p-17".into(), format!("p-{i}")],
                    capacity,
                },
            )]
            .into(),
            ..GameServer::default()
        })
        .collect()
}
