//! Attack on issue 13's one cached service lookup and the create pipeline's context: one
//! tenant's key never reaches another tenant's callbacks or services, even when both tenants
//! name their service the same (the cache is keyed by tenant and name).

use harness::Fixture;
use serde_json::json;

#[tokio::test]
async fn a_tenant_cannot_read_cancel_or_book_on_another_tenants_data() {
    let fx = Fixture::start(json!({"max_days_ahead": 3})).await;
    let other = fx
        .engage
        .provision(
            "globex",
            "sales",
            json!({"max_days_ahead": 30, "reject_out_of_hours": false}),
        )
        .await;
    let id = fx.create().id().await;

    let (code, body) = fx
        .engage
        .post(&other, harness::RETRIEVE, json!({"id": id}))
        .await;
    assert!(
        code == 404 || code == 400,
        "retrieve across tenants: {code} {body}"
    );
    let (code, body) = fx.engage.cancel(&other, &id).await;
    assert!(
        code == 404 || code == 400,
        "cancel across tenants: {code} {body}"
    );
    let (code, body) = fx
        .engage
        .post(&fx.key, harness::RETRIEVE, json!({"id": id}))
        .await;
    assert_eq!(
        code, 200,
        "the owner still reads it after the attempts: {body}"
    );

    // Same service name, different settings: each tenant books under its own.
    let ten_days = 10 * 86_400;
    let (code, body) = fx.create().in_secs(ten_days).send().await;
    assert_eq!(code, 400, "acme's sales allows 3 days: {body}");
    let message = body["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("more than 3 days ahead"), "{body}");
    let (code, body) = fx
        .engage
        .create(&other)
        .service("sales")
        .phone(&harness::next_phone())
        .in_secs(ten_days)
        .send()
        .await;
    assert_eq!(code, 200, "globex's sales allows 30 days: {body}");
}
