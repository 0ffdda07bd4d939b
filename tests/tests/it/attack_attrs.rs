//! Attack on issue 13's typed attributes (`shared::model::attrs`): a stored `attrs` object the
//! typed struct cannot read as a whole (hand-edited values of the wrong type, keys of another
//! version) still hands its string overrides to the voice stream, as the old per-key reader
//! (`attrs.get(k).and_then(Value::as_str)`) did.

use std::time::Duration;

use harness::{Fixture, TestEnv, WorkerProc};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overrides_of_a_row_with_badly_typed_keys_reach_the_voice_stream() {
    let service = json!({"route_point": "5000", "survey_rp": "6000", "language": "en-US"});
    let fx = Fixture::dispatch(TestEnv::new(), "acme", "sales", service).await;
    let id = fx.create().id().await;
    let attrs = json!({
        "routePoint": "7001", "surveyRP": "8001", "language": "fr-CA",
        "offerThreshold": "oops", "pushTargets": "bad", "alwaysCheckCapacity": "yes",
        "legacyKey": {"x": 1}
    });
    let uuid: uuid::Uuid = id.parse().unwrap();
    let n = fx
        .env
        .pg()
        .await
        .execute(
            "UPDATE callbacks SET attrs = $2 WHERE id = $1",
            &[&uuid, &attrs],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let _worker = WorkerProc::start(&fx.env, &[]).await;
    let entries = fx.env.wait_handoffs(1, Duration::from_secs(10)).await;
    let (_, entry) = entries
        .iter()
        .find(|(_, f)| f["callback_id"] == id)
        .expect("the hand-off");
    assert_eq!(entry["route_point"], "7001", "{entry:?}");
    assert_eq!(entry["survey_rp"], "8001", "{entry:?}");
    assert_eq!(entry["language"], "fr-CA", "{entry:?}");
}
