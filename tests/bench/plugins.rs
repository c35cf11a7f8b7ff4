//! Plugin-plane benchmark: `cargo bench --bench benches -- plugins`.
//!
//! Per built-in plugin: cold compile, warm load from the on-disk cache, and a
//! fresh instance + one `describe` call. Then a warm load of every built-in at
//! once (what a worker start pays). Medians, since the machine is shared.

use host::plugins::{BUILTINS, Registry};
use host::runtime::{Grants, LoadedPlugin, PluginSource, Runtime, RuntimeConfig};
use std::time::{Duration, Instant};

const COMPILES: usize = 10;
const WARM_LOADS: usize = 50;
const CALLS: usize = 2_000;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn percentile(mut samples: Vec<Duration>, p: f64) -> Duration {
    samples.sort();
    samples[((samples.len() as f64 - 1.0) * p) as usize]
}

fn runtime(cache: Option<std::path::PathBuf>) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: cache,
        ..RuntimeConfig::default()
    })
    .expect("runtime")
}

async fn load(rt: &Runtime, builtin: &host::plugins::Builtin) -> LoadedPlugin {
    LoadedPlugin::load(
        rt,
        builtin.name,
        PluginSource::Builtin,
        builtin.bytes,
        Grants::new(builtin.grants.iter().copied()),
    )
    .await
    .expect("built-in loads")
}

pub async fn main(_args: &[String]) {
    let cache = tempfile::tempdir().expect("tempdir");
    println!(
        "{:<16} {:>14} {:>14} {:>16} {:>16}",
        "plugin", "cold compile", "warm load", "instance+call", "p99 inst+call"
    );
    for builtin in BUILTINS {
        let uncached = runtime(None);
        let compile = median(
            (0..COMPILES)
                .map(|_| {
                    let t = Instant::now();
                    wasmtime::component::Component::new(uncached.engine(), builtin.bytes)
                        .expect("compiles");
                    t.elapsed()
                })
                .collect(),
        );
        let cached = runtime(Some(cache.path().to_path_buf()));
        load(&cached, builtin).await; // fill the cache
        let mut warm = Vec::with_capacity(WARM_LOADS);
        for _ in 0..WARM_LOADS {
            let t = Instant::now();
            load(&cached, builtin).await;
            warm.push(t.elapsed());
        }
        let plugin = load(&cached, builtin).await;
        for _ in 0..100 {
            plugin.describe().await.expect("describe"); // warm up the pool slots
        }
        let mut calls = Vec::with_capacity(CALLS);
        for _ in 0..CALLS {
            let t = Instant::now();
            plugin.describe().await.expect("describe");
            calls.push(t.elapsed());
        }
        println!(
            "{:<16} {:>14?} {:>14?} {:>16?} {:>16?}",
            builtin.name,
            compile,
            median(warm),
            median(calls.clone()),
            percentile(calls, 0.99)
        );
    }
    let mut all = Vec::with_capacity(WARM_LOADS);
    for _ in 0..WARM_LOADS {
        let t = Instant::now();
        let rt = runtime(Some(cache.path().to_path_buf()));
        Registry::load(&rt, None).await.expect("registry");
        all.push(t.elapsed());
    }
    println!(
        "warm load of all built-ins (new engine + cache reads + describe): median {:?}",
        median(all)
    );
    println!("targets: instance+call median < 50us; warm load of all built-ins < 20ms");
}
