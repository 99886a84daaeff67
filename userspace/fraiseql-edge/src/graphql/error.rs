//! Why a GraphQL document was refused.
//!
//! Every variant has a stable [`GraphqlError::code`] (the `extensions.code`
//! of the response). Messages name the limit and what was measured; they
//! never quote the document, the operation name or a parser diagnostic, so
//! nothing a client sent is reflected back.

/// A refused document. All are client errors (HTTP 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GraphqlError {
    /// The document is not syntactically GraphQL.
    #[error("the document could not be parsed ({errors} syntax errors{at})", at = at(*.line, *.column))]
    ParseFailed {
        /// Number of syntax errors.
        errors: usize,
        /// Line of the first error (1-based, 0 when unknown).
        line: usize,
        /// Column of the first error (1-based, 0 when unknown).
        column: usize,
    },
    /// The document breaks a validation rule (of the schema, when one is
    /// given, or a schema-independent one such as a fragment cycle).
    #[error("the document is not valid ({errors} validation errors{at})", at = at(*.line, *.column))]
    ValidationFailed {
        /// Number of validation errors.
        errors: usize,
        /// Line of the first error (1-based, 0 when unknown).
        line: usize,
        /// Column of the first error (1-based, 0 when unknown).
        column: usize,
    },
    /// The requested operation name is not in the document, or the
    /// document has no operation.
    #[error("the requested operation is not in the document")]
    OperationNotFound,
    /// The document has several operations and no name was given.
    #[error("the document has {operations} operations: an operation name is required")]
    OperationNameRequired {
        /// Operations in the document.
        operations: usize,
    },
    /// The document is larger than `max_document_bytes`.
    #[error("the document is {measured} bytes, the limit is {limit}")]
    DocumentTooLarge {
        /// The configured limit.
        limit: usize,
        /// The document's size.
        measured: usize,
    },
    /// The parser stopped at `max_tokens`.
    #[error("the document has more than {limit} tokens (stopped at {measured})")]
    MaxTokensExceeded {
        /// The configured limit.
        limit: usize,
        /// Tokens read when the parser stopped.
        measured: usize,
    },
    /// The parser stopped at `max_recursion` nesting levels.
    #[error("the document nests deeper than {limit} levels")]
    MaxRecursionExceeded {
        /// The configured limit.
        limit: usize,
    },
    /// Field nesting is deeper than `max_depth`.
    #[error("the operation is {measured} fields deep, the limit is {limit}")]
    MaxDepthExceeded {
        /// The configured limit.
        limit: u32,
        /// The operation's depth.
        measured: u32,
    },
    /// More aliases than `max_aliases`.
    #[error("the operation has {measured} aliases, the limit is {limit}")]
    MaxAliasesExceeded {
        /// The configured limit.
        limit: u64,
        /// Aliases counted.
        measured: u64,
    },
    /// More root fields than `max_root_fields`.
    #[error("the operation has {measured} root fields, the limit is {limit}")]
    MaxRootFieldsExceeded {
        /// The configured limit.
        limit: u64,
        /// Root fields counted.
        measured: u64,
    },
    /// One selection carries more directives than `max_directives_per_field`.
    #[error("a selection has {measured} directives, the limit is {limit}")]
    MaxDirectivesExceeded {
        /// The configured limit.
        limit: usize,
        /// Most directives found on one selection.
        measured: usize,
    },
    /// The static cost is above `max_cost`.
    #[error("the operation's estimated cost is {measured}, the limit is {limit}")]
    MaxCostExceeded {
        /// The configured limit.
        limit: u64,
        /// The estimated cost.
        measured: u64,
    },
    /// `__schema` or `__type` was asked while introspection is off.
    #[error("introspection is disabled")]
    IntrospectionDisabled,
    /// A batch holds more operations than `max_batch`.
    #[error("the batch has {measured} operations, the limit is {limit}")]
    BatchTooLarge {
        /// The configured limit.
        limit: usize,
        /// Operations in the batch.
        measured: usize,
    },
}

impl GraphqlError {
    /// The stable `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::ParseFailed { .. } => "GRAPHQL_PARSE_FAILED",
            Self::ValidationFailed { .. } => "GRAPHQL_VALIDATION_FAILED",
            Self::OperationNotFound => "OPERATION_NOT_FOUND",
            Self::OperationNameRequired { .. } => "OPERATION_NAME_REQUIRED",
            Self::DocumentTooLarge { .. } => "DOCUMENT_TOO_LARGE",
            Self::MaxTokensExceeded { .. } => "MAX_TOKENS_EXCEEDED",
            // Nesting the parser refuses is depth, whatever construct nests.
            Self::MaxRecursionExceeded { .. } | Self::MaxDepthExceeded { .. } => {
                "MAX_DEPTH_EXCEEDED"
            }
            Self::MaxAliasesExceeded { .. } => "MAX_ALIASES_EXCEEDED",
            Self::MaxRootFieldsExceeded { .. } => "MAX_ROOT_FIELDS_EXCEEDED",
            Self::MaxDirectivesExceeded { .. } => "MAX_DIRECTIVES_EXCEEDED",
            Self::MaxCostExceeded { .. } => "MAX_COST_EXCEEDED",
            Self::IntrospectionDisabled => "INTROSPECTION_DISABLED",
            Self::BatchTooLarge { .. } => "BATCH_TOO_LARGE",
        }
    }
}

fn at(line: usize, column: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!("; first at line {line}, column {column}")
    }
}

impl GraphqlError {
    /// One error of each kind (for the reference page's test, and to
    /// pre-initialise `graphql_refusals_total` with every code).
    pub(crate) fn examples() -> Vec<GraphqlError> {
        let all = vec![
            Self::ParseFailed {
                errors: 1,
                line: 1,
                column: 1,
            },
            Self::ValidationFailed {
                errors: 1,
                line: 1,
                column: 1,
            },
            Self::OperationNotFound,
            Self::OperationNameRequired { operations: 2 },
            Self::DocumentTooLarge {
                limit: 1,
                measured: 2,
            },
            Self::MaxTokensExceeded {
                limit: 1,
                measured: 2,
            },
            Self::MaxRecursionExceeded { limit: 1 },
            Self::MaxDepthExceeded {
                limit: 1,
                measured: 2,
            },
            Self::MaxAliasesExceeded {
                limit: 1,
                measured: 2,
            },
            Self::MaxRootFieldsExceeded {
                limit: 1,
                measured: 2,
            },
            Self::MaxDirectivesExceeded {
                limit: 1,
                measured: 2,
            },
            Self::MaxCostExceeded {
                limit: 1,
                measured: 2,
            },
            Self::IntrospectionDisabled,
            Self::BatchTooLarge {
                limit: 1,
                measured: 2,
            },
        ];
        for e in &all {
            match e {
                Self::ParseFailed { .. }
                | Self::ValidationFailed { .. }
                | Self::OperationNotFound
                | Self::OperationNameRequired { .. }
                | Self::DocumentTooLarge { .. }
                | Self::MaxTokensExceeded { .. }
                | Self::MaxRecursionExceeded { .. }
                | Self::MaxDepthExceeded { .. }
                | Self::MaxAliasesExceeded { .. }
                | Self::MaxRootFieldsExceeded { .. }
                | Self::MaxDirectivesExceeded { .. }
                | Self::MaxCostExceeded { .. }
                | Self::IntrospectionDisabled
                | Self::BatchTooLarge { .. } => {}
            }
        }
        all
    }
}
