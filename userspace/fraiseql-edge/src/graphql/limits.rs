//! The limits a GraphQL document must stay within.

use serde::{Deserialize, Serialize};

/// Highest accepted `max_recursion`: the parser and the analysis recurse once
/// per nesting level, and each level costs stack; beyond this a hostile
/// document could exhaust a 2 MiB worker stack.
const RECURSION_CEILING: usize = 2_000;

/// Limits on one GraphQL document (phase 4 of the request path).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields, default)]
pub struct GraphqlLimits {
    /// Largest document, in bytes, before anything else is looked at.
    pub max_document_bytes: usize,
    /// Most lexical tokens the parser reads before it gives up. Whitespace,
    /// commas and comments count, as apollo-parser (and so Apollo Router)
    /// counts them: `{ a b }` is 8 tokens with the end of input.
    pub max_tokens: usize,
    /// Deepest syntactic nesting (selection sets, values, list types) the
    /// parser follows; it protects the stack.
    pub max_recursion: usize,
    /// Deepest field nesting of the selected operation, fragments expanded
    /// (`{ a }` is 1, `{ a { b } }` is 2).
    pub max_depth: u32,
    /// Most aliased fields in the selected operation, fragments expanded.
    pub max_aliases: u64,
    /// Most fields at the root of the selected operation, fragments expanded.
    pub max_root_fields: u64,
    /// Most directives on one field, fragment spread, inline fragment,
    /// fragment definition or operation.
    pub max_directives_per_field: usize,
    /// Highest static cost of the selected operation (IBM cost model:
    /// `@cost(weight:)`, `@listSize(assumedSize:, slicingArguments:)`).
    pub max_cost: u64,
    /// Size assumed for a list field when neither a slicing argument nor
    /// `@listSize(assumedSize:)` says otherwise.
    pub default_list_size: u64,
    /// Cost added for each root field of a mutation.
    pub mutation_base_cost: u64,
    /// Whether `__schema` and `__type` may be queried.
    pub introspection: bool,
    /// Most operations in one batched request.
    pub max_batch: usize,
}

impl Default for GraphqlLimits {
    fn default() -> Self {
        Self {
            // Apollo Router's request body limit: a document cannot be larger
            // than the body that carries it.
            max_document_bytes: 2_000_000,
            // Apollo Router's parser token limit; real operations stay far below.
            max_tokens: 15_000,
            // Apollo Router's (and apollo-parser's) recursion limit.
            max_recursion: 500,
            // Deeper than real client queries (GraphQL Armor uses 6), shallow
            // enough that a recursive type cannot be walked into a bomb.
            max_depth: 15,
            // Aliases are how one field is asked many times; GraphQL Armor
            // allows 15, generated clients sometimes need a few more.
            max_aliases: 30,
            // Each root field is usually one resolver fan-out upstream.
            max_root_fields: 20,
            // `@include`/`@skip`/`@defer` and a few custom ones; GraphQL Armor
            // caps 50 per document, a flood on one field is an attack.
            max_directives_per_field: 10,
            // GraphQL Armor's default cost limit.
            max_cost: 5_000,
            // IBM cost spec / Apollo demand control default for an
            // unsized list.
            default_list_size: 10,
            // IBM cost spec: a mutation weighs 10.
            mutation_base_cost: 10,
            // Off by default like Apollo Router: the schema is not public.
            introspection: false,
            // Hive Gateway's batch limit.
            max_batch: 10,
        }
    }
}

impl GraphqlLimits {
    /// These limits with the keys of `overrides` (a subgraph's `graphql`
    /// table) in place of theirs; unknown keys and wrong types are errors.
    pub fn overridden(&self, overrides: &toml::Table) -> Result<Self, String> {
        let mut table = toml::Table::try_from(self).map_err(|e| e.to_string())?;
        for (key, value) in overrides {
            table.insert(key.clone(), value.clone());
        }
        table
            .try_into::<Self>()
            .map_err(|e| e.message().to_string())
    }

    /// Rejects settings that would disable a limit by accident or endanger
    /// the stack; `at` is the config path, used in the message.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        let at_least_one: [(&str, u64); 8] = [
            ("max_document_bytes", self.max_document_bytes as u64),
            ("max_tokens", self.max_tokens as u64),
            ("max_recursion", self.max_recursion as u64),
            ("max_depth", u64::from(self.max_depth)),
            ("max_root_fields", self.max_root_fields),
            ("max_cost", self.max_cost),
            ("default_list_size", self.default_list_size),
            ("max_batch", self.max_batch as u64),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                return Err(format!("{at}.{key}: must be at least 1"));
            }
        }
        if self.max_recursion > RECURSION_CEILING {
            return Err(format!(
                "{at}.max_recursion: must be at most {RECURSION_CEILING} (stack safety), got {}",
                self.max_recursion
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(GraphqlLimits::default().validate("graphql"), Ok(()));
    }

    #[test]
    fn zero_and_oversized_values_name_the_key() {
        let zero = GraphqlLimits {
            max_tokens: 0,
            ..GraphqlLimits::default()
        };
        assert_eq!(
            zero.validate("graphql").unwrap_err(),
            "graphql.max_tokens: must be at least 1"
        );
        let deep = GraphqlLimits {
            max_recursion: 100_000,
            ..GraphqlLimits::default()
        };
        assert!(
            deep.validate("graphql")
                .unwrap_err()
                .starts_with("graphql.max_recursion:")
        );
    }

    #[test]
    fn a_subgraph_overrides_only_the_keys_it_names() {
        let base = GraphqlLimits {
            max_depth: 9,
            ..GraphqlLimits::default()
        };
        let t: toml::Table = toml::from_str("introspection = true\nmax_cost = 50").unwrap();
        let o = base.overridden(&t).unwrap();
        assert!(o.introspection);
        assert_eq!((o.max_cost, o.max_depth), (50, 9));
        let bad: toml::Table = toml::from_str("max_dept = 3").unwrap();
        assert!(base.overridden(&bad).unwrap_err().contains("max_dept"));
        let wrong: toml::Table = toml::from_str("max_depth = \"deep\"").unwrap();
        assert!(base.overridden(&wrong).is_err());
    }

    #[test]
    fn unknown_keys_are_rejected_and_missing_keys_default() {
        let parsed: GraphqlLimits = toml::from_str("max_depth = 7\nintrospection = true").unwrap();
        assert_eq!(parsed.max_depth, 7);
        assert!(parsed.introspection);
        assert_eq!(parsed.max_tokens, 15_000);
        assert!(toml::from_str::<GraphqlLimits>("max_dept = 7").is_err());
    }
}
