//! Metrics (exact values after a scripted run, promtool-valid), alert rules, logs free of user
//! data, the API-error log by corrId, and health detail following a Redis outage.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use harness::{Engage, TestEnv};
use serde_json::{Value, json};

const CREATE: &str = "/engagement/v3/callbacks/create";

/// The value of the sample `name` whose labels include all of `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

#[tokio::test]
async fn metrics_count_exactly_and_pass_promtool() {
    let env = TestEnv::new();
    // With the worker in-process: its metrics must carry help texts too.
    let engage = Engage::start(&env, &["--with-worker"]).await;
    let key = engage.tenant("acme").await;
    engage.service("acme", "sales", json!({})).await;

    for i in 0..3 {
        let (code, _) = engage
            .create(&key)
            .service("sales")
            .phone(&format!("555010{i}"))
            .send()
            .await;
        assert_eq!(code, 200);
    }
    for _ in 0..2 {
        let (code, _) = engage.create(&key).service("sales").send().await;
        assert_eq!(code, 400);
    }
    let (code, _) = engage.create("egk_wrong").send().await;
    assert_eq!(code, 401);
    let (code, _) = engage
        .post(
            &key,
            "/engagement/v3/callbacks/retrieve",
            json!({"id": uuid::Uuid::now_v7().to_string()}),
        )
        .await;
    assert_eq!(code, 404);

    let m = engage.metrics().await;
    let create = [("path", CREATE)];
    assert_eq!(
        sample(&m, "ges_callbacks_created", &[("tenant", "acme")]),
        Some(3.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            "ges_http_requests_total",
            &[("tenant", "acme"), create[0]]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &m,
            "ges_http_failed_requests_total",
            &[("tenant", "acme"), create[0], ("httpCode", "400")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &m,
            "ges_http_failed_requests_total",
            &[("tenant", "Unknown Tenant"), create[0], ("httpCode", "401")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "ges_http_failed_requests_total",
            &[
                ("tenant", "acme"),
                ("path", "/engagement/v3/callbacks/retrieve"),
                ("httpCode", "404")
            ]
        ),
        Some(1.0)
    );
    // Admin calls are counted under one bounded label.
    assert!(
        sample(
            &m,
            "ges_http_requests_total",
            &[("path", "Private API Endpoint")]
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    assert_eq!(sample(&m, "ges_build_info", &[]), Some(1.0));
    for counter in [
        "INVALID_CONTENT_LENGTH",
        "UNCAUGHT_EXCEPTION",
        "CB_SUBMIT_FAILED",
        "CB_TTL_LIMIT_REACHED",
    ] {
        assert_eq!(
            sample(&m, counter, &[]),
            Some(0.0),
            "{counter} is registered at 0"
        );
    }
    assert!(sample(&m, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 1e6));
    assert!(m.contains("ges_http_request_duration_seconds_bucket"));
    // No raw ids or numbers in any label.
    assert!(!m.contains("5550100") && !m.contains("callbacks/0"));
    // Health gauges from the background check (1 = healthy).
    let deadline = Instant::now() + Duration::from_secs(5);
    while sample(&engage.metrics().await, "GES_HEALTH", &[]).is_none() && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = engage.metrics().await;
    assert_eq!(sample(&m, "GES_HEALTH", &[]), Some(1.0));
    assert_eq!(sample(&m, "REDIS_CONNECTION", &[]), Some(1.0));
    assert_eq!(sample(&m, "POSTGRES_STATUS", &[]), Some(1.0));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (infra/local/deps.sh installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(m.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The GES names (counters without `_total`, the `httpCode` label) are kept on purpose for
    // existing dashboards; promtool's lints about exactly those are the only findings allowed.
    let problems: Vec<&str> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !l.contains("counter metrics should have \"_total\" suffix"))
        .filter(|l| !l.contains("label names should be written in 'snake_case' not 'camelCase'"))
        .collect();
    assert!(problems.is_empty(), "promtool check metrics: {report}");
}

#[test]
fn alert_rules_pass_promtool() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let text = std::fs::read_to_string(root.join("infra/monitoring/prometheusrule.yaml")).unwrap();
    // The PrometheusRule's `spec` is a plain rules file: cut it out and re-indent.
    let spec: String = text
        .split_once("\nspec:\n")
        .unwrap()
        .1
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let file = std::env::temp_dir().join(format!("engage-rules-{}.yml", uuid::Uuid::new_v4()));
    std::fs::write(&file, spec).unwrap();
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("promtool");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("SUCCESS: 22 rules found"), "{report}");
}

#[tokio::test]
async fn logs_never_carry_user_data_keys_or_numbers() {
    let (_env, engage, key) =
        harness::serve_tenant(TestEnv::new().with("LOG_LEVEL", "TRACE"), "acme").await;
    engage.service("acme", "sales", json!({})).await;
    let (code, body) = engage
        .create(&key)
        .service("sales")
        .phone("+1 212 867 5309")
        .user_data(json!({"secretNote": "ZZ-USERDATA-MARKER", "email": "joe@example.com"}))
        .send()
        .await;
    assert_eq!(code, 200, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();
    let (code, _) = engage
        .post(&key, "/engagement/v3/callbacks/retrieve", json!({"id": id}))
        .await;
    assert_eq!(code, 200);
    let (code, _) = engage.cancel(&key, &id).await;
    assert_eq!(code, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = engage.proc.output();
    assert!(logs.lines().count() > 10, "TRACE logging is on: {logs}");
    for secret in [
        "ZZ-USERDATA-MARKER",
        "joe@example.com",
        &key,
        "8675309",
        "867 5309",
        harness::ADMIN_TOKEN,
    ] {
        assert!(!logs.contains(secret), "{secret:?} leaked into the logs");
    }
    // Each request line is JSON with the correlation id, route, tenant, status and latency.
    let line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "request" && v["span"]["route"] == CREATE)
        .expect("an access log line for create");
    assert_eq!(line["tenant"], "acme");
    assert_eq!(line["status"], 200);
    assert!(
        line["span"]["corrId"].is_string() && line["latency_ms"].is_number(),
        "{line}"
    );
    assert!(
        logs.lines().all(|l| l.len() <= 2048),
        "lines are cut at LOG_MAX_LEN"
    );
}

#[tokio::test]
async fn api_errors_are_searchable_by_correlation_id() {
    let (_env, engage, key) = harness::serve_tenant(TestEnv::new(), "acme").await;
    engage.service("acme", "sales", json!({})).await;
    let (_, first) = engage.create(&key).service("sales").send().await;
    let (_, second) = engage
        .create(&key)
        .service("nope")
        .phone("5550100")
        .send()
        .await;
    let second_corr = second["status"]["corrId"].as_str().unwrap().to_string();

    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let (code, body) = engage.admin_get("/ges/v1/tenants/acme/api-errors").await;
        assert_eq!(code, 200);
        if body["data"].as_array().unwrap().len() == 2 || Instant::now() > deadline {
            break body["data"].as_array().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["corrId"], second_corr.as_str(), "newest first");
    assert_eq!(listed[0]["message"], "unknown service nope");
    assert_eq!(listed[0]["status"], 400);
    assert_eq!(listed[0]["route"], CREATE);
    assert_eq!(listed[1]["corrId"], first["status"]["corrId"]);

    let (_, one) = engage
        .admin_get(&format!(
            "/ges/v1/tenants/acme/api-errors?corrId={second_corr}"
        ))
        .await;
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    let (code, _) = engage
        .admin_get("/ges/v1/tenants/acme/api-errors?corrId=zzz")
        .await;
    assert_eq!(code, 400);
    // Another tenant sees none of them.
    engage.tenant("globex").await;
    let (_, other) = engage.admin_get("/ges/v1/tenants/globex/api-errors").await;
    assert_eq!(other["data"].as_array().unwrap().len(), 0);
}

async fn redis_status(engage: &Engage) -> String {
    let (_, body) = harness::send(
        engage
            .http
            .get(format!("{}/ges/v1/health/detail", engage.internal)),
    )
    .await;
    body["data"]["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "redis")
        .map(|d| d["status"].as_str().unwrap().to_string())
        .unwrap()
}

#[tokio::test]
async fn health_detail_follows_a_redis_outage() {
    let mut redis = harness::PrivateRedis::new(false);
    let env = TestEnv::new().with("REDIS_URL", &redis.url());
    let engage = Engage::start(&env, &[]).await;
    assert_eq!(redis_status(&engage).await, "UP");

    redis.stop();
    let stopped = Instant::now();
    while redis_status(&engage).await != "DOWN" {
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "DOWN not reported within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, body) = harness::send(
        engage
            .http
            .get(format!("{}/ges/v1/health/detail", engage.internal)),
    )
    .await;
    assert_eq!(body["data"]["status"], "DEGRADED");
    assert_eq!(
        sample(&engage.metrics().await, "REDIS_CONNECTION", &[]),
        Some(0.0)
    );
    // Readiness depends on PostgreSQL only: still ready.
    let ready = engage
        .http
        .get(format!("{}/ges/v1/health/ready", engage.internal))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    redis.start();
    let back = Instant::now();
    while redis_status(&engage).await != "UP" {
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "recovery not reported within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        sample(&engage.metrics().await, "REDIS_CONNECTION", &[]),
        Some(1.0)
    );
}
