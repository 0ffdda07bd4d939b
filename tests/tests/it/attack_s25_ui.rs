//! Session 25's attacks on the `/ges` admin UI (issue 17): hostile input on the pages and
//! forms over real HTTP against the real binary; each answer a page or a 4xx, never a
//! dropped connection, a 5xx or a panic.

use harness::{
    TestEnv,
    ui::{csrf_of, form_body, no_redirects, ui_login},
};

use crate::ui::{PASSWORD, get, ui_fixture};

/// POSTs a raw form body with a session cookie: (status, body), or the transport error.
async fn post_raw(
    e: &harness::Engage,
    cookie: &str,
    path: &str,
    body: String,
) -> Result<(u16, String), String> {
    let r = no_redirects()
        .post(format!("{}{path}", e.internal))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok((r.status().as_u16(), r.text().await.unwrap_or_default()))
}

/// The bulk-cancel page's `total` (the running count the Continue button carries) is the
/// client's: a huge one (`usize::MAX`) overflowed the sum with this round's count, and the
/// cancel that had just committed answered a 500. Now the page answers, the count saturated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_cancel_with_a_huge_running_total_answers_its_page() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let id = fx.create().in_secs(3600).id().await;
    let sue = ui_login(e, "acme", "sue", PASSWORD).await.unwrap();
    let csrf = csrf_of(&get(e, &sue, "/ges/callbacks").await.1).unwrap();
    let pairs = [
        ("csrf", csrf.as_str()),
        ("state", "SCHEDULED"),
        ("confirm", "yes"),
        ("total", "18446744073709551615"),
    ];
    let (code, page) = post_raw(e, &sue, "/ges/callbacks/bulk-cancel", form_body(&pairs))
        .await
        .unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Cancelled 1"), "{page}");
    let (code, view) = e
        .admin_get(&format!("/ges/v1/tenants/acme/callbacks/{id}"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(view["data"]["callback"]["state"], "COMPLETED", "{view}");
}

/// A UI session opened with the admin token outlived the token: sessions live in PostgreSQL,
/// so after the token was rotated (the service restarted with a new `ADMIN_TOKEN`, as one does
/// when it leaked), a cookie opened with the old token still acted as Administrator. Now an
/// admin-token session is bound to the token that opened it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_admin_token_ends_its_ui_sessions() {
    let env = TestEnv::new();
    let old = harness::Engage::start(&env, &[]).await;
    old.tenant("acme").await;
    let cookie = ui_login(&old, "acme", "@admin", harness::ADMIN_TOKEN)
        .await
        .unwrap();
    assert_eq!(get(&old, &cookie, "/ges/queues").await.0, 200);
    let rotated = env
        .clone()
        .with("ADMIN_TOKEN", "a-brand-new-admin-token-0123456789");
    let new = harness::Engage::start(&rotated, &[]).await;
    let (code, page) = get(&new, &cookie, "/ges/queues").await;
    assert_eq!(code, 401, "the old token's session still works: {page}");
    // The new token opens a session as before.
    let fresh = ui_login(&new, "acme", "@admin", "a-brand-new-admin-token-0123456789")
        .await
        .unwrap();
    assert_eq!(get(&new, &fresh, "/ges/queues").await.0, 200);
    assert_eq!(get(&new, &fresh, "/ges/callbacks").await.0, 200);
}

/// A login whose password check was under way when an administrator changed the user's
/// password and role opened a session anyway, with the old role: the check ran against the
/// hash read before the change, and the session was stored after the change had ended the
/// user's sessions. Here the check waits behind a burst of other logins (Argon2 checks run a
/// few at a time) while the change lands; the session it opens must not survive the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_change_during_a_login_check_leaves_no_session() {
    let fx = std::sync::Arc::new(ui_fixture(TestEnv::new()).await);
    let mut flood = Vec::new();
    for i in 0..24 {
        let fx = fx.clone();
        flood.push(tokio::spawn(async move {
            let _ = ui_login(&fx.engage, "acme", &format!("nobody{i}"), PASSWORD).await;
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let login = {
        let fx = fx.clone();
        tokio::spawn(async move { ui_login(&fx.engage, "acme", "sue", PASSWORD).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let e = &fx.engage;
    let body =
        serde_json::json!({"username": "sue", "password": "a new passphrase!", "role": "Monitor"});
    let (code, answer) = e.admin_post("/ges/v1/tenants/acme/users", body).await;
    assert_eq!(code, 200, "{answer}");
    let opened = login.await.unwrap();
    for f in flood {
        f.await.unwrap();
    }
    if let Ok(cookie) = opened {
        let (code, page) = get(e, &cookie, "/ges/callbacks").await;
        assert_eq!(code, 401, "a session outlived the password change: {page}");
    }
}

/// A burst of logins (unknown users, no credentials needed) held every pooled PostgreSQL
/// connection while their Argon2 checks waited for a place (a few run at once): with a pool of
/// 2, an admin read waited 2 s for the burst to drain, and every other request of the process
/// with it. Now a login holds no connection through its check.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_logins_does_not_hold_the_database_pool() {
    let fx = std::sync::Arc::new(ui_fixture(TestEnv::new().with("DB_POOL_SIZE", "2")).await);
    let mut flood = Vec::new();
    for i in 0..60 {
        let fx = fx.clone();
        flood.push(tokio::spawn(async move {
            let _ = ui_login(&fx.engage, "acme", &format!("nobody{i}"), PASSWORD).await;
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let t = std::time::Instant::now();
    let (code, body) = fx.engage.admin_get("/ges/v1/tenants/acme").await;
    let took = t.elapsed();
    let burst_running = flood.iter().any(|f| !f.is_finished());
    assert_eq!(code, 200, "{body}");
    assert!(
        burst_running,
        "the burst ended before the read: no overlap to measure"
    );
    assert!(
        took < std::time::Duration::from_secs(1),
        "an admin read waited {took:?} behind the logins"
    );
    for f in flood {
        f.await.unwrap();
    }
}

/// The login page told which user names exist: wrong passwords lock a real user and the sixth
/// attempt says so, while an unknown name answered "wrong …" forever. Now an unknown name
/// locks after as many failures, with the same words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_message_does_not_tell_which_users_exist() {
    let fx = ui_fixture(TestEnv::new()).await;
    let e = &fx.engage;
    let sixth = |user: &'static str| async move {
        for i in 0..5 {
            let wrong = format!("wrong password {i}");
            assert_eq!(ui_login(e, "acme", user, &wrong).await, Err(401));
        }
        login_page_answer(e, user).await
    };
    let real = sixth("sue").await;
    let ghost = sixth("ghost").await;
    assert!(real.contains("locked"), "{real}");
    assert_eq!(
        real, ghost,
        "the sixth attempt tells a real user from an unknown one"
    );
}

/// The error text of a wrong login of `user` on tenant `acme`.
async fn login_page_answer(e: &harness::Engage, user: &str) -> String {
    let http = no_redirects();
    let form = http
        .get(format!("{}/ges/login", e.internal))
        .send()
        .await
        .unwrap();
    let cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("ges_login_csrf="))
        .and_then(|v| v.split(';').next())
        .unwrap()
        .to_string();
    let token = csrf_of(&form.text().await.unwrap()).unwrap();
    let body = form_body(&[
        ("csrf", &token),
        ("tenant", "acme"),
        ("username", user),
        ("password", "wrong password 6"),
    ]);
    let page = post_raw(e, &cookie, "/ges/login", body).await.unwrap().1;
    page.split("role=\"alert\"")
        .nth(1)
        .and_then(|rest| rest.split("</").next())
        .unwrap_or(&page)
        .to_string()
}
