//! The subgraph's GraphQL schema: federation entities `User @key(fields: "id")`
//! and `Product @key(fields: "upc")`, queries shaped for tests and benchmarks
//! (a large list, an always-failing field, an echo, the request's headers as
//! received), and mutations that are counted in [`Stats`] so a test can tell
//! how often a mutation really ran.
//!
//! Seed data is deterministic: users `1..=100` are `user-N` / `user-N@example.com`,
//! products `upc-1..=upc-10` are `product-N` priced `N * 100`, and each
//! product's UPC is an item with [`SEED_STOCK`] units in stock.
//!
//! For sagas, `reserve(item, quantity)` takes units out of stock and
//! `release(item, quantity)` (its compensation) puts them back; `stock(item)`
//! reads what is left. Asking for more than is in stock is the "HTTP 200 with
//! GraphQL errors and no data" case: `{"data":null,"errors":[…]}` with the code
//! `INSUFFICIENT_STOCK`, nothing taken.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicI32, AtomicU64, Ordering::Relaxed},
    },
};

use async_graphql::{
    Context, EmptySubscription, Error, ErrorExtensions, ID, Object, Result, SDLExportOptions,
    Schema, SimpleObject,
};
use axum::http::{HeaderMap, HeaderName};

use crate::stats::Stats;

#[cfg(test)]
mod tests;

/// The executable schema served on `/graphql`.
pub type DemoSchema = Schema<Query, Mutation, EmptySubscription>;

/// Seeded users.
pub const SEED_USERS: u32 = 100;
/// Seeded products.
pub const SEED_PRODUCTS: u32 = 10;
/// Units of each item (a product's UPC) in stock at start.
pub const SEED_STOCK: i32 = 100;
/// Largest `bigList(n:)` served, so a typo cannot exhaust memory.
pub const BIG_LIST_MAX: i32 = 200_000;

#[derive(Debug, Clone, SimpleObject)]
pub struct User {
    pub id: ID,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, SimpleObject)]
pub struct Product {
    pub upc: String,
    pub name: String,
    pub price: i32,
}

/// What `reserve` took out of stock.
#[derive(Debug, Clone, SimpleObject)]
pub struct Reservation {
    /// `r-1`, `r-2`, … in the order reservations were made.
    pub id: ID,
    pub item: String,
    pub quantity: i32,
    /// Units of the item left in stock after this reservation.
    pub remaining: i32,
}

/// Why a stock change was refused.
#[derive(Debug, PartialEq, Eq)]
enum StockError {
    UnknownItem,
    Insufficient { available: i32 },
}

/// The subgraph's data. Users created by `createUser` are kept (ids from 101).
#[derive(Debug)]
pub struct Store {
    users: RwLock<Vec<User>>,
    products: Vec<Product>,
    counter: AtomicI32,
    /// Units in stock per item.
    stock: Mutex<BTreeMap<String, i32>>,
    reservations: AtomicU64,
}

impl Store {
    pub fn seeded() -> Self {
        let users = (1..=SEED_USERS)
            .map(|n| new_user(n, format!("user-{n}")))
            .collect();
        let products = (1..=SEED_PRODUCTS)
            .map(|n| Product {
                upc: format!("upc-{n}"),
                name: format!("product-{n}"),
                price: i32::try_from(n * 100).unwrap_or(i32::MAX),
            })
            .collect();
        let stock = (1..=SEED_PRODUCTS)
            .map(|n| (format!("upc-{n}"), SEED_STOCK))
            .collect();
        Self {
            users: RwLock::new(users),
            products,
            counter: AtomicI32::new(0),
            stock: Mutex::new(stock),
            reservations: AtomicU64::new(0),
        }
    }

