//! What an allocation reports besides its response: the counter and list actions that failed.

use std::fmt;

use crate::proto::AllocationResponse;

/// A successful allocation, with the counter and list actions that could not be carried out.
///
/// Returned by [`Fleet::allocate_with_report`](super::Fleet::allocate_with_report). A failed
/// action does not fail the allocation (Agones reports it as a warning event on the game
/// server); the fleet also logs each one as a `tracing` warning.
#[derive(Clone, Debug, PartialEq)]
pub struct Allocation {
    /// The response sent to the client.
    pub response: AllocationResponse,
    /// The actions that failed, counters first, each in the request's name order.
    pub warnings: Vec<ActionWarning>,
}

/// A counter or list action that could not be carried out; the allocation stands regardless.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActionWarning {
    /// Whether a counter or a list action failed.
    pub target: ActionTarget,
    /// The counter or list name.
    pub name: String,
    /// What went wrong, such as `counter not found`.
    pub message: String,
}

/// What an [`ActionWarning`] was acting on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActionTarget {
    /// A counter action (`counters` in the request).
    Counter,
    /// A list action (`lists` in the request).
    List,
}

impl fmt::Display for ActionWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.target {
            ActionTarget::Counter => "counter",
            ActionTarget::List => "list",
        };
        write!(f, "{target} {:?}: {}", self.name, self.message)
    }
}
