//! A subgraph schema, validated once, with an identity for the cache.

use std::hash::{DefaultHasher, Hash, Hasher};

use apollo_compiler::{Schema, ast, validation::Valid};

use super::federation::{self, DirectiveNames};

/// Name under which the SDL appears in diagnostics.
const SDL_NAME: &str = "schema.graphql";

/// A validated subgraph schema and an identity derived from its SDL text:
/// two schemas parsed from the same text share cached results, a changed
/// schema never sees results checked against the old one.
#[derive(Debug)]
pub struct SubgraphSchema {
    schema: Valid<Schema>,
    id: u64,
    names: DirectiveNames,
}

impl SubgraphSchema {
    /// Parses and validates `sdl`. The error lists the diagnostics: it is
    /// meant for the operator at start-up or reload, not for clients.
    ///
    /// A federation subgraph SDL (with a federation `@link`, or using
    /// `@key`) is completed first with the federation definitions it uses
    /// without defining — directives, their scalars, `_Any`, `_Service`,
    /// `_Entity`, `Query._entities` and `Query._service` — and its type
    /// extensions need no base definition (Federation 1 `extend type
    /// Query`). A plain SDL is validated as written, except that federation
    /// directives it applies without defining are defined.
    pub fn parse(sdl: &str) -> Result<Self, String> {
        let document = ast::Document::parse(sdl, SDL_NAME).map_err(|e| e.errors.to_string())?;
        let completion = federation::complete(&document);
        let mut builder = Schema::builder();
        if completion.federation {
            builder = builder.adopt_orphan_extensions();
        }
        let mut builder = builder.add_ast(&document);
        if !completion.additions.is_empty() {
            builder = builder.parse(completion.additions, "federation.graphql");
        }
        let schema = builder
            .build()
            .map_err(|e| e.errors.to_string())?
            .validate()
            .map_err(|e| e.errors.to_string())?;
        // Fixed keys: the identity is stable for the life of the process and
        // the text comes from the operator, not from clients.
        let mut hasher = DefaultHasher::new();
        sdl.hash(&mut hasher);
        Ok(Self {
            schema,
            id: hasher.finish(),
            names: completion.names,
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

    /// The names under which this SDL spells `@authenticated`,
    /// `@requiresScopes` and `@policy` (after `@link` imports, renames and
    /// prefixes).
    pub fn directive_names(&self) -> &DirectiveNames {
        &self.names
    }
}
