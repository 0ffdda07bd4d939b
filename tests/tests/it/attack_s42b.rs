//! Attacks of stop 42 by helper-72 on db5884a (deadlock and class 53 answer 503, "nothing
//! changed") and 9031512 (phone patterns compiled per thread). Guards since the fixes.
//!
//! Found: `shared::db::ui::put_user` and `delete_user` were two autocommit statements (the
//! user's upsert or delete, then `DELETE FROM ui_sessions`); now one statement each. When the
//! second failed with a deadlock (40P01) or class 53 (here injected by a trigger; in
//! production a deadlock with a concurrent session write, or the server out of memory or
//! disk), the first had committed, yet the answer was 503 "retry later"
//! (docs/bounded-answers.md: a 503 means nothing changed), and the user's old sessions stayed
//! valid although the role or password changed or the user was gone.

use harness::{TestEnv, ui::ui_login};
use serde_json::json;

use crate::ui::{PASSWORD, get, ui_fixture};

/// Makes every `DELETE FROM ui_sessions` of the environment's schema fail with `code`.
async fn fail_session_deletes(env: &TestEnv, code: &str) {
    let pg = env.pg().await;
    pg.batch_execute(&format!(
        "CREATE FUNCTION attack_s42b_fail() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'injected' USING ERRCODE = '{code}'; END $$;
         CREATE TRIGGER attack_s42b_fail BEFORE DELETE ON ui_sessions
         FOR EACH STATEMENT EXECUTE FUNCTION attack_s42b_fail();"
    ))
    .await
    .expect("trigger");
}

/// GUARD (failed on db5884a): a role change answered 503 committed anyway, and the
/// user's session from before the change still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s42b_user_change_answered_503_had_committed() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let ada = ui_login(e, "acme", "ada", PASSWORD).await.expect("login");
    assert_eq!(get(e, &ada, "/ges/queues").await.0, 200);
    fail_session_deletes(&fx.env, "40P01").await;
    let (code, answer) = e
        .admin_post(
            "/ges/v1/tenants/acme/users",
            json!({"username": "ada", "password": "a brand new password", "role": "Monitor"}),
        )
        .await;
    let pg = fx.env.pg().await;
    let role: String = pg
        .query_one(
            "SELECT role FROM ui_users WHERE tenant_id = 'acme' AND username = 'ada'",
            &[],
        )
        .await
        .expect("role")
        .get(0);
    let old_session = get(e, &ada, "/ges/queues").await.0;
    println!("FIGURE s42b_user code={code} answer={answer} role={role} old_session={old_session}");
    if code == 503 {
        assert_eq!(
            role, "Administrator",
            "answered 503 (nothing changed) but the role change committed; old session answers {old_session}"
        );
    }
}

/// GUARD (failed on db5884a): a user delete answered 503 had deleted the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s42b_user_delete_answered_503_had_committed() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    fail_session_deletes(&fx.env, "53200").await;
    let (code, answer) = e.admin_delete("/ges/v1/tenants/acme/users/sue").await;
    let pg = fx.env.pg().await;
    let left: i64 = pg
        .query_one(
            "SELECT count(*) FROM ui_users WHERE tenant_id = 'acme' AND username = 'sue'",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    println!("FIGURE s42b_delete code={code} answer={answer} left={left}");
    if code == 503 {
        assert_eq!(
            left, 1,
            "answered 503 (nothing changed) but the user was deleted"
        );
    }
}

/// Every example number of phonenumber's metadata, as `+<code><example>` (read from the
/// crate's own XML in the cargo registry; empty when it is not there).
fn every_regions_examples() -> Vec<String> {
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    let Ok(dirs) = std::fs::read_dir(format!("{home}/registry/src")) else {
        return Vec::new();
    };
    let Some(xml) = dirs.flatten().find_map(|d| {
        std::fs::read_to_string(
            d.path()
                .join("phonenumber-0.3.10+9.0.33/assets/PhoneNumberMetadata.xml"),
        )
        .ok()
    }) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for territory in xml.split("<territory ").skip(1) {
        let Some(code) = territory
            .split("countryCode=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        for ex in territory.split("<exampleNumber>").skip(1) {
            let digits = ex.split('<').next().unwrap_or_default().trim();
            out.push(format!("+{code}{digits}"));
        }
    }
    out
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// GUARD (memory; failed on 9031512): a client cycling numbers of every region (here the admin
/// query's phone filter, which classifies the number like a create without a number rule)
/// filled each runtime thread's map of compiled patterns to 1,024 regexes of ~125 kB each: the
/// API grew from 40 to 322 MB, against a 128 MiB function limit
/// (knative/base/function-common.yaml). Patterns are now compiled without Unicode tables
/// (~17 kB) and at most 256 are kept per thread: growth 37 MB in a debug build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s42b_cycling_regions_grows_api_memory() {
    let numbers = every_regions_examples();
    assert!(numbers.len() > 1_000, "only {} examples", numbers.len());
    let fx = harness::Fixture::with(
        TestEnv::new(),
        &[],
        "mem",
        "svc",
        harness::open_service(json!({})),
    )
    .await;
    let e = &fx.engage;
    let pid = e.proc.child.id();
    // Warm: one US number (the steady state of a US-only tenant).
    let path = |n: &str| {
        format!(
            "/ges/v1/tenants/mem/callbacks?phone={}",
            n.replace('+', "%2B")
        )
    };
    for _ in 0..20 {
        assert_eq!(e.admin_get(&path("+12125550123")).await.0, 200);
    }
    let before = rss_kb(pid);
    for round in 0..2 {
        for chunk in numbers.chunks(16) {
            let answers = futures::future::join_all(chunk.iter().map(|n| {
                let p = path(n);
                async move { e.admin_get(&p).await }
            }))
            .await;
            for (code, body) in answers {
                assert!(code == 200 || code == 400, "{code} {body}");
            }
        }
        println!("FIGURE s42b_rss round={round} rss_kb={}", rss_kb(pid));
    }
    let after = rss_kb(pid);
    println!(
        "FIGURE s42b_rss numbers={} before_kb={before} after_kb={after} growth_kb={}",
        numbers.len(),
        after.saturating_sub(before)
    );
    assert!(
        after.saturating_sub(before) < 64 * 1024,
        "cycling every region's numbers grew the API by {} kB (limit 128 MiB)",
        after.saturating_sub(before)
    );
}
