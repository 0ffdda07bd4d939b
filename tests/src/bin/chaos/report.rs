//! The markdown report: one table row per fault, then per-row notes.

use std::fmt::Write;

use crate::{faults::Timing, row::RowResult};

fn cell(v: Option<usize>) -> String {
    v.map_or_else(|| "—".into(), |n| n.to_string())
}

/// Renders the report of a run.
pub(crate) fn render(mode: &str, t: &Timing, rows: &[RowResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Chaos report ({mode})\n");
    let _ = writeln!(
        out,
        "Run {} at {} on {}; binaries: {}; load {} creates/s (20 % scheduled 3–8 s ahead, \
         20 % cancelled 0–4 s after the answer), {} s before and {} s after each fault; \
         settle bound {} s. Definitions: tests/chaos/README.md.\n",
        commit(),
        jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC"),
        machine(),
        profile(),
        t.rate,
        t.before.as_secs(),
        t.after.as_secs(),
        t.settle.as_secs()
    );
    let _ = writeln!(
        out,
        "| fault | requests acknowledged | lost | duplicated | cancelled-but-dialled | stuck | queue-view mismatches | time to recover |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let f = r.findings.as_ref();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.fault.describe(t),
            cell(f.map(|f| f.acked)),
            cell(f.map(|f| f.lost)),
            cell(f.map(|f| f.duplicated)),
            cell(f.map(|f| f.cancelled_dialled)),
            cell(f.map(|f| f.stuck)),
            cell(f.map(|f| f.view_mismatch)),
            r.recovered_s
                .map_or_else(|| "not recovered".into(), |s| format!("{s:.1} s")),
        );
    }
    let _ = writeln!(out, "\n## Notes per row\n");
    for r in rows {
        let verdict = if r.passed() { "pass" } else { "FAIL" };
        let _ = writeln!(out, "- **{}** ({verdict})", r.fault.name());
        for n in &r.notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

fn commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{cores} cores")
}

/// `release` or `debug`: the folder the binaries come from.
fn profile() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_default()
}
