//! Tests of [`check`]: valid operations, cost, and the attack suite. Every
//! refusal is asserted by its code; the attacks run on the default 2 MiB
//! test-thread stack, so an unbounded recursion would crash the test.

use std::fmt::Write as _;

use super::*;

/// A small federation-like subgraph. The federation and cost directives are
/// declared because the validator refuses undeclared ones.
const SDL: &str = r#"
directive @key(fields: String!) repeatable on OBJECT | INTERFACE
directive @listSize(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
directive @cost(weight: Int!) on ARGUMENT_DEFINITION | ENUM | FIELD_DEFINITION | INPUT_FIELD_DEFINITION | OBJECT | SCALAR
scalar _Any
union _Entity = User

type Query {
  user(id: ID!): User
  users: [User!]!
  top(limit: Int = 5): [User!]! @listSize(slicingArguments: ["limit"])
  search(first: Int, last: Int): [User!]! @listSize(slicingArguments: ["first", "last"], assumedSize: 3)
  expensive: Int @cost(weight: 100)
  _entities(representations: [_Any!]!): [_Entity]!
  connection(first: Int): UserConnection! @listSize(slicingArguments: ["first"], sizedFields: ["edges"])
}

type User @key(fields: "id") {
  id: ID!
  name: String
  friends(first: Int): [User!]! @listSize(slicingArguments: ["first"])
  tags: [String!]!
}

type UserConnection {
  edges: [UserEdge!]!
  pageInfo: PageInfo!
}

type UserEdge {
  node: User!
}

type PageInfo {
  hasNextPage: Boolean!
}

type Mutation {
  rename(id: ID!, name: String!): User
}
"#;

fn schema() -> SubgraphSchema {
    SubgraphSchema::parse(SDL).expect("test SDL is valid")
}

fn ok(doc: &str, schema: Option<&SubgraphSchema>) -> Checked {
    check(
        doc,
        None,
        schema.map(SubgraphSchema::schema),
        &GraphqlLimits::default(),
    )
    .unwrap_or_else(|e| panic!("{doc:.200}: {e} ({})", e.code()))
}

fn code_with(doc: &str, schema: Option<&SubgraphSchema>, limits: &GraphqlLimits) -> &'static str {
    match check(doc, None, schema.map(SubgraphSchema::schema), limits) {
        Ok(checked) => panic!("{doc:.200}: accepted as {checked:?}"),
        Err(e) => e.code(),
    }
}

fn code(doc: &str, schema: Option<&SubgraphSchema>) -> &'static str {
    code_with(doc, schema, &GraphqlLimits::default())
}

fn cost(doc: &str) -> u64 {
    ok(doc, Some(&schema())).cost
}

// ---- valid operations ----

#[test]
fn a_valid_query_without_a_schema() {
    let checked = ok("query Q { a: user(id: 1) { name friends { id } } }", None);
    assert_eq!(
        checked,
        Checked {
            kind: OperationKind::Query,
            name: Some("Q".into()),
            depth: 3,
            aliases: 1,
            root_fields: 1,
            cost: 2,
            introspection: false,
            entity_fetch: false,
            service_fetch: false,
            slicing_variables: Vec::new(),
            authz: Default::default(),
        }
    );
}

#[test]
fn a_valid_query_with_a_schema() {
    let schema = schema();
    let checked = ok(
        "query Q($id: ID!) { me: user(id: $id) { ...Who } } fragment Who on User { id name }",
        Some(&schema),
    );
    assert_eq!(
        (
            checked.kind,
            checked.depth,
            checked.aliases,
            checked.root_fields,
            checked.cost
        ),
        (OperationKind::Query, 2, 1, 1, 1)
    );
}

#[test]
fn the_operation_type_comes_from_the_selected_operation() {
    let schema = schema();
    let doc = "query Q { users { id } } mutation M { rename(id: 1, name: \"x\") { id } }";
    let limits = GraphqlLimits::default();
    let of = |name| {
        check(doc, Some(name), Some(schema.schema()), &limits)
            .unwrap()
            .kind
    };
    assert_eq!(of("Q"), OperationKind::Query);
    assert_eq!(of("M"), OperationKind::Mutation);
    assert_eq!(
        ok("subscription { a }", None).kind,
        OperationKind::Subscription
    );
}

