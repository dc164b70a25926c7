//! Fleets from JSON or YAML files that use the field names of the Agones `GameServer` resource.
//!
//! A file holds either a Kubernetes `List` (an object with `items`, as `kubectl get gameservers
//! -o json` prints), a plain array of game servers, or one game server. Each entry is read
//! from `metadata` (`name`, `namespace`, `labels`, `annotations`, `deletionTimestamp`) and
//! `status` (`state`, `nodeName`, `address`, `addresses`, `ports`, `players`, `counters`,
//! `lists`); every other field is ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::game_server::{Address, Counter, GameServer, GameServerState, List, Players, Port};

/// The namespace of an entry without `metadata.namespace`, as in Kubernetes.
const DEFAULT_NAMESPACE: &str = "default";

/// Why a fleet file could not be loaded.
#[derive(Debug)]
pub enum FleetFileError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The text is not valid JSON or YAML; the message says where.
    Syntax(String),
    /// The document is neither a list of game servers nor a game server.
    Shape(String),
    /// One entry has a missing or malformed field.
    Entry {
        /// The entry's position in the list, from 0.
        index: usize,
        /// The entry's `metadata.name`, when it has one.
        name: Option<String>,
        /// The field's path inside the entry, such as `status.counters.rooms.count`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
}

impl fmt::Display for FleetFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, .. } => write!(f, "cannot read fleet file {}", path.display()),
            Self::Syntax(message) => write!(f, "fleet file is not valid: {message}"),
            Self::Shape(message) => write!(f, "fleet file has the wrong shape: {message}"),
            Self::Entry {
                index,
                name,
                field,
                message,
            } => {
                write!(f, "entry {index}")?;
                if let Some(name) = name {
                    write!(f, " ({name})")?;
                }
                write!(f, ": {field}: {message}")
            }
        }
    }
}

impl std::error::Error for FleetFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Reads the game servers of a JSON document.
///
/// # Errors
///
/// [`FleetFileError::Syntax`] for invalid JSON, [`FleetFileError::Shape`] for a document that
/// holds no game servers, [`FleetFileError::Entry`] naming the first malformed entry and field.
pub fn parse_fleet_json(text: &str) -> Result<Vec<GameServer>, FleetFileError> {
    let document: Value =
        serde_json::from_str(text).map_err(|error| FleetFileError::Syntax(error.to_string()))?;
    from_document(&document)
}

/// Reads the game servers of a YAML document.
///
/// # Errors
///
/// As [`parse_fleet_json`], for YAML.
pub fn parse_fleet_yaml(text: &str) -> Result<Vec<GameServer>, FleetFileError> {
    let document: Value =
        serde_yaml_ng::from_str(text).map_err(|error| FleetFileError::Syntax(error.to_string()))?;
    from_document(&document)
}

/// Reads the game servers of a file: YAML when its name ends in `.yaml` or `.yml`, JSON
/// otherwise.
///
/// # Errors
///
/// [`FleetFileError::Io`] when the file cannot be read, otherwise as [`parse_fleet_json`].
pub fn read_fleet_file(path: impl AsRef<Path>) -> Result<Vec<GameServer>, FleetFileError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| FleetFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let yaml = path
        .extension()
        .and_then(|extension| extension.to_str())
        .is_some_and(|extension| matches!(extension, "yaml" | "yml"));
    if yaml {
        parse_fleet_yaml(&text)
    } else {
        parse_fleet_json(&text)
    }
}

/// The entries of a `List`, an array, or a single game server.
fn from_document(document: &Value) -> Result<Vec<GameServer>, FleetFileError> {
    let entries: Vec<&Value> = match document {
        Value::Array(entries) => entries.iter().collect(),
        Value::Object(object) => match object.get("items") {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(Value::Null) => Vec::new(),
            Some(_) => return Err(FleetFileError::Shape("items is not a list".to_owned())),
            None if object.contains_key("metadata") => vec![document],
            None => {
                return Err(FleetFileError::Shape(
                    "expected a list, an object with items, or a game server".to_owned(),
                ));
            }
        },
        _ => {
            return Err(FleetFileError::Shape(
                "expected a list, an object with items, or a game server".to_owned(),
            ));
        }
    };
    entries
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            game_server(entry).map_err(|error| FleetFileError::Entry {
                index,
                name: entry
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                field: error.field,
                message: error.message,
            })
        })
        .collect()
}

