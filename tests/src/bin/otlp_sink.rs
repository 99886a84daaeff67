//! `otlp-sink --listen ADDR`: an OTLP/gRPC trace receiver that accepts every
//! export and counts the spans, for `cargo xtask bench monitoring`. Prints
//! `listening ADDR` once bound, `spans N` every second and once more on
//! SIGTERM or SIGINT, then exits.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};

#[derive(Clone, Default)]
struct Sink {
    spans: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum();
        self.spans.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr: SocketAddr = match args.as_slice() {
        [_, flag, addr] if flag == "--listen" => addr.parse()?,
        _ => anyhow::bail!("usage: otlp-sink --listen HOST:PORT"),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening {}", listener.local_addr()?);
        let sink = Sink::default();
        let spans = Arc::clone(&sink.spans);
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tokio::pin!(server);
        loop {
            tokio::select! {
                r = &mut server => r?,
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => println!("spans {}", spans.load(Ordering::Relaxed)),
            }
        }
        println!("spans {}", spans.load(Ordering::Relaxed));
        anyhow::Ok(())
    })
}
