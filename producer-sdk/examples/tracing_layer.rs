//! The `tracing` layer: an app's existing `tracing` calls reach the lake,
//! fields as attributes, next to the usual console output.
//!
//! ```text
//! TLAKE_ENDPOINT=http://127.0.0.1:4317 OTEL_SERVICE_NAME=example \
//!     cargo run -p tlake-producer-sdk --example tracing_layer
//! ```

use tlake_producer_sdk::{ClientBuilder, TracingLayer};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> Result<(), tlake_producer_sdk::Error> {
    let client = ClientBuilder::from_env().build()?;
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer())
        .with(TracingLayer::new(client.clone()).with_filter(LevelFilter::INFO))
        .init();

    let span = tracing::info_span!("checkout", user.id = "u-42", cart.items = 3);
    let _entered = span.enter();
    tracing::info!(order.id = 1001, amount = 59.90, "order placed");
    tracing::warn!(retry = 1, "payment provider slow");
    tracing::debug!("not sent: below the layer's INFO filter");
    drop(_entered);

    let outcome = client.shutdown().await;
    println!("{outcome:?}");
    Ok(())
}
