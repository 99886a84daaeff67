//! Cost of the circuit breaker on the request path: one admission plus one
//! recorded outcome (closed breaker), and a refusal (open breaker).
//! `cargo bench -p fraiseql-edge --bench breaker`

use std::{hint::black_box, time::Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use fraiseql_edge::breaker::{Breaker, BreakerConfig, Force};

fn breaker(c: &mut Criterion) {
    let now = Instant::now();
    let closed = Breaker::new(BreakerConfig::default(), now);
    c.bench_function("breaker admit+record (closed)", |b| {
        b.iter(|| {
            let (permit, _) = closed.admit(black_box(now)).expect("closed admits");
            black_box(closed.record(permit, true, now));
        })
    });
    let open = Breaker::new(BreakerConfig::default(), now);
    open.force(Force::Open);
    c.bench_function("breaker refuse (open)", |b| {
        b.iter(|| black_box(open.admit(black_box(now)).is_err()))
    });
}

criterion_group!(benches, breaker);
criterion_main!(benches);
