//! What kind of operation a request carries — it decides whether a failed
//! try may be retried (queries yes; mutations only when nothing was sent).
//! The graphql phase reads it from the syntax tree.

/// The operation type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// `query` (and shorthand `{ … }`).
    Query = 0,
    /// `mutation`.
    Mutation = 1,
    /// `subscription`.
    Subscription = 2,
}

impl OperationKind {
    /// Lowercase name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
        }
    }
}
