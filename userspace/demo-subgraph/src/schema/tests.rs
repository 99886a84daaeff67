use std::sync::Arc;

use async_graphql::{Request, Variables};
use serde_json::{Value, json};

use axum::http::{HeaderMap, HeaderValue};

use super::{DemoSchema, RequestHeaders, Store, build, root_fields, sdl};
use crate::stats::Stats;

fn schema() -> (DemoSchema, Arc<Stats>) {
    let stats = Arc::new(Stats::new("test"));
    (build(Arc::new(Store::seeded()), stats.clone()), stats)
}

async fn run(schema: &DemoSchema, request: impl Into<Request>) -> Value {
    serde_json::to_value(schema.execute(request).await).unwrap()
}

#[tokio::test]
async fn queries_serve_the_seed_data() {
    let (schema, _) = schema();
    let body = run(
        &schema,
        r#"{ user(id: "7") { id name email } users { id } first3: users(first: 3) { name }
             products { upc name price } echo(value: "hi") }"#,
    )
    .await;
    assert_eq!(body.get("errors"), None, "{body}");
    let data = &body["data"];
    assert_eq!(
        data["user"],
        json!({"id": "7", "name": "user-7", "email": "user-7@example.com"})
    );
    assert_eq!(data["users"].as_array().unwrap().len(), 10, "default first");
    assert_eq!(data["first3"][2]["name"], "user-3");
    assert_eq!(data["products"].as_array().unwrap().len(), 10);
    assert_eq!(
        data["products"][1],
        json!({"upc": "upc-2", "name": "product-2", "price": 200})
    );
    assert_eq!(data["echo"], "hi");

    let missing = run(&schema, r#"{ user(id: "1000") { id } }"#).await;
    assert_eq!(missing, json!({"data": {"user": null}}));
}

#[tokio::test]
async fn big_list_is_bounded() {
    let (schema, _) = schema();
    let body = run(&schema, "{ bigList(n: 200000) }").await;
    let list = body["data"]["bigList"].as_array().unwrap();
    assert_eq!(list.len(), 200_000);
    assert_eq!(list[199_999], "item-199999");

    let too_big = run(&schema, "{ bigList(n: 200001) }").await;
    assert_eq!(too_big["errors"][0]["extensions"]["code"], "BAD_ARGUMENT");
}

#[tokio::test]
async fn boom_is_a_null_field_with_an_error() {
    let (schema, _) = schema();
    let body = run(&schema, "{ boom }").await;
    assert_eq!(body["data"], json!({"boom": null}), "{body}");
    assert_eq!(body["errors"][0]["message"], "boom");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BOOM");
    assert_eq!(body["errors"][0]["path"], json!(["boom"]));

    let body = run(&schema, r#"{ boom echo(value: "still here") }"#).await;
    assert_eq!(
        body["data"],
        json!({"boom": null, "echo": "still here"}),
        "{body}"
    );
}

#[tokio::test]
async fn entities_resolve_users_and_products() {
    let (schema, _) = schema();
    let query = r#"query($r: [_Any!]!) { _entities(representations: $r) {
        __typename ... on User { id name } ... on Product { upc price } } }"#;
    let vars = json!({"r": [
        {"__typename": "User", "id": "42"},
        {"__typename": "Product", "upc": "upc-3"},
        {"__typename": "User", "id": "9999"},
    ]});
    let body = run(
        &schema,
        Request::new(query).variables(Variables::from_json(vars)),
    )
    .await;
    assert_eq!(body.get("errors"), None, "{body}");
    assert_eq!(
        body["data"]["_entities"],
        json!([
            {"__typename": "User", "id": "42", "name": "user-42"},
            {"__typename": "Product", "upc": "upc-3", "price": 300},
            null,
        ])
    );
}

#[tokio::test]
async fn service_sdl_declares_the_keys() {
    let (schema, _) = schema();
    let body = run(&schema, "{ _service { sdl } }").await;
    let served = body["data"]["_service"]["sdl"].as_str().unwrap();
    assert_eq!(
        served,
        sdl(&schema),
        "--print-sdl prints what _service serves"
    );
    for needle in [
        r#"type User @key(fields: "id")"#,
        r#"type Product @key(fields: "upc")"#,
        "bigList(n: Int!): [String!]!",
        "users(first: Int = 10): [User!]!",
        "createUser(name: String!): User!",
        "incrementCounter: Int!",
        "requestHeader(name: String!): [String!]!",
        "stock(item: String!): Int",
        "reserve(item: String!, quantity: Int!): Reservation!",
        "release(item: String!, quantity: Int!): Boolean!",
    ] {
        assert!(served.contains(needle), "missing {needle:?} in:\n{served}");
    }
}

