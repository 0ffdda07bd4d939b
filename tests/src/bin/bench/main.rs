//! `bench` (run by `just bench`): starts the stack on loopback with release binaries, runs each
//! scenario, and writes `tests/bench/REPORT.md` plus SVG charts. Every throughput figure sits
//! next to a ceiling measured in the same run on the same machine, so the ratio survives a
//! noisy host. Figures are medians of repeated runs.
//!
//! `bench --quick` shortens every run (for a smoke check); `bench --only create,idle` runs
//! some scenarios and writes `REPORT-create-idle.md` with only their figures; `bench --only
//! scale` is the one scenario a full run leaves out (10 million rows take minutes to load); `bench --serve-empty PORT` is
//! the empty axum server used as the HTTP ceiling. `BENCH_ENV="NAME=value,…"` gives the
//! services settings of their own for a tuning experiment (e.g. `DB_BATCH_IN_FLIGHT=2`); the
//! report names them.

mod chart;
mod dispatch;
mod fleet;
mod load;
mod report;
mod scale;
mod scenarios;
mod stats;

use std::time::Duration;

/// A test environment with the binaries' own defaults where the suite shortens them (the wake
/// subscription's `PING` back-off): the bench measures what an operator runs.
pub(crate) fn deployed_env() -> harness::TestEnv {
    let mut env = harness::TestEnv::new().with_default_wake_ping();
    for (name, value) in bench_env() {
        env = env.with(&name, &value);
    }
    env
}

/// The settings `BENCH_ENV` names (`NAME=value,…`), none when unset.
pub(crate) fn bench_env() -> Vec<(String, String)> {
    std::env::var("BENCH_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some(i) = args.iter().position(|a| a == "--serve-empty") {
        let port: u16 = args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("--serve-empty PORT"))?
            .parse()?;
        return rt.block_on(scenarios::serve_empty(port));
    }
    let opts = scenarios::Options {
        run: if args.iter().any(|a| a == "--quick") {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(8)
        },
        repeats: if args.iter().any(|a| a == "--quick") {
            1
        } else {
            3
        },
        storage_count: if args.iter().any(|a| a == "--quick") {
            1_000
        } else {
            10_000
        },
        only: args
            .iter()
            .position(|a| a == "--only")
            .and_then(|i| args.get(i + 1))
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
    };
    if let Some(bad) = opts
        .only
        .iter()
        .find(|s| !scenarios::SCENARIOS.contains(&s.as_str()))
    {
        anyhow::bail!(
            "--only: unknown scenario {bad}; known: {}",
            scenarios::SCENARIOS.join(",")
        );
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench");
    std::fs::create_dir_all(&out)?;
    let results = rt.block_on(scenarios::run_all(&opts, &out))?;
    // A partial run (`--only`) writes its own file, so the full report stays whole.
    let path = if opts.only.is_empty() {
        out.join("REPORT.md")
    } else {
        out.join(format!("REPORT-{}.md", opts.only.join("-")))
    };
    std::fs::write(&path, report::render(&opts, &results))?;
    println!("{}", report::render(&opts, &results));
    println!("wrote {}", path.display());
    Ok(())
}
