//! Phase 4 of the request path: parse the document once, within token and
//! recursion limits; select the operation; measure it (depth, aliases, root
//! fields, directives, static cost, introspection) with fragments expanded;
//! validate it (against the subgraph schema when there is one).
//!
//! * [`check`] does all of it for one document and returns [`Checked`] or a
//!   [`GraphqlError`] with a stable code.
//! * [`Checked::check_variables`] is the one per-request step: a list sized
//!   by a variable (`friends(first: $n)`) is costed statically with an
//!   assumed size, and the request's values scale that bound.
//! * [`DocumentCache`] remembers the outcome per (document, operation name,
//!   schema, limits).
//! * [`persisted`] resolves APQ hashes and holds documents to a safelist.
//! * [`GraphqlLimits`] is the configuration; [`SubgraphSchema`] a validated
//!   schema with an identity for the cache.
//!
//! Order of the checks: size, parse (tokens, nesting), operation selection,
//! fragment structure (unknown, duplicate, cyclic), directives, depth,
//! aliases, root fields, introspection, cost, then validation. Every limit is
//! checked before the validator runs, so the validator only sees documents
//! that are already small.

mod cache;
mod error;
pub mod federation;
mod limits;
mod measure;
pub mod persisted;
mod schema;
#[cfg(test)]
mod tests;
mod variables;

use apollo_compiler::{
    Node, Schema, ast,
    parser::{Parser, SourceSpan},
    validation::{DiagnosticList, Valid},
};

pub use cache::DocumentCache;
pub use error::GraphqlError;
pub use limits::GraphqlLimits;
pub use schema::SubgraphSchema;
pub use variables::SlicingVariable;

/// The operation type: the data path's, so the phases share one type.
pub use crate::proxy::operation::OperationKind;

impl From<ast::OperationType> for OperationKind {
    fn from(value: ast::OperationType) -> Self {
        match value {
            ast::OperationType::Query => Self::Query,
            ast::OperationType::Mutation => Self::Mutation,
            ast::OperationType::Subscription => Self::Subscription,
        }
    }
}

/// What the selected operation measured; it passed every limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The operation type.
    pub kind: OperationKind,
    /// The operation's name (`None`: anonymous).
    pub name: Option<String>,
    /// Deepest field nesting (`{ a { b } }` is 2).
    pub depth: u32,
    /// Aliased fields.
    pub aliases: u64,
    /// Fields at the root.
    pub root_fields: u64,
    /// Static cost (see [`GraphqlLimits::max_cost`]).
    pub cost: u64,
    /// `__schema` or `__type` is asked (only possible when allowed).
    pub introspection: bool,
    /// `_entities` is a root field (a federation entity fetch).
    pub entity_fetch: bool,
    /// `_service` is a root field (a federation SDL fetch).
    pub service_fetch: bool,
    /// Variables used as slicing arguments: `cost` assumed a size for them,
    /// [`Checked::check_variables`] accounts for the values sent.
    pub slicing_variables: Vec<SlicingVariable>,
    /// What the operation requires of its caller (`@authenticated`,
    /// `@requiresScopes`, `@policy`); empty without a schema.
    pub authz: std::sync::Arc<crate::authz::Requirements>,
}

