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
