//! Phase 5 end to end: field authorization from a federation SDL
//! (`@authenticated`, `@requiresScopes`, `@policy`) in front of a real demo
//! subgraph, in reject and filter mode, and the federation entry points
//! (`_entities`, `_service`) kept for trusted routers. Responses are
//! compared as whole JSON documents.

use std::time::{SystemTime, UNIX_EPOCH};

use fraiseql_edge_tests::subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::proxy_e2e::serial;

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

/// The demo subgraph's schema, annotated as its owners would.
const SDL: &str = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5",
                    import: ["@key", "@authenticated", "@requiresScopes", "@policy"])

type Query {
  user(id: ID!): User
  users(first: Int = 10): [User!]!
  products: [Product!]! @authenticated
  echo(value: String!): String!
}

type Mutation {
  createUser(name: String!): User! @policy(policies: [["admin"]])
}

type User @key(fields: "id") {
  id: ID!
  name: String!
  email: String! @requiresScopes(scopes: [["read:email"], ["admin"]])
}

type Product @key(fields: "upc") @requiresScopes(scopes: [["catalog"]]) {
  upc: String!
  name: String!
  price: Int!
}
"#;

fn token(claims: Value) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut claims = claims;
    claims["exp"] = json!(exp);
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

/// An edge in `mode` in front of `sg`, anonymous callers allowed.
fn edge(sg: &DemoSubgraph, mode: &str, dir: &tempfile::TempDir) -> Edge {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let sdl = dir.path().join("users.graphql");
    std::fs::write(&sdl, SDL).unwrap();
    let toml = ProxySetup::one(
        SubgraphSpec::new("users", [sg]).table("health", "interval_ms = 60000, timeout_ms = 5000"),
    )
    .section(&format!(
        "[auth]\nkeys = [{{ type = \"hmac_secret_file\", path = {:?}, algorithms = [\"HS256\"] }}]\n\
         [authorization]\nmode = {mode:?}\n\
         policies = {{ admin = [{{ claim = \"role\", equals = \"admin\" }}] }}\n\
         trusted_router = {{ scopes = [\"router\"] }}\n",
        secret.display().to_string()
    ))
    .to_toml()
    .replace(
        "name = \"users\"",
        &format!(
            "name = \"users\"\nrequire_authentication = false\nsdl = {:?}",
            sdl.display().to_string()
        ),
    );
    Edge::start_toml(&toml)
}

/// POSTs `query` (with `variables`) as the holder of `claims` (`None`:
/// anonymous): (status, JSON body).
fn ask(url: &str, claims: Option<Value>, query: &str, variables: Value) -> (u16, Value) {
    let mut req = ureq::post(url)
        .header("content-type", "application/json")
        .config()
        .http_status_as_error(false)
        .build();
    let bearer = claims.map(|c| format!("Bearer {}", token(c)));
    if let Some(b) = &bearer {
        req = req.header("authorization", b);
    }
    let mut resp = req
        .send(json!({"query": query, "variables": variables}).to_string())
        .expect("POST");
    let body = serde_json::from_reader(resp.body_mut().as_reader()).unwrap_or(Value::Null);
    (resp.status().as_u16(), body)
}

fn unauthorized(paths: &[Value]) -> Value {
    json!({"errors": paths.iter().map(|p| json!({
        "message": "Unauthorized field or type",
        "path": p,
        "extensions": {"code": "UNAUTHORIZED_FIELD_OR_TYPE"}
    })).collect::<Vec<_>>()})
}

const ENTITIES: &str = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id name } ... on Product { upc name } } }";
/// An entity fetch for users only, as a query planner writes one.
const USER_ENTITIES: &str =
    "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { id name } } }";