impl Checked {
    /// An upper bound of the cost with these variable values (the static
    /// cost when no slicing variable asks for more than was assumed).
    pub fn cost_with_variables(
        &self,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> u64 {
        variables::scaled_cost(self.cost, &self.slicing_variables, variables)
    }

    /// Refuses the request when its variables push the cost above
    /// `max_cost`; returns the cost with the variables otherwise. Called per
    /// request (variables are not part of the cached outcome).
    pub fn check_variables(
        &self,
        variables: &serde_json::Map<String, serde_json::Value>,
        limits: &GraphqlLimits,
    ) -> Result<u64, GraphqlError> {
        let cost = self.cost_with_variables(variables);
        if cost > limits.max_cost {
            return Err(GraphqlError::MaxCostExceeded {
                limit: limits.max_cost,
                measured: cost,
            });
        }
        Ok(cost)
    }
}

/// Name under which the document appears in parser diagnostics; never shown
/// to clients.
const SOURCE_NAME: &str = "request.graphql";

/// Parses, measures and validates `doc`, selecting the operation named
/// `operation_name` (or the only one). With a `schema`, the document is
/// validated against it and the cost uses its types and `@cost`/`@listSize`.
pub fn check(
    doc: &str,
    operation_name: Option<&str>,
    schema: Option<&Valid<Schema>>,
    limits: &GraphqlLimits,
) -> Result<Checked, GraphqlError> {
    check_inner(doc, operation_name, schema, None, limits)
}

/// [`check`] against a subgraph's schema, which also derives what the
/// operation requires of its caller ([`Checked::authz`]).
pub fn check_for(
    doc: &str,
    operation_name: Option<&str>,
    schema: Option<&SubgraphSchema>,
    limits: &GraphqlLimits,
) -> Result<Checked, GraphqlError> {
    check_inner(
        doc,
        operation_name,
        schema.map(SubgraphSchema::schema),
        schema,
        limits,
    )
}

fn check_inner(
    doc: &str,
    operation_name: Option<&str>,
    schema: Option<&Valid<Schema>>,
    subgraph: Option<&SubgraphSchema>,
    limits: &GraphqlLimits,
) -> Result<Checked, GraphqlError> {
    if doc.len() > limits.max_document_bytes {
        return Err(GraphqlError::DocumentTooLarge {
            limit: limits.max_document_bytes,
            measured: doc.len(),
        });
    }
    let mut parser = Parser::new()
        .token_limit(limits.max_tokens)
        .recursion_limit(limits.max_recursion);
    let document = match parser.parse_ast(doc, SOURCE_NAME) {
        Ok(document) => document,
        Err(with_errors) => {
            if parser.tokens_reached() > limits.max_tokens {
                return Err(GraphqlError::MaxTokensExceeded {
                    limit: limits.max_tokens,
                    measured: parser.tokens_reached(),
                });
            }
            if parser.recursion_reached() > limits.max_recursion {
                return Err(GraphqlError::MaxRecursionExceeded {
                    limit: limits.max_recursion,
                });
            }
            let (errors, line, column) = first_diagnostic(&with_errors.errors);
            return Err(GraphqlError::ParseFailed {
                errors,
                line,
                column,
            });
        }
    };

    let operation = select_operation(&document, operation_name)?;
    let summary = measure::measure(&document, operation, schema.map(|s| &**s), limits)
        .map_err(|e| invalid_at(&document, e.location()))?;
    enforce(&summary, limits)?;

    let validated = match schema {
        Some(schema) => document
            .to_executable_validate(schema)
            .map(drop)
            .map_err(|e| e.errors),
        None => document.validate_standalone_executable(),
    };
    if let Err(diagnostics) = validated {
        let (errors, line, column) = first_diagnostic(&diagnostics);
        return Err(GraphqlError::ValidationFailed {
            errors,
            line,
            column,
        });
    }

    let mut slicing_variables = summary.sized_by;
    for v in &mut slicing_variables {
        v.default = operation
            .variables
            .iter()
            .find(|d| d.name == v.name.as_str())
            .and_then(|d| d.default_value.as_ref())
            .and_then(|value| measure::non_negative(value));
    }
    Ok(Checked {
        kind: operation.operation_type.into(),
        name: operation.name.as_ref().map(|n| n.to_string()),
        depth: summary.depth,
        aliases: summary.aliases,
        root_fields: summary.root_fields,
        cost: summary.cost,
        introspection: summary.introspection,
        entity_fetch: summary.entity_fetch,
        service_fetch: summary.service_fetch,
        slicing_variables,
        authz: std::sync::Arc::new(
            subgraph
                .map(|sg| crate::authz::requirements(sg, &document, operation))
                .unwrap_or_default(),
        ),
    })
}

/// Refuses a batch of `len` operations when it is larger than `max_batch`.
pub fn check_batch(len: usize, limits: &GraphqlLimits) -> Result<(), GraphqlError> {
    if len > limits.max_batch {
        return Err(GraphqlError::BatchTooLarge {
            limit: limits.max_batch,
            measured: len,
        });
    }
    Ok(())
}

/// The spec's GetOperation: the named operation, or the only one.
///
/// An anonymous operation next to another operation breaks the Lone
/// Anonymous Operation rule: the document is invalid whatever name is asked.
pub(crate) fn select_operation<'d>(
    document: &'d ast::Document,
    name: Option<&str>,
) -> Result<&'d Node<ast::OperationDefinition>, GraphqlError> {
    let operations: Vec<&Node<ast::OperationDefinition>> = document
        .definitions
        .iter()
        .filter_map(|d| d.as_operation_definition())
        .collect();
    if operations.len() > 1
        && let Some(anonymous) = operations.iter().find(|op| op.name.is_none())
    {
        return Err(invalid_at(document, anonymous.location()));
    }
    match name {
        Some(name) => operations
            .into_iter()
            .find(|op| op.name.as_ref().is_some_and(|n| n == name))
            .ok_or(GraphqlError::OperationNotFound),
        None => match operations.as_slice() {
            [] => Err(GraphqlError::OperationNotFound),
            [only] => Ok(only),
            many => Err(GraphqlError::OperationNameRequired {
                operations: many.len(),
            }),
        },
    }
}

/// Checks the measured operation against the limits.
fn enforce(summary: &measure::Summary, limits: &GraphqlLimits) -> Result<(), GraphqlError> {
    if summary.max_directives > limits.max_directives_per_field {
        return Err(GraphqlError::MaxDirectivesExceeded {
            limit: limits.max_directives_per_field,
            measured: summary.max_directives,
        });
    }
    if summary.depth > limits.max_depth {
        return Err(GraphqlError::MaxDepthExceeded {
            limit: limits.max_depth,
            measured: summary.depth,
        });
    }
    if summary.aliases > limits.max_aliases {
        return Err(GraphqlError::MaxAliasesExceeded {
            limit: limits.max_aliases,
            measured: summary.aliases,
        });
    }
    if summary.root_fields > limits.max_root_fields {
        return Err(GraphqlError::MaxRootFieldsExceeded {
            limit: limits.max_root_fields,
            measured: summary.root_fields,
        });
    }
    if summary.introspection && !limits.introspection {
        return Err(GraphqlError::IntrospectionDisabled);
    }
    if summary.cost > limits.max_cost {
        return Err(GraphqlError::MaxCostExceeded {
            limit: limits.max_cost,
            measured: summary.cost,
        });
    }
    Ok(())
}

/// One validation error found outside the validator, at `location`.
fn invalid_at(document: &ast::Document, location: Option<SourceSpan>) -> GraphqlError {
    let (line, column) = location
        .and_then(|at| at.line_column(&document.sources))
        .map_or((0, 0), |at| (at.line, at.column));
    GraphqlError::ValidationFailed {
        errors: 1,
        line,
        column,
    }
}

/// Number of diagnostics and the line and column of the first (0 when it
/// has no location).
fn first_diagnostic(diagnostics: &DiagnosticList) -> (usize, usize, usize) {
    let at = diagnostics
        .iter()
        .next()
        .and_then(|d| d.line_column_range())
        .map_or((0, 0), |range| (range.start.line, range.start.column));
    (diagnostics.len(), at.0, at.1)
}
