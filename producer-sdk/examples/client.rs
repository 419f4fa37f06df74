//! The plain client: build events, log them, flush, shut down.
//!
//! ```text
//! TLAKE_ENDPOINT=http://127.0.0.1:4317 OTEL_SERVICE_NAME=example \
//!     cargo run -p tlake-producer-sdk --example client
//! ```

use std::time::Duration;

use tlake_producer_sdk::{ClientBuilder, Compression, Event, OverflowPolicy, Severity, Shutdown};

#[tokio::main]
async fn main() -> Result<(), tlake_producer_sdk::Error> {
    // Endpoint, token and stream come from TLAKE_* variables; the resource
    // from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES.
    let client = ClientBuilder::from_env()
        .compression(Compression::Zstd)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_millis(100),
        })
        .on_failure(|failure| eprintln!("{} events lost: {}", failure.events, failure.error))
        .build()?;

    for i in 0..1_000i64 {
        let event = Event::new(Severity::Info, "request completed")
            .attr("http.route", "/api/v1/orders/{id}")
            .attr("http.response.status_code", 200i64)
            .attr("order.id", i);
        // Err means the event was not queued (queue full or shut down).
        if let Err(err) = client.log(event) {
            eprintln!("not queued: {err}");
        }
    }
    client.log(Event::new(Severity::Warn, "disk almost full").attr("disk.used_ratio", 0.93))?;

    // Every event logged so far is durable in Kafka once this returns Ok.
    client.flush().await?;

    match client.shutdown().await {
        Shutdown::Complete(stats) => println!("all delivered: {stats:?}"),
        Shutdown::Incomplete { stats, last_error } => {
            eprintln!("incomplete: {stats:?}, last error: {last_error:?}");
        }
    }
    Ok(())
}
