//! The running gateway: binds the HTTP listener and serves until asked to stop.

use std::future::Future;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::config::Config;

/// Serves the gateway on the configured address until `shutdown` completes, then drains
/// in-flight requests and returns.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("binding HTTP listener on {}", config.server.listen))?;
    serve_on(listener, config, shutdown).await
}

/// Serves on an already bound listener (tests bind port 0 and read the address back).
pub async fn serve_on(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr().context("reading listener address")?;
    tracing::info!(%addr, public_url = %config.public_url(), "tonegate listening on http://{addr}");
    axum::serve(listener, crate::api::router())
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server")?;
    tracing::info!("tonegate stopped");
    Ok(())
}

/// Completes on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested");
}
