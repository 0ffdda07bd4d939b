//! Reading a Redis server's own accounting: `INFO commandstats` and `INFO memory`.

async fn info(url: &str, section: &str) -> String {
    let Ok(client) = redis::Client::open(url) else {
        return String::new();
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    redis::cmd("INFO")
        .arg(section)
        .query_async(&mut c)
        .await
        .unwrap_or_default()
}

/// Total calls over every command (commands run inside scripts included).
pub(crate) async fn total_calls(url: &str) -> f64 {
    info(url, "commandstats")
        .await
        .lines()
        .filter_map(|l| l.split("calls=").nth(1))
        .filter_map(|v| v.split(',').next()?.parse::<f64>().ok())
        .sum()
}

/// `used_memory` in bytes.
pub(crate) async fn used_memory(url: &str) -> f64 {
    info(url, "memory")
        .await
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Calls per command (`cmdstat_<name>:calls=N`), for explaining a delta. Leaves out what
/// taking the snapshots itself costs: `CLIENT SETINFO` of the snapshot's fresh connection, and
/// the `INFO` of every earlier snapshot of this process (a server counts a command after it
/// ran, so a snapshot never counts itself). The worker's own `INFO` calls (its loss check)
/// are counted; the services' own connections are open before any window starts.
pub(crate) async fn calls_by_command(url: &str) -> std::collections::BTreeMap<String, f64> {
    static TAKEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let earlier = {
        let mut taken = TAKEN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = taken.iter().filter(|u| *u == url).count() as f64;
        taken.push(url.to_string());
        n
    };
    harness::parse_commandstats(&info(url, "commandstats").await)
        .into_iter()
        .filter(|(name, _)| name != "client|setinfo")
        .map(|(name, calls)| {
            let own = if name == "info" { earlier } else { 0.0 };
            let calls = (calls as f64 - own).max(0.0);
            (name, calls)
        })
        .collect()
}

/// The per-command difference of two snapshots, as `name=N` (non-zero only).
pub(crate) fn delta_text(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d > 0.0).then(|| format!("{k}={d}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU seconds (user + system) used so far by every user-space process on the machine, summed
/// by command name (`engage`, `postgres`, `redis-server`, `bench`, …): deltas of two
/// snapshots show where the CPU time of a load run went. Kernel threads are left out (their
/// names change with the work they pick up, so per-name deltas of them mean nothing). Exited
/// processes drop out, so take snapshots around a run of long-lived processes.
pub(crate) fn cpu_by_comm() -> std::collections::BTreeMap<String, f64> {
    // USER_HZ: 100 on every Linux architecture we run on (`getconf CLK_TCK`).
    const TICKS: f64 = 100.0;
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // This process is the load generator, whatever its binary is called.
        let own = entry.file_name().to_str() == Some(&std::process::id().to_string());
        let comm = if own { "bench" } else { &stat[open + 1..close] };
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // rest[1] is the parent pid: kernel threads are children of kthreadd (pid 2).
        if rest.get(1) == Some(&"2") || rest.get(1) == Some(&"0") {
            continue;
        }
        // Fields 14 and 15 (utime, stime) are at 11 and 12 after `state`.
        let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(u), Some(s)) = (ticks(11), ticks(12)) {
            *out.entry(comm.to_string()).or_insert(0.0) += (u + s) / TICKS;
        }
    }
    out
}

/// Per-request CPU time by process name between two [`cpu_by_comm`] snapshots, as
/// `name µs` (largest first; names under 1 µs left out).
pub(crate) fn cpu_per_request(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    requests: f64,
) -> String {
    let mut v: Vec<(String, f64)> = after
        .iter()
        .map(|(k, a)| {
            (
                k.clone(),
                (a - before.get(k).copied().unwrap_or(0.0)) / requests * 1e6,
            )
        })
        .filter(|(_, us)| *us >= 1.0)
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    let total: f64 = v.iter().map(|(_, us)| us).sum();
    let parts: Vec<String> = v.iter().map(|(k, us)| format!("{k} {us:.0} µs")).collect();
    format!("{total:.0} µs in all: {}", parts.join(", "))
}

/// Processes of the measured stack, by name prefix (a binary copied under another name, such as
/// `engage-8e3fae6`, still counts; the bench process itself is always `bench`): the load
/// generator's share is taken among these, so other work on a shared machine (a build) does not
/// dilute it.
const STACK: [&str; 4] = ["bench", "engage", "postgres", "redis-server"];

/// CPU seconds by process name: a [`cpu_by_comm`] snapshot, or a sum of deltas ([`add_cpu`]).
pub(crate) type Cpu = std::collections::BTreeMap<String, f64>;

/// Adds the CPU time each process name took between two [`cpu_by_comm`] snapshots to `sum`
/// (a process that ended in between counts nothing).
pub(crate) fn add_cpu(sum: &mut Cpu, before: &Cpu, after: &Cpu) {
    for (name, a) in after {
        let delta = (a - before.get(name).copied().unwrap_or(0.0)).max(0.0);
        *sum.entry(name.clone()).or_default() += delta;
    }
}

/// The share (0–1) of the stack's CPU time ([`STACK`]) between two [`cpu_by_comm`] snapshots
/// spent by processes named `comm` (the load generator's own share of a saturation run).
pub(crate) fn cpu_share(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    comm: &str,
) -> f64 {
    let delta = |k: &str, a: f64| a - before.get(k).copied().unwrap_or(0.0);
    let total: f64 = after
        .iter()
        .filter(|(k, _)| STACK.iter().any(|s| k.starts_with(s)))
        .map(|(k, a)| delta(k, *a).max(0.0))
        .sum();
    let own = after.get(comm).map_or(0.0, |a| delta(comm, *a).max(0.0));
    if total > 0.0 { own / total } else { 0.0 }
}

/// Bytes held per kind of key under `prefix` (`MEMORY USAGE … SAMPLES 0`, exact), divided by
/// `per`, as `kind bytes` text: where the Redis memory of a callback goes.
pub(crate) async fn memory_by_kind(url: &str, prefix: &str, per: f64) -> String {
    let Ok(client) = redis::Client::open(url) else {
        return String::new();
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return String::new();
    };
    let pattern = format!("*{prefix}*");
    let keys: Vec<String> = match redis::cmd("KEYS").arg(&pattern).query_async(&mut c).await {
        Ok(k) => k,
        Err(_) => return String::new(),
    };
    let mut by_kind = std::collections::BTreeMap::<&str, f64>::new();
    for k in keys {
        let bytes: f64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&k)
            .arg("SAMPLES")
            .arg(0)
            .query_async::<Option<i64>>(&mut c)
            .await
            .ok()
            .flatten()
            .unwrap_or(0) as f64;
        let kind = if k.contains(":sched:") && k.ends_with(":inflight") {
            "in-flight claims"
        } else if k.contains(":sched:") {
            "schedule index"
        } else if k.ends_with(":act") {
            "throttle hash (active callbacks, window counters)"
        } else if k.contains(":q:") {
            "queue views"
        } else {
            "other"
        };
        *by_kind.entry(kind).or_insert(0.0) += bytes;
    }
    by_kind
        .iter()
        .map(|(k, b)| format!("{k} {:.0} B", b / per))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    #[test]
    fn own_process_counts_as_bench_whatever_its_name() {
        // The test binary is not called `bench`, as a renamed bench binary would not be.
        let spin = std::time::Instant::now();
        while spin.elapsed() < std::time::Duration::from_millis(30) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(super::cpu_by_comm().contains_key("bench"));
    }

    #[test]
    fn share_counts_renamed_stack_processes() {
        let before: BTreeMap<String, f64> = [("bench", 1.0), ("engage-8e3fae6", 1.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let after: BTreeMap<String, f64> = [("bench", 2.0), ("engage-8e3fae6", 4.0), ("cc1", 9.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let share = super::cpu_share(&before, &after, "bench");
        assert!((share - 0.25).abs() < 1e-9, "{share}");
    }
}
