//! Wiring: open the store, start the fleet, the live hub and the grid, serve gRPC and HTTP on one listener until shutdown.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::error::{Error, Result};
use crate::fleet::{Fleet, FleetConfig};
use crate::grid::{Grid, GridConfig};
use crate::grpc::{self, Api};
use crate::http;
use crate::live::{LiveConfig, LiveHub};
use crate::metrics::Metrics;
use crate::store::Store;

/// Serves the broker on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    database_url: &str,
    fleet_config: FleetConfig,
    live_config: LiveConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let configs = (fleet_config, live_config, GridConfig::default());
    serve_with(listener, database_url, configs, shutdown).await
}

/// `serve` with every part's settings: (fleet, live, grid).
pub async fn serve_with(
    listener: TcpListener,
    database_url: &str,
    (fleet_config, live_config, grid_config): (FleetConfig, LiveConfig, GridConfig),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let store = Store::open(database_url).await?;
    let (to_live, from_nodes) = tokio::sync::mpsc::channel(4096);
    let (fleet, fleet_task) = Fleet::start(store.clone(), fleet_config, Some(to_live)).await?;
    let allow_observers = live_config.allow_observers;
    let live = LiveHub::start(fleet.clone(), store.clone(), live_config, from_nodes);
    let grid = Grid::start(fleet.clone(), store.clone(), grid_config);
    let api = Api {
        fleet,
        auth: Authenticator::new(store.clone()),
        store: store.clone(),
        metrics: Arc::new(Metrics::default()),
        live,
        grid,
        allow_observers,
    };
    // Merge first, then set the fallback (tonic's router already has one).
    let router = grpc::routes(api.clone())
        .merge(http::routes(api.clone()))
        .merge(crate::grid::routes(api))
        .fallback(|| async { Error::not_found("no such path: try /, /healthz or /metrics") });
    let addr = listener
        .local_addr()
        .map_err(|e| Error::internal(format!("listener has no address: {e}")))?;
    println!("farm-broker listening on http://{addr}");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    tracing::info!(%addr, "serving gRPC and HTTP");
    // No Nagle: small WebDriver answers and gRPC frames to nodes must not wait ~40 ms for an ACK.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::internal(format!("server error: {e}")));
    fleet_task.abort();
    store.close().await;
    result
}
