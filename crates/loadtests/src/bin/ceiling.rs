//! `ceiling`: the fastest HTTP answer this machine gives with the same stack as flag-server (tokio,
//! hyper, axum, HTTP/1.1): every request to any path is read whole and answered `200` with a fixed
//! JSON body of a chosen size. Measured with the same `wrk` load as flag-server, it is the
//! ceiling that flag-server's throughput is reported against.
//!
//! `ceiling --listen 127.0.0.1:9090 --body-bytes 98` prints `ceiling listening on http://…`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use clap::Parser;

/// A trivial server that answers every request with a fixed body.
#[derive(Parser)]
#[command(name = "ceiling", about)]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Size of the JSON body of every answer, in bytes.
    #[arg(long, default_value_t = 100)]
    body_bytes: usize,
}

/// A JSON object of exactly `size` bytes (at least `{"p":""}`, 8 bytes).
fn body_of(size: usize) -> String {
    let padding = size.saturating_sub(8);
    format!("{{\"p\":\"{}\"}}", "x".repeat(padding))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let body: &'static str = Box::leak(body_of(cli.body_bytes).into_boxed_str());
    let answer = move |_request: Bytes| async move {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let app = Router::new().fallback(answer);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("binding {}", cli.listen))?;
    println!(
        "ceiling listening on http://{}",
        listener.local_addr().context("reading the bound address")?
    );
    axum::serve(listener, app).await.context("serving")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::body_of;

    #[test]
    fn bodies_have_the_size_asked_for() {
        for size in [8, 9, 98, 15_000] {
            assert_eq!(body_of(size).len(), size);
            assert!(serde_json::from_str::<serde_json::Value>(&body_of(size)).is_ok());
        }
    }
}
