//! Tests of phase 5: each directive combination in both modes (the reject
//! errors, the filtered document and the patched response), the
//! configuration and the trusted router.

use std::net::IpAddr;

use apollo_compiler::ast;
use serde_json::{Value, json};

use super::*;

const SDL: &str = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.9",
                    import: ["@key", "@authenticated", "@requiresScopes", "@policy"])

type Query {
  public: String
  me: User @authenticated
  user(id: ID!): User
  users: [User]
  node(id: ID!): Node
  search: [SearchResult!]!
  finance: Finance
  required: Report!
  reports: [Report!]
  content: [Content]
}

type Mutation @authenticated { rename(id: ID!, name: String!): User }

interface Content { id: ID! body: String }
type Article implements Content { id: ID! body: String @authenticated }
type Note implements Content { id: ID! body: String }

interface Node { id: ID! }

type User implements Node @key(fields: "id") {
  id: ID!
  name: String
  email: String @requiresScopes(scopes: [["read:email"], ["admin"]])
  ssn: String @requiresScopes(scopes: [["read:pii", "read:ssn"]])
  salary: Int @policy(policies: [["admin"], ["hr", "eu_staff"]])
  rank: Int @policy(policies: [["verified"], ["missing"]])
  level: Level
  open: Int @requiresScopes(scopes: [])
}

enum Level @requiresScopes(scopes: [["levels"]]) { LOW HIGH }

type Post implements Node @key(fields: "id") {
  id: ID!
  title: String
  views: Int @authenticated
}

type Secret implements Node @authenticated { id: ID! code: String }

type Invoice @key(fields: "id") @requiresScopes(scopes: [["billing"]]) { id: ID! amount: Int }

type Report { id: ID! total: Int! @authenticated }

type Finance @policy(policies: [["admin"]]) { budget: Int }

union SearchResult = User | Post
"#;

const POLICIES: &str = r#"
admin = [{ claim = "role", equals = "admin" }]
hr = [{ claim = "groups", contains = "hr" }]
eu_staff = [{ claim = "org.region", one_of = ["eu-west", "eu-central"] }]
verified = [{ claim = "email_verified", exists = true }]
"#;

fn schema() -> SubgraphSchema {
    SubgraphSchema::parse(SDL).expect("test SDL is valid")
}

fn policies() -> Policies {
    toml::from_str(POLICIES).unwrap()
}

fn identity(scopes: &[&str], claims: Value) -> Identity {
    Identity {
        subject: Some("u1".to_owned()),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        claims: claims.as_object().cloned().unwrap_or_default(),
    }
}

/// The document, checked against the schema first as the daemon does.
fn parse(doc: &str) -> ast::Document {
    let schema = schema();
    crate::graphql::check(doc, None, Some(schema.schema()), &Default::default())
        .unwrap_or_else(|e| panic!("{doc}: {e:?}"));
    ast::Document::parse(doc, "q.graphql").unwrap()
}

fn operation(document: &ast::Document) -> &ast::OperationDefinition {
    document
        .definitions
        .iter()
        .find_map(|d| d.as_operation_definition())
        .unwrap()
}

struct Outcome {
    verdict: Verdict,
    filtered: Option<Filtered>,
}

fn run(doc: &str, identity: Option<&Identity>, typenames: &[&str]) -> Outcome {
    let schema = schema();
    let document = parse(doc);
    let op = operation(&document);
    let reqs = requirements(&schema, &document, op);
    let verdict = reqs.evaluate(identity, &policies(), typenames);
    let filtered = (!verdict.is_authorized()).then(|| filter(&schema, &document, op, &verdict));
    Outcome { verdict, filtered }
}

fn error(path: Value) -> Value {
    json!({
        "message": "Unauthorized field or type",
        "path": path,
        "extensions": { "code": "UNAUTHORIZED_FIELD_OR_TYPE" },
    })
}

fn errors(paths: &[Value]) -> Value {
    Value::Array(paths.iter().cloned().map(error).collect())
}

/// The filtered document, normalised through the parser's serializer.
fn normal(doc: &str) -> String {
    ast::Document::parse(doc, "e.graphql").unwrap().to_string()
}

