//! `chaos` (run by `just chaos`): the fault suite of issue 12. Each fault is its own row on a
//! fresh stack of private servers (its own PostgreSQL cluster, service Redis, 3-node Redis
//! cluster for the cluster row, voice Redis) and the real binaries next to this one in the
//! target folder (`engage serve` ×2, `engage-worker`, `ors-sim`), under a steady mixed
//! create/cancel load; each row ends with an audit from PostgreSQL and the voice streams.
//!
//! `chaos` writes tests/chaos/REPORT.md; `chaos --quick` (CI) runs each fault once with small
//! volumes and short faults and only prints; `--only a,b` runs some rows. Exits 1 when any row
//! has a lost, duplicated, cancelled-but-dialled or stuck callback, a queue-view mismatch, or
//! could not run. See tests/chaos/README.md.

mod audit;
mod evidence;
mod faults;
mod load;
mod report;
mod row;
mod stack;

use std::time::Duration;

use faults::{Fault, Timing};

const FULL: Timing = Timing {
    rate: 100,
    before: Duration::from_secs(15),
    after: Duration::from_secs(15),
    outage: Duration::from_secs(20),
    kills: 24,
    kill_load: Duration::from_secs(120),
    settle: Duration::from_secs(90),
};

const QUICK: Timing = Timing {
    rate: 20,
    before: Duration::from_secs(5),
    after: Duration::from_secs(5),
    outage: Duration::from_secs(6),
    kills: 3,
    kill_load: Duration::from_secs(20),
    settle: Duration::from_secs(90),
};

fn selected(args: &[String]) -> anyhow::Result<Vec<Fault>> {
    let Some(list) = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args.get(i + 1).cloned().unwrap_or_default())
    else {
        return Ok(faults::ALL.to_vec());
    };
    list.split(',')
        .map(|name| {
            faults::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = faults::ALL.iter().map(|f| f.name()).collect();
                    anyhow::anyhow!("--only: unknown row {name:?}; known: {}", known.join(","))
                })
        })
        .collect()
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(bad) = args
        .iter()
        .skip(1)
        .find(|a| a.starts_with("--") && !["--quick", "--only"].contains(&a.as_str()))
    {
        anyhow::bail!("unknown option {bad}; usage: chaos [--quick] [--only row,row]");
    }
    let quick = args.iter().any(|a| a == "--quick");
    let (timing, mode) = if quick {
        (QUICK, "quick")
    } else {
        (FULL, "full")
    };
    let rows = selected(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let pg = harness::PrivatePostgres::start(true)?;
    let started = std::time::Instant::now();
    let mut results = Vec::new();
    for fault in rows {
        // On SIGINT/SIGTERM the row's future is dropped, which stops its processes and servers.
        let Some(r) = rt.block_on(async {
            tokio::select! {
                r = row::run(fault, &pg, &timing) => Some(r),
                () = interrupted() => None,
            }
        }) else {
            eprintln!("chaos: interrupted; private servers stopped");
            drop(pg);
            std::process::exit(130);
        };
        println!(
            "   {}: {}",
            if r.passed() { "pass" } else { "FAIL" },
            r.notes.join("; ")
        );
        results.push(r);
    }
    let text = report::render(mode, &timing, &results);
    println!("{text}");
    println!(
        "chaos ({mode}) took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if !quick && args.iter().all(|a| a != "--only") {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("chaos/REPORT.md");
        std::fs::create_dir_all(path.parent().expect("folder"))?;
        std::fs::write(&path, &text)?;
        println!("wrote {}", path.display());
    }
    drop(pg);
    if results.iter().all(row::RowResult::passed) {
        Ok(())
    } else {
        std::process::exit(1)
    }
}