#[test]
fn reject_mode_refuses_unauthorized_operations_before_the_subgraph() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sg = DemoSubgraph::start("users");
    let edge = edge(&sg, "reject", &dir);
    let url = edge.route("users");
    let none = json!({});

    // Nothing protected: anyone.
    let (status, body) = ask(&url, None, "{ users(first: 2) { id name } }", none.clone());
    assert_eq!(
        (status, body),
        (
            200,
            json!({"data": {"users": [{"id": "1", "name": "user-1"}, {"id": "2", "name": "user-2"}]}})
        )
    );
    let served = sg.stats().graphql();

    // @requiresScopes on a field: OR of ANDs.
    let emails = "{ users(first: 1) { id email } }";
    let (status, body) = ask(&url, None, emails, none.clone());
    assert_eq!(
        (status, body),
        (403, unauthorized(&[json!(["users", "@", "email"])]))
    );
    let (status, body) = ask(
        &url,
        Some(json!({"sub": "u", "scope": "read:profile"})),
        emails,
        none.clone(),
    );
    assert_eq!(
        (status, body),
        (403, unauthorized(&[json!(["users", "@", "email"])]))
    );
    assert_eq!(
        sg.stats().graphql(),
        served,
        "a refused operation reached the subgraph"
    );
    for scope in ["read:email", "openid admin"] {
        let (status, body) = ask(
            &url,
            Some(json!({"sub": "u", "scope": scope})),
            emails,
            none.clone(),
        );
        assert_eq!(
            (status, body),
            (
                200,
                json!({"data": {"users": [{"id": "1", "email": "user-1@example.com"}]}})
            ),
            "scope {scope}"
        );
    }

    // @authenticated on a field and @requiresScopes on its type; aliases in paths.
    let products = "{ items: products { upc } }";
    let (status, body) = ask(&url, None, products, none.clone());
    assert_eq!((status, body), (403, unauthorized(&[json!(["items"])])));
    let (status, body) = ask(&url, Some(json!({"sub": "u"})), products, none.clone());
    assert_eq!((status, body), (403, unauthorized(&[json!(["items"])])));
    let (status, body) = ask(
        &url,
        Some(json!({"sub": "u", "scope": "catalog"})),
        products,
        none.clone(),
    );
    assert_eq!(status, 200);
    assert_eq!(body["data"]["items"][0], json!({"upc": "upc-1"}));

    // @policy: a claim predicate from the configuration.
    let create = "mutation { createUser(name: \"eve\") { id } }";
    let (status, body) = ask(
        &url,
        Some(json!({"sub": "u", "role": "user"})),
        create,
        none.clone(),
    );
    assert_eq!(
        (status, body),
        (403, unauthorized(&[json!(["createUser"])]))
    );
    let (status, body) = ask(
        &url,
        Some(json!({"sub": "u", "role": "admin"})),
        create,
        none.clone(),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["data"]["createUser"]["id"].is_string());

    // The federation entry points: trusted routers only, and _entities is
    // authorized by its representations' types and the fields selected.
    let users = json!({"r": [{"__typename": "User", "id": "1"}]});
    let products = json!({"r": [{"__typename": "User", "id": "1"}, {"__typename": "Product", "upc": "upc-1"}]});
    let served = sg.stats().graphql();
    for (who, claims) in [
        ("anonymous", None),
        ("a user", Some(json!({"sub": "u", "scope": "catalog"}))),
    ] {
        let (status, body) = ask(&url, claims, ENTITIES, users.clone());
        assert_eq!(
            (status, body["errors"][0]["extensions"]["code"].as_str()),
            (403, Some("FEDERATION_ENTRY_POINT_FORBIDDEN")),
            "{who}"
        );
        let (status, body) = ask(&url, None, "{ _service { sdl } }", none.clone());
        assert_eq!(
            (status, body["errors"][0]["extensions"]["code"].as_str()),
            (403, Some("FEDERATION_ENTRY_POINT_FORBIDDEN")),
            "{who}: _service"
        );
    }
    let router = json!({"sub": "router", "scope": "router"});
    let (status, body) = ask(&url, Some(router.clone()), ENTITIES, products.clone());
    assert_eq!((status, body), (403, unauthorized(&[json!(["_entities"])])));
    assert_eq!(
        sg.stats().graphql(),
        served,
        "a refused operation reached the subgraph"
    );
    // A fragment on a type the caller may not see is refused whatever the
    // representations (the check is static, like every other).
    let (status, body) = ask(&url, Some(router.clone()), ENTITIES, users.clone());
    assert_eq!(
        (status, body),
        (403, unauthorized(&[json!(["_entities", "@"])]))
    );
    let (status, body) = ask(&url, Some(router.clone()), USER_ENTITIES, users);
    assert_eq!(
        (status, body),
        (
            200,
            json!({"data": {"_entities": [{"id": "1", "name": "user-1"}]}})
        )
    );
    let (status, body) = ask(
        &url,
        Some(json!({"sub": "router", "scope": "router catalog"})),
        ENTITIES,
        products,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"]["_entities"][1],
        json!({"upc": "upc-1", "name": "product-1"})
    );
}

#[test]
fn filter_mode_answers_unauthorized_fields_as_null_with_errors() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sg = DemoSubgraph::start("users");
    let edge = edge(&sg, "filter", &dir);
    let url = edge.route("users");
    let none = json!({});
    let error = |path: Value| {
        json!({
            "message": "Unauthorized field or type",
            "path": path,
            "extensions": {"code": "UNAUTHORIZED_FIELD_OR_TYPE"}
        })
    };

    // A non-null field removed: null propagates to the nullable parent.
    let (status, body) = ask(
        &url,
        None,
        "{ user(id: \"1\") { id email } echo(value: \"hi\") }",
        none.clone(),
    );
    assert_eq!(
        (status, body),
        (
            200,
            json!({"data": {"user": null, "echo": "hi"}, "errors": [error(json!(["user", "email"]))]})
        )
    );
    // Up to `data` when every parent is non-null.
    let (status, body) = ask(&url, None, "{ users(first: 1) { id email } }", none.clone());
    assert_eq!(
        (status, body),
        (
            200,
            json!({"data": null, "errors": [error(json!(["users", "@", "email"]))]})
        )
    );
    // Authorized callers get everything, untouched.
    let (status, body) = ask(
        &url,
        Some(json!({"sub": "u", "scope": "read:email"})),
        "{ user(id: \"1\") { id email } }",
        none.clone(),
    );
    assert_eq!(
        (status, body),
        (
            200,
            json!({"data": {"user": {"id": "1", "email": "user-1@example.com"}}})
        )
    );

    // Nothing left to ask: the edge answers without the subgraph.
    let served = sg.stats().graphql();
    let (status, body) = ask(&url, None, "{ products { upc } }", none);
    assert_eq!(
        (status, body),
        (
            200,
            json!({"data": null, "errors": [error(json!(["products"]))]})
        )
    );
    assert_eq!(sg.stats().graphql(), served);
}