impl Outcome {
    fn assert_authorized(&self) {
        assert!(self.verdict.is_authorized(), "{:?}", self.verdict);
        assert_eq!(self.verdict.errors(), json!([]));
    }

    /// Reject mode: the errors.
    fn assert_errors(&self, paths: &[Value]) -> &Self {
        assert!(!self.verdict.is_authorized());
        assert_eq!(self.verdict.errors(), errors(paths));
        self
    }

    /// Filter mode: the forwarded document and the patched response.
    fn assert_filtered(&self, document: Option<&str>, response: Value, patched: Value) {
        let filtered = self.filtered.as_ref().unwrap();
        assert_eq!(filtered.document, document.map(normal));
        if let Some(document) = &filtered.document {
            // What is forwarded is valid against the schema.
            let schema = schema();
            crate::graphql::check(document, None, Some(schema.schema()), &Default::default())
                .unwrap_or_else(|e| panic!("{document}: {e:?}"));
        }
        let mut response = response;
        if filtered.document.is_none() {
            response = filtered.patch.response();
        } else {
            filtered.patch.apply(&mut response);
        }
        assert_eq!(response, patched);
    }
}

#[test]
fn no_requirements_is_empty_and_authorized() {
    let schema = schema();
    let document = parse("{ public user(id: 1) { id name } }");
    let reqs = requirements(&schema, &document, operation(&document));
    assert!(reqs.is_empty());
    assert!(reqs.evaluate(None, &policies(), &[]).is_authorized());
}

#[test]
fn authenticated_field() {
    let doc = "{ me { id } public }";
    run(doc, Some(&identity(&[], json!({}))), &[]).assert_authorized();
    run(doc, None, &[])
        .assert_errors(&[json!(["me"])])
        .assert_filtered(
            Some("{ public }"),
            json!({ "data": { "public": "x" } }),
            json!({ "data": { "public": "x", "me": null }, "errors": errors(&[json!(["me"])]) }),
        );
}

#[test]
fn scopes_or_of_and() {
    let doc = "{ user(id: 1) { id email ssn } }";
    let all = identity(&["admin", "read:pii", "read:ssn"], json!({}));
    run(doc, Some(&all), &[]).assert_authorized();
    let some = identity(&["read:email", "read:pii"], json!({}));
    run(doc, Some(&some), &[])
        .assert_errors(&[json!(["user", "ssn"])])
        .assert_filtered(
            Some("{ user(id: 1) { id email } }"),
            json!({ "data": { "user": { "id": "1", "email": "a@b" } } }),
            json!({
                "data": { "user": { "id": "1", "email": "a@b", "ssn": null } },
                "errors": errors(&[json!(["user", "ssn"])]),
            }),
        );
    // A token without scopes holds neither alternative.
    run(doc, Some(&identity(&[], json!({}))), &[])
        .assert_errors(&[json!(["user", "email"]), json!(["user", "ssn"])]);
}

#[test]
fn policies_or_of_and_with_each_operator() {
    let doc = "{ user(id: 1) { salary } }";
    let admin = identity(&[], json!({ "role": "admin" }));
    run(doc, Some(&admin), &[]).assert_authorized();
    // No alternative listed: nothing is asked.
    run("{ user(id: 1) { open } }", None, &[]).assert_authorized();
    let hr_eu = identity(
        &[],
        json!({ "groups": ["hr"], "org": { "region": "eu-west" } }),
    );
    run(doc, Some(&hr_eu), &[]).assert_authorized();
    // `contains` on a space-separated string.
    let hr_words = identity(
        &[],
        json!({ "groups": "staff hr", "org": { "region": "eu-central" } }),
    );
    run(doc, Some(&hr_words), &[]).assert_authorized();
    // One half of the AND only.
    let hr_us = identity(
        &[],
        json!({ "groups": ["hr"], "org": { "region": "us-east" } }),
    );
    run(doc, Some(&hr_us), &[])
        .assert_errors(&[json!(["user", "salary"])])
        .assert_filtered(
            None,
            json!(null),
            json!({ "data": { "user": null }, "errors": errors(&[json!(["user", "salary"])]) }),
        );
    // `exists`, and an undefined policy that never holds.
    let rank = "{ user(id: 1) { rank } }";
    run(
        rank,
        Some(&identity(&[], json!({ "email_verified": false }))),
        &[],
    )
    .assert_authorized();
    run(
        rank,
        Some(&identity(&[], json!({ "email_verified": null }))),
        &[],
    )
    .assert_errors(&[json!(["user", "rank"])]);
    assert_eq!(undefined_policies(&schema(), &policies()), vec!["missing"]);
}