/// A malformed field inside one entry.
struct FieldError {
    field: String,
    message: String,
}

type Field<T> = Result<T, FieldError>;

fn wrong(field: &str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// A member of an object; `null` counts as absent, as Kubernetes clients treat it.
fn member<'v>(object: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    object.get(key).filter(|value| !value.is_null())
}

fn object<'v>(value: &'v Value, field: &str) -> Field<&'v Map<String, Value>> {
    value
        .as_object()
        .ok_or_else(|| wrong(field, "expected an object"))
}

fn optional_object<'v>(
    parent: &'v Map<String, Value>,
    key: &str,
    field: &str,
) -> Field<Option<&'v Map<String, Value>>> {
    member(parent, key)
        .map(|value| object(value, field))
        .transpose()
}

fn string(parent: &Map<String, Value>, key: &str, field: &str) -> Field<Option<String>> {
    member(parent, key)
        .map(|value| {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| wrong(field, "expected a string"))
        })
        .transpose()
}

fn integer(parent: &Map<String, Value>, key: &str, field: &str) -> Field<i64> {
    match member(parent, key) {
        None => Ok(0),
        Some(value) => value
            .as_i64()
            .ok_or_else(|| wrong(field, "expected an integer")),
    }
}

fn array<'v>(parent: &'v Map<String, Value>, key: &str, field: &str) -> Field<&'v [Value]> {
    match member(parent, key) {
        None => Ok(&[]),
        Some(value) => value
            .as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| wrong(field, "expected a list")),
    }
}

fn string_map(
    parent: &Map<String, Value>,
    key: &str,
    field: &str,
) -> Field<BTreeMap<String, String>> {
    let Some(map) = optional_object(parent, key, field)? else {
        return Ok(BTreeMap::new());
    };
    map.iter()
        .map(|(key, value)| match value.as_str() {
            Some(value) => Ok((key.clone(), value.to_owned())),
            None => Err(wrong(&format!("{field}.{key}"), "expected a string")),
        })
        .collect()
}

/// One entry of the file.
fn game_server(entry: &Value) -> Field<GameServer> {
    let entry = object(entry, "entry")?;
    let metadata = optional_object(entry, "metadata", "metadata")?
        .ok_or_else(|| wrong("metadata", "missing"))?;
    let name = string(metadata, "name", "metadata.name")?
        .filter(|name| !name.is_empty())
        .ok_or_else(|| wrong("metadata.name", "missing"))?;
    let empty = Map::new();
    let status = optional_object(entry, "status", "status")?.unwrap_or(&empty);

    Ok(GameServer {
        name,
        namespace: string(metadata, "namespace", "metadata.namespace")?
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
        labels: string_map(metadata, "labels", "metadata.labels")?,
        annotations: string_map(metadata, "annotations", "metadata.annotations")?,
        deleting: member(metadata, "deletionTimestamp").is_some(),
        // A game server without a state yet is not allocatable, like any unknown state.
        state: GameServerState::from(
            string(status, "state", "status.state")?
                .unwrap_or_default()
                .as_str(),
        ),
        node_name: string(status, "nodeName", "status.nodeName")?.unwrap_or_default(),
        address: string(status, "address", "status.address")?.unwrap_or_default(),
        addresses: addresses(status)?,
        ports: ports(status)?,
        players: players(status)?,
        counters: counters(status)?,
        lists: lists(status)?,
    })
}

