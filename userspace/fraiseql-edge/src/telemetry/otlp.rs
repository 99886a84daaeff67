//! Span export over OTLP/gRPC (`[tracing] otlp_endpoint`).
//!
//! The log subscriber is installed before the configuration is read
//! ([`crate::daemon::init_logging`]), and the gRPC exporter needs the
//! daemon's runtime, so the OpenTelemetry layer is installed first with
//! nothing behind it ([`layer`]) and switched on by [`start`]: until then
//! (and for good with export off) its filter wants no span, and the layer
//! costs one relaxed load each time a `debug`-or-above span of this crate
//! is created (its events are never its business: their callsites are
//! `never` for it).
//! Only this crate's spans are exported (never the exporter's own, nor
//! hyper's), and only those of sampled requests: the data path decides
//! sampling before a request's span exists ([`admit`]), so the layer never
//! builds spans of the requests it would not export — that is most of what
//! export would otherwise cost (`cargo xtask bench monitoring`).
//!
//! The tracer behind the layer is process-wide because the subscriber is.

use std::{
    sync::{
        LazyLock, OnceLock,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::Context as _;
use opentelemetry::{
    Context,
    trace::{
        SpanBuilder, SpanContext, TraceContextExt as _, TraceFlags, TraceState, TracerProvider as _,
    },
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracer, SdkTracerProvider},
};
use tracing::{Subscriber, level_filters::LevelFilter, subscriber::Interest};
use tracing_subscriber::{Layer, filter::DynFilterFn, registry::LookupSpan};

use super::{TraceParent, TracingConfig};

/// The exporting tracer, once [`start`] has run.
static TRACER: OnceLock<SdkTracer> = OnceLock::new();
/// Whether spans are exported now.
static EXPORTING: AtomicBool = AtomicBool::new(false);
/// Stands in for [`TRACER`] before it is set (the layer's filter admits no
/// span then, so it is never asked for one in practice).
static IDLE: LazyLock<SdkTracer> =
    LazyLock::new(|| SdkTracerProvider::builder().build().tracer("fraiseql-edge"));

/// The tracer the layer was built with: the exporting one once set.
#[derive(Clone, Copy, Debug)]
struct Deferred;

impl opentelemetry::trace::Tracer for Deferred {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        TRACER
            .get()
            .unwrap_or(&IDLE)
            .build_with_context(builder, parent_cx)
    }
}

thread_local! {
    /// Set while [`admit`] creates the span of a sampled request.
    static ADMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Creates a request's span with `make`, exported (with every span created
/// inside it) only when `sampled`: the layer sees nothing of the others.
pub fn admit(sampled: bool, make: impl FnOnce() -> tracing::Span) -> tracing::Span {
    if !sampled || !EXPORTING.load(Relaxed) {
        return make();
    }
    ADMIT.with(|a| a.set(true));
    let span = make();
    ADMIT.with(|a| a.set(false));
    span
}

fn exported(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_span()
        && meta.target().starts_with("fraiseql_edge")
        && *meta.level() <= tracing::Level::DEBUG
}

/// The OpenTelemetry layer of the log subscriber: idle until [`start`].
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    // A span is exported when it is a request span created by [`admit`]
    // for a sampled request, or created inside an exported span (the
    // context of a per-layer filter only sees the spans it enabled).
    let filter = DynFilterFn::new(|meta, cx: &tracing_subscriber::layer::Context<'_, S>| {
        EXPORTING.load(Relaxed)
            && exported(meta)
            && (ADMIT.with(std::cell::Cell::get) || cx.lookup_current().is_some())
    })
    .with_max_level_hint(LevelFilter::DEBUG)
    .with_callsite_filter(|meta| {
        if exported(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    });
    tracing_opentelemetry::layer()
        .with_tracer(Deferred)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter)
}

/// Export in progress; [`Export::shutdown`] flushes it.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Stops exporting and sends what is still buffered (bounded by the
    /// export timeout).
    pub fn shutdown(self) {
        EXPORTING.store(false, Relaxed);
        match self.provider.shutdown() {
            Ok(()) => tracing::info!("trace export flushed"),
            Err(e) => tracing::warn!(error = %e, "flushing the trace export"),
        }
    }
}

/// Starts exporting spans when `cfg` names an endpoint. Must run inside
/// the daemon's tokio runtime (the gRPC channel lives there), once.
pub fn start(cfg: &TracingConfig) -> anyhow::Result<Option<Export>> {
    let Some(endpoint) = &cfg.otlp_endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(Duration::from_millis(cfg.export_timeout_ms))
        .build()
        .context("the OTLP exporter ([tracing] otlp_endpoint)")?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // The data path samples (`Tracer::start`, with `sample_ratio` and
        // the client's flag): what reaches the SDK is to be recorded.
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(
            Resource::builder()
                .with_service_name(cfg.service_name.clone())
                .build(),
        )
        .build();
    TRACER
        .set(provider.tracer("fraiseql-edge"))
        .map_err(|_| anyhow::anyhow!("trace export started twice"))?;
    EXPORTING.store(true, Relaxed);
    tracing::callsite::rebuild_interest_cache();
    tracing::info!(
        endpoint,
        sample_ratio = cfg.sample_ratio,
        service_name = cfg.service_name,
        "exporting spans over OTLP/gRPC"
    );
    Ok(Some(Export { provider }))
}

/// Makes the client's span the OpenTelemetry parent of spans created
/// while the guard lives (nothing when not exporting).
pub fn enter_remote_parent(p: TraceParent) -> Option<opentelemetry::ContextGuard> {
    if !EXPORTING.load(Relaxed) {
        return None;
    }
    let flags = if p.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let sc = SpanContext::new(p.trace_id, p.parent_id, flags, true, TraceState::default());
    Some(Context::current().with_remote_span_context(sc).attach())
}

/// The exported span context of `span` (`None`: not exported).
pub fn span_context(span: &tracing::Span) -> Option<SpanContext> {
    if !EXPORTING.load(Relaxed) || span.is_disabled() {
        return None;
    }
    span.in_scope(current_span_context)
}

/// The exported span context current on this thread (the innermost
/// entered span the layer exports), if any.
pub fn current_span_context() -> Option<SpanContext> {
    if !EXPORTING.load(Relaxed) {
        return None;
    }
    let cx = Context::current();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}
