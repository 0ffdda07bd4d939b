//! One row: a fresh stack, steady load, the fault, then a bounded settle wait that audits every
//! second. Time to recover = from the end of the fault until the audit first holds (backlog
//! drained, nothing wrong) and keeps holding until every acknowledged callback is due.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, Instant},
};

use harness::PrivatePostgres;
use jiff::Timestamp;
use tokio::time::sleep;

use crate::{
    audit::{Findings, audit},
    evidence,
    faults::{Fault, Timing},
    load::{Ledger, Load},
    stack::Stack,
};

/// What a row found.
#[derive(Debug)]
pub(crate) struct RowResult {
    /// The fault the row injected.
    pub(crate) fault: Fault,
    /// The last audit (none when the row could not run).
    pub(crate) findings: Option<Findings>,
    /// Seconds from the end of the fault until the audit held for good.
    pub(crate) recovered_s: Option<f64>,
    /// What else the reader should know.
    pub(crate) notes: Vec<String>,
}

impl RowResult {
    /// Whether the row passes: it ran, nothing lost, duplicated, cancelled-but-dialled or stuck,
    /// queue views equal.
    pub(crate) fn passed(&self) -> bool {
        self.findings.as_ref().is_some_and(Findings::clean)
    }
}

/// Runs the row of `fault`; a harness failure is reported in the row, not raised.
pub(crate) async fn run(fault: Fault, pg: &PrivatePostgres, t: &Timing) -> RowResult {
    println!("== {}: {}", fault.name(), fault.describe(t));
    let result = match run_inner(fault, pg, t).await {
        Ok(r) => r,
        Err(e) => RowResult {
            fault,
            findings: None,
            recovered_s: None,
            notes: vec![format!("the row could not run: {e:#}")],
        },
    };
    pg.ensure_running();
    result
}

async fn run_inner(fault: Fault, pg: &PrivatePostgres, t: &Timing) -> anyhow::Result<RowResult> {
    let mut stack = Stack::start(&pg.url(), fault.stack_options()).await?;
    let load = Load::new(stack.targets.clone(), &stack.key, &stack.env.id);
    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn({
        let (load, stop, rate) = (load.clone(), stop.clone(), t.rate);
        async move { load.run(rate, stop).await }
    });
    sleep(t.before).await;
    let injected = fault.inject(&mut stack, pg, t).await;
    let fault_end = Instant::now();
    sleep(t.after).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    running.await?;
    injected?;
    let ledger = std::mem::take(&mut *load.ledger.lock().expect("ledger lock"));
    let mut notes = ledger_notes(&ledger);
    notes.push(format!(
        "processes' logs: {}/{}-*.log",
        std::env::temp_dir().display(),
        stack.env.id
    ));
    let (findings, recovered) = settle(&stack, &ledger, t, &mut notes).await;
    if let Some(f) = findings.as_ref().filter(|f| f.lost + f.duplicated > 0) {
        post_mortem(&stack, pg, &ledger, f, &mut notes).await;
    }
    Ok(RowResult {
        fault,
        recovered_s: recovered.map(|at| at.duration_since(fault_end).as_secs_f64()),
        findings,
        notes,
    })
}

fn ledger_notes(l: &Ledger) -> Vec<String> {
    let mut notes = vec![format!(
        "{} creates acknowledged, {} not acknowledged; {} cancels accepted, {} refused or unanswered; \
         {} tries answered after more than 20 s or not at all",
        l.acked.len(),
        l.create_failed,
        l.cancelled.len(),
        l.cancel_failed,
        l.unbounded
    )];
    if !l.codes.is_empty() {
        let codes: Vec<String> = l.codes.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        notes.push(format!("failed tries: {}", codes.join(", ")));
    }
    notes
}

/// Audits every second until the audit holds with every acknowledged callback due, or until
/// the settle bound; returns the last audit and when it started holding for good.
async fn settle(
    stack: &Stack,
    ledger: &Ledger,
    t: &Timing,
    notes: &mut Vec<String>,
) -> (Option<Findings>, Option<Instant>) {
    let deadline = Instant::now() + t.settle;
    let last_due = ledger.acked.iter().map(|a| a.due_ms).max().unwrap_or(0);
    let (mut last, mut holding_since, mut errors) = (None, None, 0u32);
    loop {
        match audit(stack, ledger).await {
            Ok(f) => {
                if f.holds() {
                    holding_since.get_or_insert_with(Instant::now);
                } else {
                    holding_since = None;
                }
                last = Some(f);
            }
            Err(e) => {
                errors += 1;
                if errors == 1 {
                    notes.push(format!("an audit failed: {e:#}"));
                }
            }
        }
        let all_due = Timestamp::now().as_millisecond() > last_due + 2_000;
        if (holding_since.is_some() && all_due) || Instant::now() > deadline {
            break;
        }
        sleep(Duration::from_secs(1)).await;
    }
    if let Some(f) = &last {
        if !f.holds() {
            notes.push(format!(
                "not recovered within the {} s settle bound ({} due callbacks still not in the voice stream)",
                t.settle.as_secs(),
                f.backlog
            ));
        }
        for (what, ids) in &f.examples {
            let few: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
            notes.push(format!("{what}: {}, e.g. {}", ids.len(), few.join(", ")));
        }
        let file = std::env::temp_dir().join(format!("{}-audit.txt", stack.env.id));
        let all: String = f
            .examples
            .iter()
            .map(|(what, ids)| format!("{what}:\n  {}\n", ids.join("\n  ")))
            .collect();
        if !all.is_empty() && std::fs::write(&file, all).is_ok() {
            notes.push(format!("every id per finding: {}", file.display()));
        }
    }
    (last, holding_since)
}

/// A row that lost or doubled a callback: prints and files the evidence of each
/// (`evidence::collect`), and keeps the private servers' folders (PostgreSQL data, the voice
/// Redis's append-only file) instead of deleting them; the notes say where everything is.
async fn post_mortem(
    stack: &Stack,
    pg: &PrivatePostgres,
    ledger: &Ledger,
    f: &Findings,
    notes: &mut Vec<String>,
) {
    match evidence::collect(stack, ledger, f).await {
        Ok(text) => {
            println!("   evidence:\n{text}");
            let file = std::env::temp_dir().join(format!("{}-evidence.txt", stack.env.id));
            if std::fs::write(&file, &text).is_ok() {
                notes.push(format!(
                    "evidence per lost/duplicated callback: {}",
                    file.display()
                ));
            }
        }
        Err(e) => notes.push(format!("the evidence could not be collected: {e:#}")),
    }
    let kept = pg.keep();
    notes.push(format!(
        "PostgreSQL data kept: {} (schema {}; `pg_ctl -D {}/data start`)",
        kept.display(),
        stack.env.id,
        kept.display()
    ));
    notes.push(format!(
        "voice Redis data kept: {}",
        stack.voice.keep().display()
    ));
    if let Some(dir) = stack.redis.keep() {
        notes.push(format!("service Redis folder kept: {}", dir.display()));
    }
}