    fn stock_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, i32>> {
        // Every write is a single assignment: a poisoned map is still good data.
        self.stock.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stock(&self, item: &str) -> Option<i32> {
        self.stock_map().get(item).copied()
    }

    /// Takes `quantity` (> 0) units of `item` out of stock, all or nothing.
    fn reserve(&self, item: &str, quantity: i32) -> Result<Reservation, StockError> {
        let mut stock = self.stock_map();
        let available = stock.get_mut(item).ok_or(StockError::UnknownItem)?;
        if quantity > *available {
            return Err(StockError::Insufficient {
                available: *available,
            });
        }
        *available -= quantity;
        let n = self.reservations.fetch_add(1, Relaxed) + 1;
        Ok(Reservation {
            id: ID(format!("r-{n}")),
            item: item.to_string(),
            quantity,
            remaining: *available,
        })
    }

    /// Puts `quantity` (> 0) units of `item` back; returns the new stock.
    fn release(&self, item: &str, quantity: i32) -> Result<i32, StockError> {
        let mut stock = self.stock_map();
        let available = stock.get_mut(item).ok_or(StockError::UnknownItem)?;
        *available = available.saturating_add(quantity);
        Ok(*available)
    }

    fn user(&self, id: &str) -> Option<User> {
        let index = id.parse::<usize>().ok()?.checked_sub(1)?;
        self.users().get(index).cloned()
    }

    fn product(&self, upc: &str) -> Option<Product> {
        self.products.iter().find(|p| p.upc == upc).cloned()
    }

    fn users(&self) -> std::sync::RwLockReadGuard<'_, Vec<User>> {
        // A panic while holding the lock cannot leave the Vec half-written
        // (push is the only write), so a poisoned lock is still good data.
        self.users.read().unwrap_or_else(|e| e.into_inner())
    }

    fn create_user(&self, name: String) -> User {
        let mut users = self.users.write().unwrap_or_else(|e| e.into_inner());
        let n = u32::try_from(users.len() + 1).unwrap_or(u32::MAX);
        let created = new_user(n, name);
        users.push(created.clone());
        created
    }
}

fn new_user(n: u32, name: String) -> User {
    User {
        id: ID(n.to_string()),
        email: format!("{name}@example.com"),
        name,
    }
}

/// The headers of the HTTP request being executed, as the subgraph received
/// them (request data, attached by `graphql_http.rs`).
#[derive(Debug)]
pub struct RequestHeaders(pub HeaderMap);

/// Builds the schema over `store`, counting mutations into `stats`.
pub fn build(store: Arc<Store>, stats: Arc<Stats>) -> DemoSchema {
    Schema::build(Query, Mutation, EmptySubscription)
        .enable_federation()
        .data(store)
        .data(stats)
        .finish()
}

/// The names of the query and mutation root fields (what a `fail_field`
/// fault may name), read by introspection.
pub async fn root_fields(schema: &DemoSchema) -> BTreeSet<String> {
    let query = "{ __schema { queryType { fields { name } } mutationType { fields { name } } } }";
    let data = schema
        .execute(query)
        .await
        .data
        .into_json()
        .unwrap_or_default();
    ["queryType", "mutationType"]
        .iter()
        .filter_map(|ty| data["__schema"][ty]["fields"].as_array())
        .flatten()
        .filter_map(|field| field["name"].as_str().map(str::to_string))
        .collect()
}

/// The federation SDL, exactly as `{ _service { sdl } }` returns it.
pub fn sdl(schema: &DemoSchema) -> String {
    schema.sdl_with_options(SDLExportOptions::new().federation().compose_directive())
}

fn store<'a>(ctx: &Context<'a>) -> &'a Arc<Store> {
    ctx.data_unchecked::<Arc<Store>>()
}

/// A GraphQL error with a stable `extensions.code`.
fn coded(message: impl Into<String>, code: &'static str) -> Error {
    Error::new(message).extend_with(|_, e| e.set("code", code))
}

fn positive_quantity(quantity: i32) -> Result<i32> {
    if quantity > 0 {
        Ok(quantity)
    } else {
        Err(coded("quantity must be at least 1", "BAD_ARGUMENT"))
    }
}

fn stock_error(item: &str, quantity: i32, e: StockError) -> Error {
    match e {
        StockError::UnknownItem => coded(format!("no item {item:?}"), "UNKNOWN_ITEM"),
        StockError::Insufficient { available } => coded(
            format!("cannot reserve {quantity} of {item:?}: {available} in stock"),
            "INSUFFICIENT_STOCK",
        ),
    }
}

pub struct Query;

#[Object]
impl Query {
    /// The user with this id, if any.
    async fn user(&self, ctx: &Context<'_>, id: ID) -> Option<User> {
        store(ctx).user(&id)
    }