#[test]
fn type_level_directive() {
    let doc = "{ public finance { budget } }";
    run(doc, Some(&identity(&[], json!({ "role": "admin" }))), &[]).assert_authorized();
    run(doc, Some(&identity(&[], json!({ "role": "user" }))), &[])
        .assert_errors(&[json!(["finance"])])
        .assert_filtered(
            Some("{ public }"),
            json!({ "data": { "public": "x" } }),
            json!({ "data": { "public": "x", "finance": null }, "errors": errors(&[json!(["finance"])]) }),
        );
}

#[test]
fn interface_with_a_restricted_implementation_is_restricted() {
    run(
        "{ node(id: 1) { id } }",
        Some(&identity(&[], json!({}))),
        &[],
    )
    .assert_authorized();
    run("{ node(id: 1) { id } public }", None, &[])
        .assert_errors(&[json!(["node"])])
        .assert_filtered(
            Some("{ public }"),
            json!({ "data": { "public": "x" } }),
            json!({ "data": { "public": "x", "node": null }, "errors": errors(&[json!(["node"])]) }),
        );
}

#[test]
fn union_members_are_filtered_by_type() {
    let doc = "{ search { ... on User { id email } ... on Post { title } } }";
    let out = run(doc, None, &[]);
    out.assert_errors(&[json!(["search", "@", "email"])])
        .assert_filtered(
            Some("{ search { ... on User { id } ... on Post { title } __typename } }"),
            json!({ "data": { "search": [
            { "__typename": "User", "id": "1" },
            { "__typename": "Post", "title": "t" },
        ] } }),
            json!({
                "data": { "search": [{ "id": "1", "email": null }, { "title": "t" }] },
                "errors": errors(&[json!(["search", "@", "email"])]),
            }),
        );
}

#[test]
fn fragments_aliases_variables_and_directives_survive() {
    let doc = "query Q($id: ID!, $withName: Boolean!, $s: Boolean = false) { \
               u: user(id: $id) { ...F n: name @include(if: $withName) } } \
               fragment F on User { id mail: email @skip(if: $s) }";
    run(doc, None, &[])
        .assert_errors(&[json!(["u", "mail"])])
        .assert_filtered(
            Some(
                "query Q($id: ID!, $withName: Boolean!) { \
                 u: user(id: $id) { ...F n: name @include(if: $withName) } } \
                 fragment F on User { id }",
            ),
            json!({ "data": { "u": { "id": "1", "n": "A" } } }),
            json!({
                "data": { "u": { "id": "1", "n": "A", "mail": null } },
                "errors": errors(&[json!(["u", "mail"])]),
            }),
        );
    // A fragment left empty is dropped with its spread.
    run(
        "{ user(id: 1) { id ...G } } fragment G on User { email }",
        None,
        &[],
    )
    .assert_filtered(
        Some("{ user(id: 1) { id } }"),
        json!({ "data": { "user": { "id": "1" } } }),
        json!({
            "data": { "user": { "id": "1", "email": null } },
            "errors": errors(&[json!(["user", "email"])]),
        }),
    );
}

#[test]
fn inline_fragment_on_a_restricted_type() {
    let doc = "{ node(id: 1) { id ... on Post { views } } }";
    // Authenticated: allowed. Anonymous: `node` itself is refused (Secret).
    run(doc, Some(&identity(&[], json!({}))), &[]).assert_authorized();
    run(doc, None, &[]).assert_errors(&[json!(["node"])]);
}