#[tokio::test]
async fn each_mutation_execution_is_counted_once() {
    let (schema, stats) = schema();
    let body = run(&schema, "mutation { incrementCounter }").await;
    assert_eq!(body["data"]["incrementCounter"], 1);
    assert_eq!(stats.snapshot().mutations, 1);

    let body = run(
        &schema,
        r#"mutation { createUser(name: "ann") { id name email } }"#,
    )
    .await;
    assert_eq!(
        body["data"]["createUser"],
        json!({"id": "101", "name": "ann", "email": "ann@example.com"})
    );
    assert_eq!(stats.snapshot().mutations, 2);

    let body = run(&schema, r#"{ user(id: "101") { name } }"#).await;
    assert_eq!(
        body["data"]["user"]["name"], "ann",
        "created users are kept"
    );
    let body = run(&schema, "mutation { incrementCounter }").await;
    assert_eq!(body["data"]["incrementCounter"], 2);
    assert_eq!(stats.snapshot().mutations, 3, "queries are not counted");
}

#[tokio::test]
async fn request_header_returns_every_value_as_received() {
    let (schema, _) = schema();
    let mut headers = HeaderMap::new();
    headers.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    headers.append(
        "x-forwarded-for",
        HeaderValue::from_static("10.0.0.2, 10.0.0.3"),
    );
    headers.append("x-raw", HeaderValue::from_bytes(b"caf\xe9").unwrap());
    let query = r#"{ xff: requestHeader(name: "X-Forwarded-For")
        raw: requestHeader(name: "x-raw") none: requestHeader(name: "x-real-ip") }"#;
    let body = run(&schema, Request::new(query).data(RequestHeaders(headers))).await;
    assert_eq!(
        body,
        json!({"data": {
            "xff": ["10.0.0.1", "10.0.0.2, 10.0.0.3"],
            "raw": ["caf\u{fffd}"],
            "none": [],
        }})
    );

    // Executed without an HTTP request (as here): no headers at all.
    let body = run(&schema, r#"{ requestHeader(name: "host") }"#).await;
    assert_eq!(body, json!({"data": {"requestHeader": []}}));

    let body = run(&schema, r#"{ requestHeader(name: "bad name") }"#).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_ARGUMENT",
        "{body}"
    );
}

#[tokio::test]
async fn reserve_and_release_move_the_stock() {
    let (schema, stats) = schema();
    let body = run(
        &schema,
        r#"{ stock(item: "upc-1") none: stock(item: "nope") }"#,
    )
    .await;
    assert_eq!(body, json!({"data": {"stock": 100, "none": null}}));

    let body = run(
        &schema,
        r#"mutation { reserve(item: "upc-1", quantity: 30) { id item quantity remaining } }"#,
    )
    .await;
    assert_eq!(
        body,
        json!({"data": {"reserve": {"id": "r-1", "item": "upc-1", "quantity": 30, "remaining": 70}}})
    );
    let body = run(
        &schema,
        r#"mutation { reserve(item: "upc-1", quantity: 70) { id remaining } }"#,
    )
    .await;
    assert_eq!(
        body["data"]["reserve"],
        json!({"id": "r-2", "remaining": 0})
    );

    // Beyond the stock: data is null, the error is coded, nothing is taken.
    let body = run(
        &schema,
        r#"mutation { reserve(item: "upc-1", quantity: 1) { id } }"#,
    )
    .await;
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "INSUFFICIENT_STOCK"
    );
    assert_eq!(body["errors"][0]["path"], json!(["reserve"]));

    let body = run(
        &schema,
        r#"mutation { release(item: "upc-1", quantity: 30) }"#,
    )
    .await;
    assert_eq!(body, json!({"data": {"release": true}}));
    let body = run(&schema, r#"{ stock(item: "upc-1") }"#).await;
    assert_eq!(body["data"]["stock"], 30);
    assert_eq!(
        stats.snapshot().mutations,
        4,
        "failed reservations count too"
    );

    for (query, code) in [
        (
            r#"mutation { reserve(item: "nope", quantity: 1) { id } }"#,
            "UNKNOWN_ITEM",
        ),
        (
            r#"mutation { release(item: "nope", quantity: 1) }"#,
            "UNKNOWN_ITEM",
        ),
        (
            r#"mutation { reserve(item: "upc-2", quantity: 0) { id } }"#,
            "BAD_ARGUMENT",
        ),
        (
            r#"mutation { release(item: "upc-2", quantity: -1) }"#,
            "BAD_ARGUMENT",
        ),
    ] {
        let body = run(&schema, query).await;
        assert_eq!(body["data"], Value::Null, "{query}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{query}");
    }
    let body = run(&schema, r#"{ stock(item: "upc-2") }"#).await;
    assert_eq!(
        body["data"]["stock"], 100,
        "refused changes leave the stock alone"
    );
}

#[tokio::test]
async fn root_fields_are_read_from_the_schema() {
    let (schema, _) = schema();
    let fields = root_fields(&schema).await;
    for name in [
        "user",
        "stock",
        "echo",
        "reserve",
        "release",
        "incrementCounter",
    ] {
        assert!(fields.contains(name), "{name} missing from {fields:?}");
    }
    assert!(!fields.contains("Reservation") && !fields.contains("remaining"));
}
