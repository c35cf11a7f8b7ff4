//! Event stream benchmark: `cargo bench --bench benches -- events`.
//!
//! One in-process `host serve` on loopback (real HTTP, real redb file):
//! the latency from a state-changing request to its event reaching a
//! connected `/api/events` stream, and claim throughput (16 clients, 1,000
//! runs) with no stream connected and with 100 streams connected.

use crate::common;

use common::TestServer;
use host::client::Client;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 16;
const RUNS: usize = 1_000;
const STREAMS: usize = 100;
const ROUNDS: usize = 3;
const LATENCY_SAMPLES: usize = 100;

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

async fn create_runs(server: &TestServer, count: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    for _ in 0..count {
        let run = server
            .control
            .create_run("f/d", Default::default())
            .await
            .expect("create");
        ids.push(run.id);
    }
    ids
}

/// Claims every due run with 16 clients; runs per second.
async fn claim_all(server: &TestServer, expected: usize) -> f64 {
    let started = Instant::now();
    let claimed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (client, claimed) = (server.client(), claimed.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let answer: host::control::ClaimResponse = client
                    .post(
                        "/api/work-pools/bench/claim",
                        &json!({"worker": format!("w{i}"), "limit": 1}),
                    )
                    .await
                    .expect("claim");
                if answer.runs.is_empty() {
                    return;
                }
                claimed.fetch_add(answer.runs.len(), Ordering::SeqCst);
            }
        }));
    }
    for task in tasks {
        task.await.expect("join");
    }
    assert_eq!(
        claimed.load(Ordering::SeqCst),
        expected,
        "each run claimed once"
    );
    expected as f64 / started.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub async fn main(_args: &[String]) {
    let server = TestServer::start().await;
    let client = server.client();
    crate::bench_deployment(&client).await;

    // Latency: cancel a SCHEDULED run (one commit), wait for its event;
    // once with the changes spaced out, once back to back (where a busy
    // stream groups what piles up, at most every 25 ms).
    for (label, spacing) in [
        ("one change every 100 ms", Duration::from_millis(100)),
        ("changes back to back", Duration::ZERO),
    ] {
        let ids = create_runs(&server, LATENCY_SAMPLES).await;
        let mut stream = client.events("pool=bench", None).await.expect("stream");
        let mut latencies = Vec::new();
        for id in &ids {
            tokio::time::sleep(spacing).await;
            let started = Instant::now();
            let _: Value = client
                .post(&format!("/api/flow-runs/{id}/cancel"), &json!({}))
                .await
                .expect("cancel");
            loop {
                let event = stream.next().await.expect("read").expect("open");
                if event.event == "run"
                    && event.data.contains(&format!("\"{id}\""))
                    && event.data.contains("CANCELLED")
                {
                    break;
                }
            }
            latencies.push(started.elapsed());
        }
        let (p50, p99) = (
            percentile(&mut latencies, 0.5),
            percentile(&mut latencies, 0.99),
        );
        println!(
            "state change -> event on a stream, {label}: p50 {p50:?}, p99 {p99:?} ({LATENCY_SAMPLES} cancels; includes the request)"
        );
    }

    // Claim throughput, alternating without and with 100 streams connected.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        create_runs(&server, RUNS).await;
        without.push(claim_all(&server, RUNS).await);

        let received = Arc::new(AtomicUsize::new(0));
        let mut readers = Vec::new();
        for _ in 0..STREAMS {
            let mut stream = Client::new(&server.url, None)
                .events("", None)
                .await
                .expect("stream");
            let received = received.clone();
            readers.push(tokio::spawn(async move {
                // Counted, not parsed: the readers stand for browsers on
                // other machines, so they take as little of this one's CPU
                // as a reader can.
                let mut last = 0;
                while let Ok(Some(chunk)) = stream.next_bytes().await {
                    let split = usize::from(last == b'\n' && chunk.first() == Some(&b'\n'));
                    let events = chunk.windows(2).filter(|w| w == b"\n\n").count() + split;
                    received.fetch_add(events, Ordering::Relaxed);
                    last = chunk.last().copied().unwrap_or(last);
                }
            }));
        }
        create_runs(&server, RUNS).await;
        with.push(claim_all(&server, RUNS).await);
        // Each stream sees each run created and claimed.
        let all = 2 * STREAMS * RUNS;
        let delivered = common::wait_until(Duration::from_secs(30), || {
            received.load(Ordering::Relaxed) >= all
        })
        .await;
        assert!(
            delivered,
            "{} of {all} events delivered",
            received.load(Ordering::Relaxed)
        );
        for reader in readers {
            reader.abort();
        }
    }
    let (without, with) = (median(without), median(with));
    println!(
        "claim throughput ({CLIENTS} clients, {RUNS} runs, median of {ROUNDS}): {without:.0}/s with no stream, {with:.0}/s with {STREAMS} streams ({:+.1}%)",
        (with / without - 1.0) * 100.0
    );
    println!("targets: event p50 < 50 ms; claims with 100 streams within 10% of none");
}