#[test]
fn lists_with_nulls() {
    let doc = "{ users { id email } }";
    run(doc, None, &[])
        .assert_errors(&[json!(["users", "@", "email"])])
        .assert_filtered(
            Some("{ users { id } }"),
            json!({ "data": { "users": [{ "id": "1" }, null, { "id": "2" }] } }),
            json!({
                "data": { "users": [{ "id": "1", "email": null }, null, { "id": "2", "email": null }] },
                "errors": errors(&[json!(["users", "@", "email"])]),
            }),
        );
}

#[test]
fn non_null_propagation() {
    // Non-null item in a nullable list: the list becomes null.
    run("{ public reports { id total } }", None, &[])
        .assert_errors(&[json!(["reports", "@", "total"])])
        .assert_filtered(
            Some("{ public reports { id } }"),
            json!({ "data": { "public": "x", "reports": [{ "id": "1" }, { "id": "2" }] } }),
            json!({
                "data": { "public": "x", "reports": null },
                "errors": errors(&[json!(["reports", "@", "total"])]),
            }),
        );
    // Up to `data`: `required: Report!` loses its only field.
    run("{ public required { total } }", None, &[])
        .assert_errors(&[json!(["required", "total"])])
        .assert_filtered(
            Some("{ public }"),
            json!({ "data": { "public": "x" } }),
            json!({ "data": null, "errors": errors(&[json!(["required", "total"])]) }),
        );
}

#[test]
fn parent_removed_when_all_its_selections_go() {
    run("{ user(id: 1) { email ssn } public }", None, &[])
        .assert_errors(&[json!(["user", "email"]), json!(["user", "ssn"])])
        .assert_filtered(
            Some("{ public }"),
            json!({ "data": { "public": "x" } }),
            json!({
                "data": { "public": "x", "user": null },
                "errors": errors(&[json!(["user", "email"]), json!(["user", "ssn"])]),
            }),
        );
}

#[test]
fn entities_by_representation_typename() {
    let doc = "query ($r: [_Any!]!) { _entities(representations: $r) { \
               ... on User { name email } ... on Invoice { amount } } }";
    let billing = identity(&["billing", "read:email"], json!({}));
    run(doc, Some(&billing), &["User", "Invoice"]).assert_authorized();
    // An Invoice representation without `billing`: `_entities` is refused.
    let reader = identity(&["read:email"], json!({}));
    run(doc, Some(&reader), &["User", "Invoice"])
        .assert_errors(&[json!(["_entities"])])
        .assert_filtered(
            None,
            json!(null),
            json!({ "data": null, "errors": errors(&[json!(["_entities"])]) }),
        );
    // Users only: the Invoice fragment is removed, and `email` for users
    // without the scope, only in User objects.
    let anonymous_user = identity(&[], json!({}));
    run(doc, Some(&anonymous_user), &["User"])
        .assert_errors(&[
            json!(["_entities", "@", "email"]),
            json!(["_entities", "@"]),
        ])
        .assert_filtered(
            Some(
                "query ($r: [_Any!]!) { _entities(representations: $r) { \
                 ... on User { name } __typename } }",
            ),
            json!({ "data": { "_entities": [{ "__typename": "User", "name": "A" }, null] } }),
            json!({
                "data": { "_entities": [{ "name": "A", "email": null }, null] },
                "errors": errors(&[json!(["_entities", "@", "email"]), json!(["_entities", "@"])]),
            }),
        );
}

#[test]
fn the_example_configuration() {
    #[derive(serde::Deserialize)]
    struct File {
        authorization: AuthorizationConfig,
    }
    let file: File = toml::from_str(
        r#"
[authorization]
mode = "filter"
[authorization.policies]
admin = [{ claim = "role", equals = "admin" }]
eu_staff = [{ claim = "org.region", one_of = ["eu-west","eu-central"] }, { claim = "groups", contains = "staff" }]
[authorization.trusted_router]
scopes = ["router"]
cidrs = ["10.0.0.0/8"]
"#,
    )
    .unwrap();
    let config = file.authorization;
    config.validate("authorization").unwrap();
    assert_eq!(config.mode, Mode::Filter);
    assert_eq!(AuthorizationConfig::default().mode, Mode::Reject);
    let staff = identity(
        &[],
        json!({ "org": { "region": "eu-west" }, "groups": ["staff"] }),
    );
    assert!(config.policies.holds("eu_staff", Some(&staff)));
    assert!(!config.policies.holds("eu_staff", None));
    assert!(!config.policies.holds("nope", Some(&staff)));
}

