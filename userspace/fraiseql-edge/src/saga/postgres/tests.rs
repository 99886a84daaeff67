//! What can be checked without a server. The store itself is tested
//! against a real PostgreSQL by the tests crate (`tests/e2e/saga_pg_store.rs`),
//! which owns the server fixture.

use super::*;

#[test]
fn passwords_never_reach_messages() {
    for (url, shown) in [
        (
            "postgres://edge:s3cret@db:5432/sagas",
            "postgres://edge:***@db:5432/sagas",
        ),
        (
            "postgresql://edge:p@ss@db/sagas?sslmode=disable",
            "postgresql://edge:***@db/sagas?sslmode=disable",
        ),
        ("postgres://edge@db/sagas", "postgres://edge@db/sagas"),
        ("postgres://db/sagas", "postgres://db/sagas"),
        (
            "host=db user=edge password=s3cret dbname=sagas",
            "host=db user=edge password=*** dbname=sagas",
        ),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn hashes_round_trip_and_damage_is_refused() {
    let hash = crate::graphql::persisted::sha256("body");
    assert_eq!(sha256(&hex(&hash)).unwrap(), hash);
    assert!(sha256("abc").is_err());
    assert!(sha256(&"zz".repeat(32)).is_err());
    assert!(sha256(&"é".repeat(32)).is_err());
}

#[test]
fn in_flight_states_are_the_non_terminal_ones() {
    assert_eq!(in_flight_states(), "'Pending', 'Executing', 'Compensating'");
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    // Port 1 on loopback: nothing listens there.
    let err = PostgresStore::open(
        "postgres://edge:s3cret@127.0.0.1:1/sagas",
        "node-a",
        Duration::from_secs(15),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("postgres://edge:***@127.0.0.1:1/sagas"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}