#[test]
fn entity_fetches_are_flagged() {
    let schema = schema();
    let doc = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id } } }";
    assert!(ok(doc, Some(&schema)).entity_fetch);
    assert!(!ok("{ user(id: 1) { id } }", Some(&schema)).entity_fetch);
}

#[test]
fn invalid_against_the_schema() {
    let schema = schema();
    assert_eq!(
        code("{ user(id: 1) { nope } }", Some(&schema)),
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(
        code("{ user { id } }", Some(&schema)),
        "GRAPHQL_VALIDATION_FAILED"
    );
    // Schema-independent rules hold without a schema.
    assert_eq!(
        code("{ a } fragment Unused on Q { a }", None),
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(code("{ ...Missing }", None), "GRAPHQL_VALIDATION_FAILED");
}

#[test]
fn syntax_errors_are_parse_failures_that_do_not_echo_the_document() {
    let err = check("{ secret_field( }", None, None, &GraphqlLimits::default()).unwrap_err();
    assert_eq!(err.code(), "GRAPHQL_PARSE_FAILED");
    assert!(!err.to_string().contains("secret_field"), "{err}");
}

// ---- operation selection ----

#[test]
fn unknown_operation_name() {
    let err = check("query A { a }", Some("B"), None, &GraphqlLimits::default()).unwrap_err();
    assert_eq!(err.code(), "OPERATION_NOT_FOUND");
    assert_eq!(
        code("fragment F on Query { a }", None),
        "OPERATION_NOT_FOUND"
    );
}

#[test]
fn several_operations_need_a_name() {
    assert_eq!(
        code("query A { a } query B { b }", None),
        "OPERATION_NAME_REQUIRED"
    );
}

#[test]
fn multiple_anonymous_operations_are_invalid() {
    // Lone Anonymous Operation (spec §5.2.2.1): invalid whatever is asked.
    assert_eq!(code("{ a } { b }", None), "GRAPHQL_VALIDATION_FAILED");
    let err = check(
        "{ a } query B { b }",
        Some("B"),
        None,
        &GraphqlLimits::default(),
    );
    assert_eq!(err.unwrap_err().code(), "GRAPHQL_VALIDATION_FAILED");
}

// ---- cost ----

#[test]
fn cost_weights_follow_the_ibm_defaults() {
    assert_eq!(cost("{ user(id: 1) { id name } }"), 1);
    // A list of scalars: 10 × 0.
    assert_eq!(cost("{ user(id: 1) { tags } }"), 1);
    assert_eq!(cost("{ expensive }"), 100);
    assert_eq!(cost("{ __typename }"), 0);
}

#[test]
fn a_list_without_a_slicing_argument_uses_the_default_size() {
    assert_eq!(cost("{ users { id } }"), 10);
    assert_eq!(cost("{ user(id: 1) { friends { id } } }"), 1 + 10);
    let limits = GraphqlLimits {
        default_list_size: 4,
        ..GraphqlLimits::default()
    };
    let checked = check("{ users { id } }", None, Some(schema().schema()), &limits).unwrap();
    assert_eq!(checked.cost, 4);
}

#[test]
fn slicing_arguments_size_the_list() {
    assert_eq!(
        cost("{ user(id: 1) { friends(first: 50) { id } } }"),
        1 + 50
    );
    // The largest slicing argument counts; absent ones fall back to
    // assumedSize, then to the argument's default.
    assert_eq!(cost("{ search(first: 2, last: 7) { id } }"), 7);
    assert_eq!(cost("{ search { id } }"), 3);
    assert_eq!(cost("{ top { id } }"), 5);
    assert_eq!(cost("{ top(limit: 40) { id } }"), 40);
    // A variable is unknown here: the fallback applies.
    assert_eq!(
        cost("query($n: Int) { user(id: 1) { friends(first: $n) { id } } }"),
        1 + 10
    );
}

#[test]
fn nested_lists_multiply() {
    assert_eq!(
        cost("{ users { friends(first: 5) { friends(first: 5) { id } } } }"),
        10 * (1 + 5 * (1 + 5))
    );
}

#[test]
fn fragments_cost_what_they_would_cost_inline() {
    let inline = cost("{ users { friends(first: 5) { id name } } }");
    let spread = cost("{ users { ...F } } fragment F on User { friends(first: 5) { id name } }");
    assert_eq!(inline, spread);
}

#[test]
fn mutations_carry_a_base_cost() {
    assert_eq!(
        cost("mutation { rename(id: 1, name: \"x\") { id } }"),
        1 + 10
    );
}

#[test]
fn a_huge_slicing_argument_is_expensive_not_defaulted() {
    let schema = schema();
    let doc = "{ user(id: 1) { friends(first: 99999999999999999999) { id } } }";
    assert_eq!(code(doc, Some(&schema)), "MAX_COST_EXCEEDED");
    assert_eq!(
        code("{ users { friends(first: 1000) { id } } }", Some(&schema)),
        "MAX_COST_EXCEEDED"
    );
}

// ---- attacks ----

fn nested(depth: usize) -> String {
    let mut doc = String::with_capacity(depth * 6);
    doc.push('{');
    for _ in 0..depth {
        doc.push_str(" a {");
    }
    doc.push_str(" b");
    for _ in 0..=depth {
        doc.push_str(" }");
    }
    doc
}

#[test]
fn depth_bomb_1000_deep() {
    assert_eq!(code(&nested(1_000), None), "MAX_DEPTH_EXCEEDED");
    // 100 000 deep with room for the tokens: the parser's recursion limit
    // stops it, the stack survives.
    let limits = GraphqlLimits {
        max_tokens: 1_000_000,
        ..GraphqlLimits::default()
    };
    let err = check(&nested(100_000), None, None, &limits).unwrap_err();
    assert_eq!(err, GraphqlError::MaxRecursionExceeded { limit: 500 });
    assert_eq!(err.code(), "MAX_DEPTH_EXCEEDED");
}

#[test]
fn depth_just_over_the_limit() {
    assert_eq!(ok(&nested(14), None).depth, 15);
    let err = check(&nested(15), None, None, &GraphqlLimits::default()).unwrap_err();
    assert_eq!(
        err,
        GraphqlError::MaxDepthExceeded {
            limit: 15,
            measured: 16
        }
    );
}

#[test]
fn depth_through_a_chain_of_fragments() {
    // Each fragment nests one level; no single definition is deep.
    let mut doc = String::from("{ ...F0 }\n");
    for i in 0..40 {
        writeln!(doc, "fragment F{i} on Query {{ a {{ ...F{} }} }}", i + 1).unwrap();
    }
    doc.push_str("fragment F40 on Query { b }");
    assert_eq!(code(&doc, None), "MAX_DEPTH_EXCEEDED");
}

#[test]
fn a_long_fragment_chain_does_not_recurse() {
    let limits = GraphqlLimits {
        max_tokens: 1_000_000,
        max_depth: u32::MAX,
        ..GraphqlLimits::default()
    };
    let mut doc = String::from("{ ...F0 }\n");
    for i in 0..20_000 {
        writeln!(doc, "fragment F{i} on Query {{ ...F{} }}", i + 1).unwrap();
    }
    doc.push_str("fragment F20000 on Query { b }");
    let limits_without_validation = GraphqlLimits {
        max_root_fields: 0,
        ..limits
    };
    // Measuring a 20 000-fragment chain finishes (and is refused here before
    // the validator runs, which has limits of its own).
    assert_eq!(
        code_with(&doc, None, &limits_without_validation),
        "MAX_ROOT_FIELDS_EXCEEDED"
    );
}

#[test]
fn a_thousand_aliases() {
    let mut doc = String::from("{");
    for i in 0..1_000 {
        write!(doc, " a{i}: a").unwrap();
    }
    doc.push_str(" }");
    assert_eq!(code(&doc, None), "MAX_ALIASES_EXCEEDED");
    // Nested under one root field, and through a fragment spread twice.
    let mut fields = String::new();
    for i in 0..20 {
        write!(fields, " x{i}: id").unwrap();
    }
    let doc = format!("{{ u {{ ...F ...F }} }} fragment F on U {{{fields} }}");
    let err = check(&doc, None, None, &GraphqlLimits::default()).unwrap_err();
    assert_eq!(
        err,
        GraphqlError::MaxAliasesExceeded {
            limit: 30,
            measured: 40
        }
    );
}

#[test]
fn too_many_root_fields() {
    let doc = format!("{{{} }}", " a".repeat(21));
    assert_eq!(code(&doc, None), "MAX_ROOT_FIELDS_EXCEEDED");
}

#[test]
fn twenty_thousand_duplicated_fields() {
    let doc = format!("{{ user(id: 1) {{{} }} }}", " id".repeat(20_000));
    assert_eq!(code(&doc, None), "MAX_TOKENS_EXCEEDED");
    // With room for the tokens, the cost refuses duplicated object fields.
    let limits = GraphqlLimits {
        max_tokens: 1_000_000,
        ..GraphqlLimits::default()
    };
    let doc = format!(
        "{{ user(id: 1) {{{} }} }}",
        " friends { id }".repeat(20_000)
    );
    let err = check(&doc, None, Some(schema().schema()), &limits).unwrap_err();
    assert_eq!(
        err,
        GraphqlError::MaxCostExceeded {
            limit: 5_000,
            measured: 1 + 20_000 * 10
        }
    );
}

#[test]
fn forty_thousand_tokens() {
    let doc = format!("{{ a(x: [{}]) }}", "1 ".repeat(40_000));
    let err = check(&doc, None, None, &GraphqlLimits::default()).unwrap_err();
    assert_eq!(err.code(), "MAX_TOKENS_EXCEEDED");
    assert!(err.to_string().contains("15000"), "{err}");
}

#[test]
fn fragment_cycles_are_refused() {
    let doc = "{ ...A } fragment A on Query { a { ...B } } fragment B on Query { ...A }";
    assert_eq!(code(doc, None), "GRAPHQL_VALIDATION_FAILED");
    // Found outside the validator, still located.
    let err = check(
        "{ ...A }\nfragment A on Query { ...A }",
        None,
        None,
        &GraphqlLimits::default(),
    );
    assert_eq!(
        err.unwrap_err(),
        GraphqlError::ValidationFailed {
            errors: 1,
            line: 2,
            column: 1
        }
    );
    let schema = schema();
    let doc = "{ user(id: 1) { ...A } } fragment A on User { friends { ...A } }";
    assert_eq!(code(doc, Some(&schema)), "GRAPHQL_VALIDATION_FAILED");
}

#[test]
fn a_fragment_bomb_is_measured_in_linear_time() {
    // 2^40 expanded fields from 41 small fragments.
    let mut doc = String::from("{ ...F0 }\n");
    for i in 0..40 {
        writeln!(
            doc,
            "fragment F{i} on Query {{ ...F{n} ...F{n} }}",
            n = i + 1
        )
        .unwrap();
    }
    doc.push_str("fragment F40 on Query { a }");
    let err = check(&doc, None, None, &GraphqlLimits::default()).unwrap_err();
    assert_eq!(
        err,
        GraphqlError::MaxRootFieldsExceeded {
            limit: 20,
            measured: 1 << 40
        }
    );
}

#[test]
fn directive_flood() {
    let doc = format!("{{ a{} }}", " @include(if: true)".repeat(100));
    assert_eq!(code(&doc, None), "MAX_DIRECTIVES_EXCEEDED");
    let doc = format!(
        "{{ ... on Query{} {{ a }} }}",
        " @skip(if: false)".repeat(11)
    );
    assert_eq!(code(&doc, None), "MAX_DIRECTIVES_EXCEEDED");
    let doc = format!("query Q{} {{ a }}", " @x".repeat(11));
    assert_eq!(code(&doc, None), "MAX_DIRECTIVES_EXCEEDED");
}

#[test]
fn a_ten_megabyte_string_literal() {
    let doc = format!("{{ a(s: \"{}\") }}", "x".repeat(10 * 1024 * 1024));
    let err = check(&doc, None, None, &GraphqlLimits::default()).unwrap_err();
    assert_eq!(err.code(), "DOCUMENT_TOO_LARGE");
    assert!(err.to_string().len() < 100, "{err}");
}

#[test]
fn deeply_nested_input_values() {
    let object = format!("{{ a(x: {}1{}) }}", "{a: ".repeat(1_000), "}".repeat(1_000));
    assert_eq!(code(&object, None), "MAX_DEPTH_EXCEEDED");
    let list = format!("{{ a(x: {}1{}) }}", "[".repeat(1_000), "]".repeat(1_000));
    assert_eq!(code(&list, None), "MAX_DEPTH_EXCEEDED");
    let variable = format!(
        "query($v: {}Int{}) {{ a }}",
        "[".repeat(1_000),
        "]".repeat(1_000)
    );
    assert_eq!(code(&variable, None), "MAX_DEPTH_EXCEEDED");
    let default = format!(
        "query($v: In = {}1{}) {{ a }}",
        "{a: ".repeat(1_000),
        "}".repeat(1_000)
    );
    assert_eq!(code(&default, None), "MAX_DEPTH_EXCEEDED");
}

#[test]
fn introspection_is_refused_when_disabled() {
    let schema = schema();
    for doc in [
        "{ __schema { types { name } } }",
        "{ __type(name: \"User\") { name } }",
        "{ t: __type(name: \"User\") { n: name } }",
        "{ s: __schema { q: queryType { f: fields { t: type { name } } } } }",
        "{ ...I } fragment I on Query { x: __schema { types { name } } }",
    ] {
        assert_eq!(code(doc, Some(&schema)), "INTROSPECTION_DISABLED", "{doc}");
        assert_eq!(code(doc, None), "INTROSPECTION_DISABLED", "{doc}");
    }
    // `__type` nested under aliased fields (valid without a schema).
    let doc = "{ a: user(id: 1) { b: friends { c: __type(name: \"X\") { name } } } }";
    assert_eq!(code(doc, None), "INTROSPECTION_DISABLED");
}

#[test]
fn introspection_is_allowed_when_enabled() {
    let schema = schema();
    let limits = GraphqlLimits {
        introspection: true,
        ..GraphqlLimits::default()
    };
    let checked = check(
        "{ __schema { queryType { name } } t: __type(name: \"User\") { name } }",
        None,
        Some(schema.schema()),
        &limits,
    )
    .unwrap();
    assert!(checked.introspection);
}

#[test]
fn typename_alone_is_not_introspection() {
    let schema = schema();
    assert!(!ok("{ __typename }", Some(&schema)).introspection);
    assert!(!ok("{ t: __typename user(id: 1) { __typename } }", None).introspection);
}

#[test]
fn batches_over_the_limit() {
    let limits = GraphqlLimits::default();
    assert_eq!(check_batch(10, &limits), Ok(()));
    assert_eq!(
        check_batch(11, &limits).unwrap_err().code(),
        "BATCH_TOO_LARGE"
    );
}

#[test]
fn a_wide_document_just_under_the_token_limit_validates() {
    // 7 000 identical fields under one root field: within every limit, so
    // the validator (field merging) sees all of them.
    let schema = schema();
    let doc = format!("{{ user(id: 1) {{{} }} }}", " name".repeat(7_000));
    let checked = ok(&doc, Some(&schema));
    assert_eq!(checked.cost, 1);
    let doc = format!("{{ user(id: 1) {{{} }} }}", " a: name b: id".repeat(1_000));
    let limits = GraphqlLimits {
        max_aliases: 10_000,
        ..GraphqlLimits::default()
    };
    let checked = check(&doc, None, Some(schema.schema()), &limits).unwrap();
    assert_eq!(checked.aliases, 2_000);
}

#[test]
fn whitespace_and_the_end_of_input_count_as_tokens() {
    let at = |max_tokens| {
        let limits = GraphqlLimits {
            max_tokens,
            ..GraphqlLimits::default()
        };
        check("{ a b }", None, None, &limits).map(|_| ())
    };
    assert_eq!(at(8), Ok(()));
    assert_eq!(
        at(7),
        Err(GraphqlError::MaxTokensExceeded {
            limit: 7,
            measured: 8
        })
    );
}

#[test]
fn slicing_variables_scale_the_cost_per_request() {
    let schema = schema();
    let doc = "query($n: Int, $m: Int = 30) { users { friends(first: $n) { friends(first: $n) { id } } } search(first: $m) { id } }";
    let checked = ok(doc, Some(&schema));
    // users 10 × (1 + 10 × (1 + 10 × 1)) + search 3 × 1
    assert_eq!(checked.cost, 1_113);
    assert_eq!(
        checked.slicing_variables,
        vec![
            SlicingVariable {
                name: "n".into(),
                assumed: 10,
                nesting: 2,
                default: None
            },
            SlicingVariable {
                name: "m".into(),
                assumed: 3,
                nesting: 1,
                default: Some(30)
            },
        ]
    );
    let limits = GraphqlLimits::default();
    let vars = |v: serde_json::Value| v.as_object().unwrap().clone();
    // $m's default (30) is ten times its assumption.
    assert_eq!(
        checked.cost_with_variables(&vars(serde_json::json!({"n": 5}))),
        11_130
    );
    // $n twice its assumption, on two nested lists: 4 times.
    assert_eq!(
        checked.check_variables(&vars(serde_json::json!({"n": 20, "m": 3})), &limits),
        Ok(1_113 * 4)
    );
    assert_eq!(
        checked
            .check_variables(&vars(serde_json::json!({"n": 1000, "m": 1})), &limits)
            .unwrap_err()
            .code(),
        "MAX_COST_EXCEEDED"
    );
}

#[test]
fn sized_fields_size_the_connection_edges() {
    // connection 1 + edges 50 × (edge 1 + node 1) + pageInfo 1
    assert_eq!(
        cost("{ connection(first: 50) { edges { node { id } } pageInfo { hasNextPage } } }"),
        1 + 50 * 2 + 1
    );
    // The same through a fragment and an alias.
    assert_eq!(
        cost(
            "{ connection(first: 50) { ...E } } fragment E on UserConnection { e: edges { node { id } } }"
        ),
        1 + 50 * 2
    );
    // Without a slicing argument: the default size.
    assert_eq!(cost("{ connection { edges { node { id } } } }"), 1 + 10 * 2);
    let schema = schema();
    let doc = "{ connection(first: 100000) { edges { node { id } } } }";
    assert_eq!(code(doc, Some(&schema)), "MAX_COST_EXCEEDED");
    let checked = ok(
        "query($n: Int) { connection(first: $n) { edges { node { id } } } }",
        Some(&schema),
    );
    assert_eq!(checked.cost, 1 + 10 * 2);
    let vars = serde_json::json!({"n": 100000});
    assert_eq!(
        checked
            .check_variables(vars.as_object().unwrap(), &GraphqlLimits::default())
            .unwrap_err()
            .code(),
        "MAX_COST_EXCEEDED"
    );
}

#[test]
fn a_fragment_chain_within_the_limits_reaches_the_validator_safely() {
    let chain = |n: usize| {
        let mut doc = String::from("{ ...F0 }\n");
        for i in 0..n {
            writeln!(doc, "fragment F{i} on Query{{...F{}}}", i + 1).unwrap();
        }
        doc + &format!("fragment F{n} on Query {{ __typename }}")
    };
    let schema = schema();
    assert_eq!(ok(&chain(10), Some(&schema)).depth, 1);
    // As many chained fragments as the token limit allows pass every limit
    // here; the validator's own recursion limit refuses them, on a 2 MiB
    // stack, with and without a schema.
    let long = chain(1_000);
    assert_eq!(code(&long, Some(&schema)), "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(code(&long, None), "GRAPHQL_VALIDATION_FAILED");
}