#[test]
fn configuration_errors() {
    let invalid = |toml: &str| -> String {
        match toml::from_str::<AuthorizationConfig>(toml) {
            Err(e) => e.message().to_owned(),
            Ok(config) => config.validate("authorization").unwrap_err(),
        }
    };
    assert!(invalid("mode = \"allow\"").contains("unknown variant"));
    assert!(invalid("nope = 1").contains("unknown field"));
    assert!(invalid("[policies]\na = [{ claim = \"x\", equal = 1 }]").contains("unknown field"));
    assert_eq!(
        invalid("[policies]\na = []"),
        "authorization.policies.a: a policy needs at least one predicate"
    );
    assert_eq!(
        invalid("[policies]\na = [{ claim = \"x\" }]"),
        "authorization.policies.a[0]: one operator is required: equals, one_of, contains or exists"
    );
    assert_eq!(
        invalid("[policies]\na = [{ claim = \"x\", equals = 1, exists = true }]"),
        "authorization.policies.a[0]: only one operator per predicate (equals, one_of, contains, exists)"
    );
    assert_eq!(
        invalid("[policies]\na = [{ claim = \"x\", one_of = [] }]"),
        "authorization.policies.a[0].one_of: must list at least one value"
    );
    assert_eq!(
        invalid("[policies]\na = [{ claim = \"x..y\", exists = true }]"),
        "authorization.policies.a[0].claim: not a claim name or dotted path: \"x..y\""
    );
    assert!(invalid("[trusted_router]\ncidrs = [\"10.0.0.0/33\"]").contains("invalid"));
}

#[test]
fn predicates() {
    let p = |toml: &str| -> Predicate { toml::from_str(toml).unwrap() };
    let claims =
        json!({ "n": 3, "s": "a b", "l": [1, "x"], "o": { "p": { "q": true } }, "a.b": "dotted" });
    let claims = &identity(&[], claims);
    assert!(p("claim = \"n\"\nequals = 3").holds(claims));
    assert!(!p("claim = \"n\"\nequals = \"3\"").holds(claims));
    assert!(p("claim = \"o.p.q\"\nequals = true").holds(claims));
    assert!(p("claim = \"a.b\"\nequals = \"dotted\"").holds(claims));
    assert!(p("claim = \"n\"\none_of = [1, 3]").holds(claims));
    assert!(p("claim = \"s\"\ncontains = \"b\"").holds(claims));
    assert!(!p("claim = \"s\"\ncontains = \"a b\"").holds(claims));
    assert!(p("claim = \"l\"\ncontains = \"x\"").holds(claims));
    assert!(!p("claim = \"n\"\ncontains = 3").holds(claims));
    assert!(p("claim = \"missing\"\nexists = false").holds(claims));
    assert!(!p("claim = \"missing\"\nequals = 1").holds(claims));
}

#[test]
fn trusted_router_by_scope_and_by_cidr() {
    let trusted: TrustedRouter =
        toml::from_str("scopes = [\"router\"]\ncidrs = [\"10.0.0.0/8\", \"fd00::/8\"]").unwrap();
    let outside: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(trusted.allows(Some(&identity(&["router"], json!({}))), outside));
    assert!(!trusted.allows(Some(&identity(&["user"], json!({}))), outside));
    assert!(!trusted.allows(None, outside));
    assert!(trusted.allows(None, "10.1.2.3".parse().unwrap()));
    assert!(trusted.allows(None, "::ffff:10.1.2.3".parse().unwrap()));
    assert!(trusted.allows(None, "fd00::1".parse().unwrap()));
    assert!(!TrustedRouter::default().allows(None, "10.1.2.3".parse().unwrap()));
}

