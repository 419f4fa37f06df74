//! Throughput and caller-side cost of logging through the SDK:
//! `tracing::info!` → `TracingLayer` → queue → gateway → Kafka ack.
//!
//! Needs a running gateway (see BENCHMARKS.md for the exact commands):
//!
//! ```text
//! cargo run --release -p tlake-producer-sdk --example bench -- http://127.0.0.1:4317 2000000
//! ```
//!
//! Two measurements, both from one application thread:
//! 1. caller cost: bursts that fit the queue, timing only the `info!` calls
//!    (the pipeline drains between bursts, untimed);
//! 2. throughput: `events` calls with a `Block` overflow policy, timed from
//!    the first call until `flush()` confirms every event durable in Kafka.

use std::time::{Duration, Instant};

use tlake_producer_sdk::{Client, OverflowPolicy, TracingLayer};
use tracing_subscriber::prelude::*;

fn main() -> Result<(), tlake_producer_sdk::Error> {
    let mut args = std::env::args().skip(1);
    let endpoint = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:4317".into());
    let events: u64 = args
        .next()
        .map_or(2_000_000, |n| n.parse().expect("event count"));
    let burst: u64 = 200_000;

    // No tokio runtime here: the SDK runs its own background thread, as it
    // would in a synchronous application.
    let client = Client::builder()
        .endpoint(endpoint.clone())
        .service_name("tlake-bench")
        .queue_capacity(burst as usize + 1)
        .queue_max_bytes(512 << 20)
        .max_batch_events(10_000)
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .build()?;
    tracing_subscriber::registry()
        .with(TracingLayer::new(client.clone()))
        .init();

    // Warm-up: connection, allocator, caches.
    log_many(0, 50_000);
    client.flush_blocking()?;

    // 1. Caller-side cost per event: wall time of the calls, and the CPU
    // time of this thread (which leaves out time the thread was preempted
    // by the SDK's thread, the gateway or Kafka on a small machine).
    let mut caller = Duration::ZERO;
    let mut caller_cpu = 0u64;
    let rounds = 5;
    for round in 0..rounds {
        let cpu = thread_cpu_ns();
        let started = Instant::now();
        log_many(round * burst, burst);
        caller += started.elapsed();
        caller_cpu += thread_cpu_ns() - cpu;
        client.flush_blocking()?;
    }
    let per_event_ns = caller.as_nanos() as f64 / (rounds * burst) as f64;
    let per_event_cpu_ns = caller_cpu as f64 / (rounds * burst) as f64;

    // 2. Sustained throughput, end to end.
    let before = client.stats();
    let (app_cpu, sdk_cpu) = (thread_cpu_ns(), sdk_thread_cpu_ns());
    let started = Instant::now();
    log_many(0, events);
    let logged = started.elapsed();
    let app_cpu = thread_cpu_ns() - app_cpu;
    client.flush_blocking()?;
    let total = started.elapsed();
    let sdk_cpu = sdk_thread_cpu_ns() - sdk_cpu;
    let after = client.stats();

    let sent = after.sent - before.sent;
    println!("endpoint            {endpoint}");
    println!(
        "caller cost         {per_event_ns:.0} ns/event wall, {per_event_cpu_ns:.0} ns/event thread CPU \
         ({} events in bursts of {burst})",
        rounds * burst
    );
    println!(
        "throughput          {:.0} events/s ({events} events, {:.2} s until all acked; logging loop {:.2} s)",
        events as f64 / total.as_secs_f64(),
        total.as_secs_f64(),
        logged.as_secs_f64()
    );
    println!(
        "CPU per event       app thread {:.0} ns (includes waiting for room), SDK thread {:.0} ns",
        app_cpu as f64 / events as f64,
        sdk_cpu as f64 / events as f64
    );
    println!(
        "requests            {} ({:.0} events/request)",
        after.requests - before.requests,
        sent as f64 / (after.requests - before.requests).max(1) as f64
    );
    println!("stats               {after:?}");
    assert_eq!(sent, events, "every event must be acknowledged");
    assert_eq!(after.dropped + after.failed, 0);
    let outcome = client.shutdown_blocking();
    assert!(outcome.is_complete(), "{outcome:?}");
    Ok(())
}

/// The application's hot loop: a typical request log line with fields.
fn log_many(from: u64, count: u64) {
    for i in from..from + count {
        tracing::info!(
            user.id = i % 100_000,
            http.route = "/api/v1/orders/{id}",
            http.status = 200,
            "request completed"
        );
    }
}

/// CPU time this thread has run, in ns (Linux `/proc/thread-self/schedstat`).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// CPU time of the SDK's background thread (named `tlake-producer-sdk`), in ns.
fn sdk_thread_cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "tlake-sdk")
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}
