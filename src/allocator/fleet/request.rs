//! Request normalisation: what an `AllocationRequest` asks for once defaults and deprecated
//! fields are resolved.

use std::borrow::Cow;
use std::collections::BTreeMap;

use crate::proto::allocation_request::SchedulingStrategy;
use crate::proto::{
    AllocationRequest, CounterAction, GameServerSelector, ListAction, MetaPatch, priority,
};

/// A request with its defaults applied and its deprecated fields resolved.
#[derive(Debug)]
pub(crate) struct Normalized<'a> {
    /// Only game servers of this namespace are candidates.
    pub(crate) namespace: &'a str,
    /// Packed unless the request says Distributed; an unknown value is Packed too.
    pub(crate) scheduling: SchedulingStrategy,
    /// Tried in order; the first one that matches a candidate decides.
    pub(crate) selectors: Vec<Selector<'a>>,
    /// The labels and annotations to merge into the chosen game server.
    pub(crate) metadata: Option<Patch<'a>>,
    /// Tie-breakers over counters and lists, in order.
    pub(crate) priorities: Vec<PriorityKey<'a>>,
    /// Counter actions, by counter name.
    pub(crate) counters: &'a BTreeMap<String, CounterAction>,
    /// List actions, by list name.
    pub(crate) lists: &'a BTreeMap<String, ListAction>,
}

/// One selector, with the request field it came from.
#[derive(Debug)]
pub(crate) struct Selector<'a> {
    /// The field path in the request, so that validation messages can name it.
    pub(crate) field: String,
    /// Owned only for an absent required selector, which stands for an empty one.
    pub(crate) selector: Cow<'a, GameServerSelector>,
}

/// The metadata patch in effect, with the request field it came from.
#[derive(Debug)]
pub(crate) struct Patch<'a> {
    /// `metadata` or the deprecated `metaPatch`.
    pub(crate) field: &'static str,
    pub(crate) patch: &'a MetaPatch,
}

/// A priority with its defaults applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PriorityKey<'a> {
    pub(crate) kind: priority::Type,
    pub(crate) key: &'a str,
    /// Ascending unless the request says Descending.
    pub(crate) descending: bool,
}