#[test]
fn interface_fields_carry_their_implementations_requirements() {
    run("{ content { id body } }", None, &[])
        .assert_errors(&[json!(["content", "@", "body"])])
        .assert_filtered(
            Some("{ content { id } }"),
            json!({ "data": { "content": [{ "id": "1" }] } }),
            json!({
                "data": { "content": [{ "id": "1", "body": null }] },
                "errors": errors(&[json!(["content", "@", "body"])]),
            }),
        );
    // Through a fragment on the unrestricted implementation: allowed.
    run("{ content { id ... on Note { body } } }", None, &[]).assert_authorized();
}

#[test]
fn interface_with_only_typename_and_fragments_is_checked_by_fragment() {
    run(
        "{ node(id: 1) { __typename ... on Post { title } } }",
        None,
        &[],
    )
    .assert_authorized();
    let doc = "{ node(id: 1) { __typename ...S } } fragment S on Secret { code }";
    run(doc, None, &[])
        .assert_errors(&[json!(["node"])])
        .assert_filtered(
            Some("{ node(id: 1) { __typename } }"),
            json!({ "data": { "node": { "__typename": "Secret" } } }),
            json!({
                "data": { "node": { "__typename": "Secret", "code": null } },
                "errors": errors(&[json!(["node"])]),
            }),
        );
    // The user's own `__typename` is kept; other types get no null.
    let doc = "{ node(id: 1) { __typename ... on Secret { code } } }";
    let filtered = run(doc, None, &[]).filtered.unwrap();
    let mut post = json!({ "data": { "node": { "__typename": "Post" } } });
    filtered.patch.apply(&mut post);
    assert_eq!(post["data"], json!({ "node": { "__typename": "Post" } }));
}

#[test]
fn a_named_fragment_spread_in_two_places() {
    let doc = "{ me { ...U } users { ...U } } fragment U on User { id email }";
    let token = identity(&[], json!({}));
    run(doc, Some(&token), &[])
        .assert_errors(&[json!(["me", "email"]), json!(["users", "@", "email"])])
        .assert_filtered(
            Some("{ me { ...U } users { ...U } } fragment U on User { id }"),
            json!({ "data": { "me": { "id": "1" }, "users": [{ "id": "2" }] } }),
            json!({
                "data": { "me": { "id": "1", "email": null }, "users": [{ "id": "2", "email": null }] },
                "errors": errors(&[json!(["me", "email"]), json!(["users", "@", "email"])]),
            }),
        );
}

#[test]
fn a_restricted_root_type_refuses_the_operation() {
    let doc = "mutation { rename(id: 1, name: \"x\") { id } }";
    run(doc, Some(&identity(&[], json!({}))), &[]).assert_authorized();
    run(doc, None, &[])
        .assert_errors(&[json!([])])
        .assert_filtered(
            None,
            json!(null),
            json!({ "data": { "rename": null }, "errors": errors(&[json!([])]) }),
        );
}

#[test]
fn renamed_directives_are_enforced() {
    let sdl = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5",
                    import: [{ name: "@authenticated", as: "@auth" }])
type Query { a: Int @auth b: Int @federation__requiresScopes(scopes: [["s"]]) c: Int }
"#;
    let schema = SubgraphSchema::parse(sdl).unwrap();
    let document = ast::Document::parse("{ a b c }", "q.graphql").unwrap();
    let reqs = requirements(&schema, &document, operation(&document));
    let verdict = reqs.evaluate(None, &Policies::default(), &[]);
    assert_eq!(verdict.errors(), errors(&[json!(["a"]), json!(["b"])]));
    let scoped = identity(&["s"], json!({}));
    assert!(
        reqs.evaluate(Some(&scoped), &Policies::default(), &[])
            .is_authorized()
    );
}

#[test]
fn entity_typenames_from_variables_and_literals() {
    let schema = schema();
    let document =
        parse("query ($r: [_Any!]!) { _entities(representations: $r) { ... on User { name } } }");
    let reqs = requirements(&schema, &document, operation(&document));
    let variables = json!({ "r": [
        { "__typename": "User", "id": "1" },
        { "__typename": "Invoice", "id": "2" },
        { "__typename": "User", "id": "3" },
        { "id": "no typename" },
    ] });
    assert_eq!(
        reqs.entity_typenames(variables.as_object().unwrap()),
        vec!["User", "Invoice"]
    );
    let document = parse(
        "{ _entities(representations: [{ __typename: \"Invoice\", id: \"2\" }]) { __typename } }",
    );
    let reqs = requirements(&schema, &document, operation(&document));
    let none = serde_json::Map::new();
    let typenames = reqs.entity_typenames(&none);
    assert_eq!(typenames, vec!["Invoice"]);
    assert!(!reqs.evaluate(None, &policies(), &typenames).is_authorized());
}