fn addresses(status: &Map<String, Value>) -> Field<Vec<Address>> {
    let entries = array(status, "addresses", "status.addresses")?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let field = format!("status.addresses[{index}]");
            let entry = object(entry, &field)?;
            Ok(Address {
                kind: string(entry, "type", &format!("{field}.type"))?.unwrap_or_default(),
                address: string(entry, "address", &format!("{field}.address"))?.unwrap_or_default(),
            })
        })
        .collect()
}

fn ports(status: &Map<String, Value>) -> Field<Vec<Port>> {
    let entries = array(status, "ports", "status.ports")?;
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let field = format!("status.ports[{index}]");
            let entry = object(entry, &field)?;
            let port_field = format!("{field}.port");
            let port = i32::try_from(integer(entry, "port", &port_field)?)
                .map_err(|_| wrong(&port_field, "out of range for a port"))?;
            Ok(Port {
                name: string(entry, "name", &format!("{field}.name"))?.unwrap_or_default(),
                port,
            })
        })
        .collect()
}

fn players(status: &Map<String, Value>) -> Field<Option<Players>> {
    let Some(players) = optional_object(status, "players", "status.players")? else {
        return Ok(None);
    };
    Ok(Some(Players {
        count: integer(players, "count", "status.players.count")?,
        capacity: integer(players, "capacity", "status.players.capacity")?,
    }))
}

fn counters(status: &Map<String, Value>) -> Field<BTreeMap<String, Counter>> {
    let Some(counters) = optional_object(status, "counters", "status.counters")? else {
        return Ok(BTreeMap::new());
    };
    counters
        .iter()
        .map(|(name, counter)| {
            let field = format!("status.counters.{name}");
            let counter = object(counter, &field)?;
            let counter = Counter {
                count: integer(counter, "count", &format!("{field}.count"))?,
                capacity: integer(counter, "capacity", &format!("{field}.capacity"))?,
            };
            Ok((name.clone(), counter))
        })
        .collect()
}