impl<'a> Normalized<'a> {
    /// Resolves defaults and deprecated fields the way Agones converts a request.
    // Older clients still send the deprecated fields, so reading them is the point here.
    #[allow(deprecated)]
    pub(crate) fn new(request: &'a AllocationRequest) -> Self {
        let selectors = if request.game_server_selectors.is_empty() {
            let preferred = request
                .preferred_game_server_selectors
                .iter()
                .enumerate()
                .map(|(index, selector)| Selector {
                    field: format!("preferredGameServerSelectors[{index}]"),
                    selector: Cow::Borrowed(selector),
                });
            let required = Selector {
                field: "requiredGameServerSelector".to_owned(),
                selector: match &request.required_game_server_selector {
                    Some(selector) => Cow::Borrowed(selector),
                    None => Cow::Owned(GameServerSelector::default()),
                },
            };
            preferred.chain(std::iter::once(required)).collect()
        } else {
            request
                .game_server_selectors
                .iter()
                .enumerate()
                .map(|(index, selector)| Selector {
                    field: format!("gameServerSelectors[{index}]"),
                    selector: Cow::Borrowed(selector),
                })
                .collect()
        };

        // A present `metadata` wins even when empty: the client chose the new field.
        let metadata = match (&request.metadata, &request.meta_patch) {
            (Some(patch), _) => Some(Patch {
                field: "metadata",
                patch,
            }),
            (None, Some(patch)) => Some(Patch {
                field: "metaPatch",
                patch,
            }),
            (None, None) => None,
        };

        let priorities = request
            .priorities
            .iter()
            .map(|priority| PriorityKey {
                kind: priority.r#type(),
                key: &priority.key,
                descending: priority.order() == priority::Order::Descending,
            })
            .collect();

        Self {
            namespace: &request.namespace,
            scheduling: request.scheduling(),
            selectors,
            metadata,
            priorities,
            counters: &request.counters,
            lists: &request.lists,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Priority;

    fn labelled(key: &str) -> GameServerSelector {
        GameServerSelector {
            match_labels: [(key.to_owned(), "x".to_owned())].into(),
            ..GameServerSelector::default()
        }
    }

    fn keys(normalized: &Normalized<'_>) -> Vec<String> {
        normalized
            .selectors
            .iter()
            .map(|s| {
                let key = s.selector.match_labels.keys().next().cloned();
                format!("{}={}", s.field, key.unwrap_or_default())
            })
            .collect()
    }

    #[test]
    #[allow(deprecated)]
    fn game_server_selectors_win_over_deprecated_selectors() {
        let request = AllocationRequest {
            game_server_selectors: vec![labelled("new")],
            preferred_game_server_selectors: vec![labelled("preferred")],
            required_game_server_selector: Some(labelled("required")),
            ..AllocationRequest::default()
        };
        let normalized = Normalized::new(&request);
        assert_eq!(keys(&normalized), ["gameServerSelectors[0]=new"]);
    }

    #[test]
    #[allow(deprecated)]
    fn deprecated_selectors_are_preferred_then_required() {
        let request = AllocationRequest {
            preferred_game_server_selectors: vec![labelled("p0"), labelled("p1")],
            required_game_server_selector: Some(labelled("required")),
            ..AllocationRequest::default()
        };
        let normalized = Normalized::new(&request);
        assert_eq!(
            keys(&normalized),
            [
                "preferredGameServerSelectors[0]=p0",
                "preferredGameServerSelectors[1]=p1",
                "requiredGameServerSelector=required",
            ]
        );
    }

    #[test]
    fn absent_required_selector_is_an_empty_selector() {
        let request = AllocationRequest::default();
        let normalized = Normalized::new(&request);
        assert_eq!(normalized.selectors.len(), 1);
        assert_eq!(
            *normalized.selectors[0].selector,
            GameServerSelector::default()
        );
    }

    #[test]
    #[allow(deprecated)]
    fn metadata_wins_over_meta_patch_even_when_empty() {
        let old = MetaPatch {
            labels: [("old".to_owned(), "1".to_owned())].into(),
            ..MetaPatch::default()
        };
        let cases = [
            (
                Some(MetaPatch::default()),
                Some(old.clone()),
                Some("metadata"),
            ),
            (None, Some(old.clone()), Some("metaPatch")),
            (None, None, None),
        ];
        for (metadata, meta_patch, expected) in cases {
            let request = AllocationRequest {
                metadata,
                meta_patch,
                ..AllocationRequest::default()
            };
            let normalized = Normalized::new(&request);
            assert_eq!(normalized.metadata.map(|p| p.field), expected);
        }
    }

    #[test]
    fn scheduling_defaults_to_packed() {
        let cases = [
            (0, SchedulingStrategy::Packed),
            (1, SchedulingStrategy::Distributed),
            (7, SchedulingStrategy::Packed),
        ];
        for (value, expected) in cases {
            let request = AllocationRequest {
                scheduling: value,
                ..AllocationRequest::default()
            };
            assert_eq!(Normalized::new(&request).scheduling, expected, "{value}");
        }
    }

    #[test]
    fn priority_without_order_is_ascending() {
        let request = AllocationRequest {
            priorities: vec![
                Priority {
                    r#type: priority::Type::List as i32,
                    key: "players".into(),
                    order: 0,
                },
                Priority {
                    r#type: priority::Type::Counter as i32,
                    key: "rooms".into(),
                    order: priority::Order::Descending as i32,
                },
            ],
            ..AllocationRequest::default()
        };
        let normalized = Normalized::new(&request);
        assert_eq!(
            normalized.priorities,
            [
                PriorityKey {
                    kind: priority::Type::List,
                    key: "players",
                    descending: false,
                },
                PriorityKey {
                    kind: priority::Type::Counter,
                    key: "rooms",
                    descending: true,
                },
            ]
        );
    }
}