#[test]
fn a_fragment_fan_out_is_guarded_as_a_whole() {
    // 2^18 expansions of `email`: the walk stops and every check of the
    // document guards the operation.
    let mut doc = String::from("{ user(id: 1) { ...F0 } }");
    for i in 0..18 {
        doc.push_str(&format!(
            " fragment F{i} on User {{ id ...F{n} ...F{n} }}",
            n = i + 1
        ));
    }
    doc.push_str(" fragment F18 on User { email salary }");
    let schema = schema();
    let document = ast::Document::parse(&doc, "q.graphql").unwrap();
    let reqs = requirements(&schema, &document, operation(&document));
    assert_eq!(
        reqs.evaluate(None, &policies(), &[]).errors(),
        errors(&[json!([])])
    );
    let email_only = identity(&["read:email"], json!({}));
    assert!(
        !reqs
            .evaluate(Some(&email_only), &policies(), &[])
            .is_authorized()
    );
    let both = identity(&["read:email"], json!({ "role": "admin" }));
    assert!(reqs.evaluate(Some(&both), &policies(), &[]).is_authorized());
    // Filter mode refuses it whole, without expanding it again.
    let verdict = reqs.evaluate(None, &policies(), &[]);
    let filtered = filter(&schema, &document, operation(&document), &verdict);
    assert_eq!(filtered.document, None);
    assert_eq!(
        filtered.patch.response(),
        json!({ "data": { "user": null }, "errors": errors(&[json!([])]) })
    );
}

#[test]
fn a_directive_on_an_enum_applies_to_fields_returning_it() {
    let doc = "{ user(id: 1) { id level } }";
    run(doc, Some(&identity(&["levels"], json!({}))), &[]).assert_authorized();
    run(doc, Some(&identity(&[], json!({}))), &[])
        .assert_errors(&[json!(["user", "level"])])
        .assert_filtered(
            Some("{ user(id: 1) { id } }"),
            json!({ "data": { "user": { "id": "1" } } }),
            json!({
                "data": { "user": { "id": "1", "level": null } },
                "errors": errors(&[json!(["user", "level"])]),
            }),
        );
}

#[test]
fn a_typename_inside_a_removed_fragment_is_replaced() {
    let doc = "query ($r: [_Any!]!) { _entities(representations: $r) { \
               ... on Invoice { __typename amount } ... on User { name } } }";
    run(doc, Some(&identity(&[], json!({}))), &["User"])
        .assert_errors(&[json!(["_entities", "@"])])
        .assert_filtered(
            Some(
                "query ($r: [_Any!]!) { _entities(representations: $r) { \
                 ... on User { name } __typename } }",
            ),
            json!({ "data": { "_entities": [{ "__typename": "User", "name": "A" }] } }),
            json!({
                "data": { "_entities": [{ "name": "A" }] },
                "errors": errors(&[json!(["_entities", "@"])]),
            }),
        );
}

#[test]
fn a_typename_asked_under_a_fragment_is_kept() {
    let doc = "{ search { ... on User { __typename email } ... on Post { title } } }";
    run(doc, None, &[])
        .assert_errors(&[json!(["search", "@", "email"])])
        .assert_filtered(
            Some("{ search { ... on User { __typename } ... on Post { title } __typename } }"),
            json!({ "data": { "search": [
                { "__typename": "User" },
                { "__typename": "Post", "title": "t" },
            ] } }),
            json!({
                "data": { "search": [
                    { "__typename": "User", "email": null },
                    { "title": "t" },
                ] },
                "errors": errors(&[json!(["search", "@", "email"])]),
            }),
        );
}
