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

/// Calls per command (`cmdstat_<name>:calls=N`), for explaining a delta.
pub(crate) async fn calls_by_command(url: &str) -> std::collections::BTreeMap<String, f64> {
    info(url, "commandstats")
        .await
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
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