fn lists(status: &Map<String, Value>) -> Field<BTreeMap<String, List>> {
    let Some(lists) = optional_object(status, "lists", "status.lists")? else {
        return Ok(BTreeMap::new());
    };
    lists
        .iter()
        .map(|(name, list)| {
            let field = format!("status.lists.{name}");
            let list = object(list, &field)?;
            let values_field = format!("{field}.values");
            let values = array(list, "values", &values_field)?
                .iter()
                .enumerate()
                .map(|(index, value)| {
                    value.as_str().map(str::to_owned).ok_or_else(|| {
                        wrong(&format!("{values_field}[{index}]"), "expected a string")
                    })
                })
                .collect::<Field<Vec<String>>>()?;
            let list = List {
                values,
                capacity: integer(list, "capacity", &format!("{field}.capacity"))?,
            };
            Ok((name.clone(), list))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECTL: &str = r#"{
      "apiVersion": "v1",
      "kind": "List",
      "metadata": {"resourceVersion": ""},
      "items": [
        {
          "apiVersion": "agones.dev/v1",
          "kind": "GameServer",
          "metadata": {
            "name": "simple-game-server-7pjrq-2jvzd",
            "namespace": "default",
            "labels": {"agones.dev/fleet": "simple-game-server"},
            "annotations": {"agones.dev/ready-container-id": "containerd://1"},
            "uid": "ignored"
          },
          "spec": {"ports": [{"name": "default", "containerPort": 7654}]},
          "status": {
            "state": "Ready",
            "nodeName": "node-a",
            "address": "10.0.0.5",
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "ports": [{"name": "default", "port": 7023}],
            "players": {"count": 2, "capacity": 10, "ids": ["x", "y"]},
            "counters": {"rooms": {"count": 1, "capacity": 4}},
            "lists": {"players": {"capacity": 10, "values": ["x", "y"]}},
            "reservedUntil": null
          }
        },
        {
          "metadata": {"name": "gone", "deletionTimestamp": "2025-01-01T00:00:00Z"},
          "status": {"state": "Allocated", "players": null}
        }
      ]
    }"#;

    #[test]
    fn kubectl_list_loads_with_unknown_fields_ignored() {
        let fleet = parse_fleet_json(KUBECTL).expect("loads");
        assert_eq!(fleet.len(), 2);
        let first = &fleet[0];
        assert_eq!(first.name, "simple-game-server-7pjrq-2jvzd");
        assert_eq!(first.namespace, "default");
        assert_eq!(first.labels["agones.dev/fleet"], "simple-game-server");
        assert_eq!(first.state, GameServerState::Ready);
        assert_eq!(first.node_name, "node-a");
        assert_eq!(first.addresses[0].kind, "InternalIP");
        assert_eq!(first.ports[0].port, 7023);
        assert_eq!(
            first.players,
            Some(Players {
                count: 2,
                capacity: 10
            })
        );
        assert_eq!(first.counters["rooms"].capacity, 4);
        assert_eq!(first.lists["players"].values, ["x", "y"]);
        let second = &fleet[1];
        assert!(second.deleting);
        assert_eq!(second.namespace, DEFAULT_NAMESPACE);
        assert_eq!(second.players, None);
        assert_eq!(second.state, GameServerState::Allocated);
    }

    #[test]
    fn yaml_plain_list_and_single_game_server() {
        let yaml = "
- metadata: {name: a, namespace: ns}
  status: {state: Ready, nodeName: n1, counters: {rooms: {count: 0, capacity: 2}}}
- metadata: {name: b}
  status: {state: Scheduled}
";
        let fleet = parse_fleet_yaml(yaml).expect("loads");
        assert_eq!(fleet.len(), 2);
        assert_eq!(fleet[0].namespace, "ns");
        assert_eq!(fleet[0].counters["rooms"].capacity, 2);
        assert_eq!(fleet[1].state, GameServerState::Other("Scheduled".into()));

        let single = parse_fleet_yaml("metadata: {name: solo}\nstatus: {state: Ready}\n");
        assert_eq!(single.expect("loads")[0].name, "solo");
    }

    #[test]
    fn malformed_entries_name_the_entry_and_the_field() {
        let rows = [
            (
                r#"[{"metadata": {"name": "a"}}, {"metadata": {"name": "b"},
                   "status": {"counters": {"rooms": {"count": "three"}}}}]"#,
                "entry 1 (b): status.counters.rooms.count: expected an integer",
            ),
            (
                r#"[{"metadata": {"namespace": "x"}}]"#,
                "entry 0: metadata.name: missing",
            ),
            (
                r#"{"items": [{"metadata": {"name": "a", "labels": {"k": 1}}}]}"#,
                "entry 0 (a): metadata.labels.k: expected a string",
            ),
            (
                r#"[{"metadata": {"name": "a"}, "status": {"ports": [{"port": 99999999999}]}}]"#,
                "entry 0 (a): status.ports[0].port: out of range for a port",
            ),
            (
                r#"[{"metadata": {"name": "a"}, "status": {"lists": {"l": {"values": [1]}}}}]"#,
                "entry 0 (a): status.lists.l.values[0]: expected a string",
            ),
            (
                r#"[{"metadata": {"name": "a"}, "status": {"state": 3}}]"#,
                "entry 0 (a): status.state: expected a string",
            ),
            (r#"[7]"#, "entry 0: entry: expected an object"),
        ];
        for (text, expected) in rows {
            let error = parse_fleet_json(text).expect_err(expected);
            assert_eq!(error.to_string(), expected);
        }
        assert!(matches!(
            parse_fleet_json("{"),
            Err(FleetFileError::Syntax(_))
        ));
        assert!(matches!(
            parse_fleet_json(r#"{"kind": "List", "items": 3}"#),
            Err(FleetFileError::Shape(_))
        ));
        assert!(matches!(
            read_fleet_file("/nonexistent/fleet.json"),
            Err(FleetFileError::Io { .. })
        ));
    }
}