    /// The first `first` users, in id order.
    async fn users(
        &self,
        ctx: &Context<'_>,
        #[graphql(default_with = "Some(10)")] first: Option<i32>,
    ) -> Result<Vec<User>> {
        // An explicit `null` means the default too.
        let first = usize::try_from(first.unwrap_or(10))
            .map_err(|_| coded("first must be >= 0", "BAD_ARGUMENT"))?;
        Ok(store(ctx).users().iter().take(first).cloned().collect())
    }

    /// Every product.
    async fn products(&self, ctx: &Context<'_>) -> Vec<Product> {
        store(ctx).products.clone()
    }

    /// `n` strings `item-0 … item-(n-1)`, for large responses (n <= 200000).
    async fn big_list(&self, n: i32) -> Result<Vec<String>> {
        if !(0..=BIG_LIST_MAX).contains(&n) {
            return Err(coded(
                format!("n must be between 0 and {BIG_LIST_MAX}"),
                "BAD_ARGUMENT",
            ));
        }
        Ok((0..n).map(|i| format!("item-{i}")).collect())
    }

    /// Always fails: `{"data":{"boom":null},"errors":[…]}` with HTTP 200.
    async fn boom(&self, ctx: &Context<'_>) -> Option<String> {
        // Returning `Err` would make async-graphql 7 leave the field out of
        // `data` altogether (and answer `"data": null` when it is the only
        // field), where GraphQL says an errored nullable field is `null`. So
        // the error is recorded beside a successful `null`.
        let error = coded("boom", "BOOM").into_server_error(ctx.item.pos);
        ctx.add_error(ctx.set_error_path(error));
        None
    }

    /// Units of `item` in stock, or null for an unknown item.
    async fn stock(&self, ctx: &Context<'_>, item: String) -> Option<i32> {
        store(ctx).stock(&item)
    }

    /// Returns its argument.
    async fn echo(&self, value: String) -> String {
        value
    }

    /// Every value of the request header `name` (any case), in the order
    /// received: one entry per header line, so repeated headers give several
    /// and a comma-separated line gives one. Empty if the header is absent.
    /// Bytes that are not UTF-8 become U+FFFD.
    async fn request_header(&self, ctx: &Context<'_>, name: String) -> Result<Vec<String>> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| coded(format!("{name:?} is not a header name"), "BAD_ARGUMENT"))?;
        let Some(RequestHeaders(headers)) = ctx.data_opt::<RequestHeaders>() else {
            return Ok(Vec::new());
        };
        Ok(headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect())
    }

    #[graphql(entity)]
    async fn find_user_by_id(&self, ctx: &Context<'_>, id: ID) -> Option<User> {
        store(ctx).user(&id)
    }

    #[graphql(entity)]
    async fn find_product_by_upc(&self, ctx: &Context<'_>, upc: String) -> Option<Product> {
        store(ctx).product(&upc)
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Creates a user (ids continue after the seeded ones).
    async fn create_user(&self, ctx: &Context<'_>, name: String) -> User {
        ctx.data_unchecked::<Arc<Stats>>().record_mutation();
        store(ctx).create_user(name)
    }

    /// Increments the subgraph's counter and returns its new value.
    async fn increment_counter(&self, ctx: &Context<'_>) -> i32 {
        ctx.data_unchecked::<Arc<Stats>>().record_mutation();
        store(ctx).counter.fetch_add(1, Relaxed).wrapping_add(1)
    }

    /// Takes `quantity` units of `item` out of stock. More than is in stock is
    /// an error (`INSUFFICIENT_STOCK`) that nulls the whole `data`, and takes
    /// nothing.
    async fn reserve(&self, ctx: &Context<'_>, item: String, quantity: i32) -> Result<Reservation> {
        ctx.data_unchecked::<Arc<Stats>>().record_mutation();
        let quantity = positive_quantity(quantity)?;
        store(ctx)
            .reserve(&item, quantity)
            .map_err(|e| stock_error(&item, quantity, e))
    }

    /// Puts `quantity` units of `item` back in stock: the compensation of
    /// `reserve`. Not capped: releasing twice puts them back twice, which is
    /// what a test of idempotent compensations looks for.
    async fn release(&self, ctx: &Context<'_>, item: String, quantity: i32) -> Result<bool> {
        ctx.data_unchecked::<Arc<Stats>>().record_mutation();
        let quantity = positive_quantity(quantity)?;
        store(ctx)
            .release(&item, quantity)
            .map(|_| true)
            .map_err(|e| stock_error(&item, quantity, e))
    }
}
