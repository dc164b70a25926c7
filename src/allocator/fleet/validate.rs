//! Validation: the rules a request must meet before anything is allocated.

use super::request::Normalized;
use crate::allocator::AllocationError;
use crate::proto::GameServerSelector;

/// Checks every rule and reports all the broken ones at once, each naming its field.
///
/// Only the selectors and metadata in effect are checked: deprecated fields that a newer field
/// overrides are ignored, as Agones ignores them.
pub(crate) fn validate(request: &Normalized<'_>) -> Result<(), AllocationError> {
    let mut problems = Vec::new();

    if let Some(patch) = &request.metadata {
        let field = patch.field;
        for (key, value) in &patch.patch.labels {
            if let Err(reason) = qualified_name(key) {
                problems.push(format!("{field}.labels: key {key:?} {reason}"));
            }
            if let Err(reason) = label_value(value) {
                problems.push(format!(
                    "{field}.labels: value {value:?} of {key:?} {reason}"
                ));
            }
        }
        for key in patch.patch.annotations.keys() {
            // Kubernetes checks annotation keys case-insensitively.
            if let Err(reason) = qualified_name(&key.to_lowercase()) {
                problems.push(format!("{field}.annotations: key {key:?} {reason}"));
            }
        }
    }

    for selector in &request.selectors {
        check_selector(&selector.field, &selector.selector, &mut problems);
    }

    for (index, priority) in request.priorities.iter().enumerate() {
        if priority.key.is_empty() {
            problems.push(format!("priorities[{index}].key: must not be empty"));
        }
    }

    for (name, action) in request.counters {
        let field = format!("counters[{name}]");
        if let Some(amount) = action.amount
            && amount < 0
        {
            problems.push(format!("{field}.amount: {amount} is negative"));
        }
        if let Some(capacity) = action.capacity
            && capacity < 0
        {
            problems.push(format!("{field}.capacity: {capacity} is negative"));
        }
        if action.action.is_some() != action.amount.is_some() {
            problems.push(format!("{field}: action and amount must be set together"));
        }
    }

    for (name, action) in request.lists {
        if let Some(capacity) = action.capacity
            && capacity < 0
        {
            problems.push(format!("lists[{name}].capacity: {capacity} is negative"));
        }
    }

    if problems.is_empty() {
        Ok(())
    } else {
        Err(AllocationError::InvalidArgument(problems.join("; ")))
    }
}

/// The rules for one selector's players, counters and lists.
fn check_selector(field: &str, selector: &GameServerSelector, problems: &mut Vec<String>) {
    if let Some(players) = &selector.players
        && players.min_available > players.max_available
    {
        problems.push(format!(
            "{field}.players: minAvailable {} exceeds maxAvailable {}",
            players.min_available, players.max_available
        ));
    }

    for (name, counter) in &selector.counters {
        let field = format!("{field}.counters[{name}]");
        for (bound, value) in [
            ("minCount", counter.min_count),
            ("maxCount", counter.max_count),
            ("minAvailable", counter.min_available),
            ("maxAvailable", counter.max_available),
        ] {
            if value < 0 {
                problems.push(format!("{field}.{bound}: {value} is negative"));
            }
        }
        if counter.max_count != 0 && counter.max_count < counter.min_count {
            problems.push(format!(
                "{field}.maxCount: must be 0 or at least minCount {}",
                counter.min_count
            ));
        }
        if counter.max_available != 0 && counter.max_available < counter.min_available {
            problems.push(format!(
                "{field}.maxAvailable: must be 0 or at least minAvailable {}",
                counter.min_available
            ));
        }
    }

    for (name, list) in &selector.lists {
        let field = format!("{field}.lists[{name}]");
        for (bound, value) in [
            ("minAvailable", list.min_available),
            ("maxAvailable", list.max_available),
        ] {
            if value < 0 {
                problems.push(format!("{field}.{bound}: {value} is negative"));
            }
        }
        if list.max_available != 0 && list.max_available < list.min_available {
            problems.push(format!(
                "{field}.maxAvailable: must be 0 or at least minAvailable {}",
                list.min_available
            ));
        }
    }
}

/// The longest name part of a qualified name, and the longest label value.
const MAX_NAME: usize = 63;

