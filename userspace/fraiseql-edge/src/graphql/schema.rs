//! A subgraph schema, validated once, with an identity for the cache.

use std::hash::{DefaultHasher, Hash, Hasher};

use apollo_compiler::{Schema, validation::Valid};

/// A validated subgraph schema and an identity derived from its SDL text:
/// two schemas parsed from the same text share cached results, a changed
/// schema never sees results checked against the old one.
#[derive(Debug)]
pub struct SubgraphSchema {
    schema: Valid<Schema>,
    id: u64,
}

impl SubgraphSchema {
    /// Parses and validates `sdl`. The error lists the diagnostics: it is
    /// meant for the operator at start-up or reload, not for clients.
    pub fn parse(sdl: &str) -> Result<Self, String> {
        let schema =
            Schema::parse_and_validate(sdl, "schema.graphql").map_err(|e| e.to_string())?;
        // Fixed keys: the identity is stable for the life of the process and
        // the text comes from the operator, not from clients.
        let mut hasher = DefaultHasher::new();
        sdl.hash(&mut hasher);
        Ok(Self {
            schema,
            id: hasher.finish(),
        })
    }

    /// The validated schema.
    pub fn schema(&self) -> &Valid<Schema> {
        &self.schema
    }

    /// The schema's identity (a hash of its SDL text).
    pub fn id(&self) -> u64 {
        self.id
    }
}
