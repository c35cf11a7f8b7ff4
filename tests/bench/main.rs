//! The benchmarks: one binary, a module per area. Each prints the figures
//! its issue names; the machine is shared, so each quotes medians.
//!
//! `cargo bench --bench benches -- NAME [ARGS]` runs one (`replicas pg1 pg3`
//! passes `pg1 pg3` on); without a name, all of them in turn.

// The benches use a part of the tests' helpers (not their guests).
#[allow(dead_code, unused_imports)]
#[path = "../all/common/mod.rs"]
mod common;

mod control;
mod docker;
mod ecs;
mod events;
mod plugins;
mod reliability;
mod replicas;
mod worker;

const BENCHES: &[&str] = &[
    "plugins",
    "control",
    "worker",
    "events",
    "docker",
    "ecs",
    "reliability",
    "replicas",
];

#[tokio::main]
async fn main() {
    // `cargo bench` adds `--bench`; nothing here takes a flag.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (names, rest): (Vec<&str>, &[String]) = match args.first() {
        Some(name) if BENCHES.contains(&name.as_str()) => (vec![name.as_str()], &args[1..]),
        Some(other) => {
            eprintln!("no benchmark `{other}`; there are: {}", BENCHES.join(", "));
            std::process::exit(2);
        }
        None => (BENCHES.to_vec(), &[]),
    };
    for name in names {
        println!("== {name}");
        match name {
            "plugins" => plugins::main(rest).await,
            "control" => control::main(rest).await,
            "worker" => worker::main(rest).await,
            "events" => events::main(rest).await,
            "docker" => docker::main(rest).await,
            "ecs" => ecs::main(rest).await,
            "reliability" => reliability::main(rest).await,
            "replicas" => replicas::main(rest).await,
            _ => unreachable!("every name in BENCHES is matched"),
        }
    }
}

/// The benchmarks' pool `bench` (process) and its deployment `f/d`.
pub async fn bench_deployment(client: &host::client::Client) {
    let body = serde_json::json!({"name": "bench", "type": "process"});
    let _: serde_json::Value = client.post("/api/work-pools", &body).await.expect("pool");
    let body = serde_json::json!({"flow": "f", "name": "d", "pool": "bench"});
    let _: serde_json::Value = client
        .put("/api/deployments", &body)
        .await
        .expect("deployment");
}