/// The longest DNS subdomain, the optional prefix of a qualified name.
const MAX_SUBDOMAIN: usize = 253;

/// A Kubernetes qualified name: an optional DNS subdomain prefix and `/`, then a name.
fn qualified_name(key: &str) -> Result<(), &'static str> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            dns_subdomain(prefix)?;
            name
        }
        None => key,
    };
    if name.contains('/') {
        return Err("must contain at most one '/'");
    }
    if name.is_empty() {
        return Err("must have a name");
    }
    if name.len() > MAX_NAME {
        return Err("must have a name of at most 63 characters");
    }
    if !label_chars(name) {
        return Err("must have a name of alphanumerics, '-', '_' or '.', \
                    starting and ending with an alphanumeric");
    }
    Ok(())
}

/// A Kubernetes label value: empty, or a name of at most 63 characters.
fn label_value(value: &str) -> Result<(), &'static str> {
    if value.len() > MAX_NAME {
        return Err("must be at most 63 characters");
    }
    if !value.is_empty() && !label_chars(value) {
        return Err("must be alphanumerics, '-', '_' or '.', \
                    starting and ending with an alphanumeric");
    }
    Ok(())
}

/// Alphanumerics, `-`, `_` and `.`, starting and ending with an alphanumeric; not empty.
fn label_chars(name: &str) -> bool {
    let bytes = name.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// A DNS-1123 subdomain: dot-separated labels of lowercase alphanumerics and `-`, each starting
/// and ending with an alphanumeric, at most 253 characters in all.
fn dns_subdomain(prefix: &str) -> Result<(), &'static str> {
    const REASON: &str = "must have a prefix that is a lowercase DNS subdomain";
    if prefix.is_empty() {
        return Err("must not have an empty prefix");
    }
    if prefix.len() > MAX_SUBDOMAIN {
        return Err("must have a prefix of at most 253 characters");
    }
    let valid = prefix.split('.').all(|label| {
        let bytes = label.as_bytes();
        let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        match (bytes.first(), bytes.last()) {
            (Some(first), Some(last)) => {
                alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
            }
            _ => false,
        }
    });
    if valid { Ok(()) } else { Err(REASON) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocator::fleet::test_support::counter_request;
    use crate::proto::{
        AllocationRequest, CounterSelector, ListAction, ListSelector, MetaPatch, PlayerSelector,
        Priority,
    };

    fn metadata(labels: &[(&str, &str)], annotations: &[&str]) -> AllocationRequest {
        AllocationRequest {
            metadata: Some(MetaPatch {
                labels: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                annotations: annotations
                    .iter()
                    .map(|k| ((*k).to_owned(), "any value at all: ✓".to_owned()))
                    .collect(),
            }),
            ..AllocationRequest::default()
        }
    }

    fn selector(selector: GameServerSelector) -> AllocationRequest {
        AllocationRequest {
            game_server_selectors: vec![GameServerSelector::default(), selector],
            ..AllocationRequest::default()
        }
    }

    fn players(min: u64, max: u64) -> AllocationRequest {
        selector(GameServerSelector {
            players: Some(PlayerSelector {
                min_available: min,
                max_available: max,
            }),
            ..GameServerSelector::default()
        })
    }

    fn counter(bounds: [i64; 4]) -> AllocationRequest {
        let [min_count, max_count, min_available, max_available] = bounds;
        let wanted = CounterSelector {
            min_count,
            max_count,
            min_available,
            max_available,
        };
        selector(GameServerSelector {
            counters: [("rooms".to_owned(), wanted)].into(),
            ..GameServerSelector::default()
        })
    }

    fn list(min_available: i64, max_available: i64) -> AllocationRequest {
        let wanted = ListSelector {
            contains_value: String::new(),
            min_available,
            max_available,
        };
        selector(GameServerSelector {
            lists: [("players".to_owned(), wanted)].into(),
            ..GameServerSelector::default()
        })
    }

    fn priority(key: &str) -> AllocationRequest {
        AllocationRequest {
            priorities: vec![Priority {
                key: key.to_owned(),
                ..Priority::default()
            }],
            ..AllocationRequest::default()
        }
    }

    fn list_action(capacity: Option<i64>) -> AllocationRequest {
        let action = ListAction {
            capacity,
            ..ListAction::default()
        };
        AllocationRequest {
            lists: [("players".to_owned(), action)].into(),
            ..AllocationRequest::default()
        }
    }

    fn check(request: &AllocationRequest) -> Result<(), String> {
        validate(&Normalized::new(request)).map_err(|error| match error {
            AllocationError::InvalidArgument(message) => message,
            other => panic!("unexpected {other:?}"),
        })
    }

    #[test]
    fn validation_rules() {
        let long = "a".repeat(64);
        let prefix = format!("{}.io/a", "a".repeat(251));
        let longest_prefix = format!("{}.io/a", "a".repeat(250));
        let longest = "a".repeat(63);
        // (rule, request, None when valid or Some(the start of the message))
        let rows: Vec<(&str, AllocationRequest, Option<&str>)> = vec![
            ("empty request is valid", AllocationRequest::default(), None),
            ("label plain key", metadata(&[("mode", "ctf")], &[]), None),
            (
                "label prefixed key",
                metadata(&[("agones.dev/sdk-x", "1")], &[]),
                None,
            ),
            ("label empty value", metadata(&[("a", "")], &[]), None),
            (
                "label name and value of 63",
                metadata(&[(&longest, &longest)], &[]),
                None,
            ),
            (
                "label prefix of 253",
                metadata(&[(&longest_prefix, "v")], &[]),
                None,
            ),
            (
                "label value with - _ .",
                metadata(&[("a", "v1.2_x-y")], &[]),
                None,
            ),
            (
                "label key empty",
                metadata(&[("", "v")], &[]),
                Some("metadata.labels: key \"\""),
            ),
            (
                "label key bad char",
                metadata(&[("a b", "v")], &[]),
                Some("metadata.labels: key"),
            ),
            (
                "label key starts with -",
                metadata(&[("-a", "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key ends with .",
                metadata(&[("a.", "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key name too long",
                metadata(&[(&long, "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key two slashes",
                metadata(&[("a/b/c", "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key empty prefix",
                metadata(&[("/a", "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key empty name",
                metadata(&[("a.io/", "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key uppercase prefix",
                metadata(&[("A.io/a", "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key prefix too long",
                metadata(&[(&prefix, "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label key prefix bad label",
                metadata(&[("a..io/a", "v")], &[]),
                Some("metadata.labels"),
            ),
            (
                "label value too long",
                metadata(&[("a", &long)], &[]),
                Some("metadata.labels: value"),
            ),
            (
                "label value bad char",
                metadata(&[("a", "x y")], &[]),
                Some("metadata.labels: value"),
            ),
            (
                "label value ends with _",
                metadata(&[("a", "x_")], &[]),
                Some("metadata.labels: value"),
            ),
            (
                "annotation key valid, any value",
                metadata(&[], &["agones.dev/note"]),
                None,
            ),
            (
                "annotation key uppercase prefix allowed",
                metadata(&[], &["Example.COM/Note"]),
                None,
            ),
            (
                "annotation key bad",
                metadata(&[], &["no spaces"]),
                Some("metadata.annotations: key"),
            ),
            ("players min equal max", players(3, 3), None),
            (
                "players min above max",
                players(4, 3),
                Some("gameServerSelectors[1].players: minAvailable 4 exceeds maxAvailable 3"),
            ),
            (
                "players min with max 0",
                players(1, 0),
                Some("gameServerSelectors[1].players"),
            ),
            ("players both 0", players(0, 0), None),
            ("counter bounds valid", counter([1, 5, 2, 6]), None),
            ("counter zero maxima unbounded", counter([5, 0, 6, 0]), None),
            (
                "counter negative minCount",
                counter([-1, 0, 0, 0]),
                Some("gameServerSelectors[1].counters[rooms].minCount: -1 is negative"),
            ),
            (
                "counter negative maxCount",
                counter([0, -1, 0, 0]),
                Some("gameServerSelectors[1].counters[rooms].maxCount"),
            ),
            (
                "counter negative minAvailable",
                counter([0, 0, -1, 0]),
                Some("gameServerSelectors[1].counters[rooms].minAvailable"),
            ),
            (
                "counter negative maxAvailable",
                counter([0, 0, 0, -1]),
                Some("gameServerSelectors[1].counters[rooms].maxAvailable"),
            ),
            (
                "counter maxCount below minCount",
                counter([5, 4, 0, 0]),
                Some("gameServerSelectors[1].counters[rooms].maxCount: must be 0 or at least"),
            ),
            (
                "counter maxAvailable below minAvailable",
                counter([0, 0, 5, 4]),
                Some("gameServerSelectors[1].counters[rooms].maxAvailable: must be 0"),
            ),
            ("list bounds valid", list(1, 1), None),
            (
                "list negative minAvailable",
                list(-1, 0),
                Some("gameServerSelectors[1].lists[players].minAvailable"),
            ),
            (
                "list negative maxAvailable",
                list(0, -2),
                Some("gameServerSelectors[1].lists[players].maxAvailable"),
            ),
            (
                "list maxAvailable below minAvailable",
                list(3, 2),
                Some("gameServerSelectors[1].lists[players].maxAvailable: must be 0"),
            ),
            ("priority key set", priority("rooms"), None),
            (
                "priority key empty",
                priority(""),
                Some("priorities[0].key: must not be empty"),
            ),
            (
                "counter action complete",
                counter_request(Some("Increment"), Some(1), Some(3)),
                None,
            ),
            (
                "counter action capacity only",
                counter_request(None, None, Some(0)),
                None,
            ),
            (
                "counter action negative amount",
                counter_request(Some("Increment"), Some(-1), None),
                Some("counters[rooms].amount: -1 is negative"),
            ),
            (
                "counter action negative capacity",
                counter_request(None, None, Some(-1)),
                Some("counters[rooms].capacity: -1 is negative"),
            ),
            (
                "counter action without amount",
                counter_request(Some("Increment"), None, None),
                Some("counters[rooms]: action and amount must be set together"),
            ),
            (
                "counter amount without action",
                counter_request(None, Some(1), None),
                Some("counters[rooms]: action and amount must be set together"),
            ),
            (
                "counter unknown action is not a validation error",
                counter_request(Some("Double"), Some(1), None),
                None,
            ),
            ("list action capacity", list_action(Some(10)), None),
            (
                "list action capacity above 1000 is not a validation error",
                list_action(Some(1001)),
                None,
            ),
            (
                "list action negative capacity",
                list_action(Some(-1)),
                Some("lists[players].capacity: -1 is negative"),
            ),
        ];
        for (rule, request, expected) in rows {
            let result = check(&request);
            match expected {
                None => assert_eq!(result, Ok(()), "{rule}"),
                Some(start) => {
                    let message = result.expect_err(rule);
                    assert!(message.starts_with(start), "{rule}: {message}");
                }
            }
        }
    }

    #[test]
    #[allow(deprecated)]
    fn deprecated_fields_are_named_and_overridden_ones_ignored() {
        let bad = GameServerSelector {
            players: Some(PlayerSelector {
                min_available: 2,
                max_available: 1,
            }),
            ..GameServerSelector::default()
        };
        let request = AllocationRequest {
            preferred_game_server_selectors: vec![bad.clone()],
            required_game_server_selector: Some(bad.clone()),
            meta_patch: Some(MetaPatch {
                labels: [("bad key".to_owned(), String::new())].into(),
                ..MetaPatch::default()
            }),
            ..AllocationRequest::default()
        };
        let message = check(&request).expect_err("invalid");
        for field in [
            "preferredGameServerSelectors[0].players",
            "requiredGameServerSelector.players",
            "metaPatch.labels",
        ] {
            assert!(message.contains(field), "{field} in {message}");
        }

        let overridden = AllocationRequest {
            game_server_selectors: vec![GameServerSelector::default()],
            metadata: Some(MetaPatch::default()),
            ..request
        };
        assert_eq!(check(&overridden), Ok(()));
    }

    #[test]
    fn every_problem_is_reported() {
        let request = AllocationRequest {
            priorities: vec![Priority::default()],
            ..list_action(Some(-5))
        };
        let message = check(&request).expect_err("invalid");
        assert_eq!(
            message,
            "priorities[0].key: must not be empty; lists[players].capacity: -5 is negative"
        );
    }
}
