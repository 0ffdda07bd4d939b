//! Attack on the re-seed loop of an admission (docs/throttling.md, "While one create
//! re-seeds"): a create whose own re-seed is undone before it asks again (the state's
//! deadline forced, as a flush or an expiry would) must re-seed again and be decided by the
//! limits, never admitted uncounted. Stop 45's full suite caught one create failing open
//! exactly there (31 admitted against a limit of 30).

use futures::StreamExt as _;

use super::attack_s28_windows::{act, admit, env, number, window1};
use harness::Engage;

async fn force_deadline(redis: &mut redis::aio::MultiplexedConnection, act: &str) {
    let _: () = redis::cmd("HSET")
        .arg(act)
        .arg("~seed")
        .arg(0)
        .query_async(redis)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46_a_reseed_undone_before_the_recheck_is_redone_not_failed_open() {
    let env = env();
    let a = Engage::start(&env, &[]).await;
    let key = a.provision("acme", "s", window1(3, 300)).await;
    admit(&a, &key, 3).await;
    let act = act(&env, "s");
    let mut redis = env.redis().await;
    // The seed script's DEL of the hash, seen by a subscriber as it happens.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Kg")
        .query_async(&mut redis)
        .await
        .unwrap();
    let mut sub = env.redis_pubsub().await;
    sub.psubscribe(format!("__keyspace@*__:{act}"))
        .await
        .unwrap();
    let mut events = sub.into_on_message();
    let mut redone = 0;
    for round in 0..10 {
        force_deadline(&mut redis, &act).await;
        let create = a
            .create(&key)
            .service("s")
            .phone(&number(10 + round))
            .send();
        let mut create = std::pin::pin!(create);
        let mut seeds = 0;
        let (code, body) = loop {
            tokio::select! {
                answer = &mut create => break answer,
                Some(msg) = events.next() => {
                    if msg.get_payload::<String>().unwrap_or_default() != "del" {
                        continue;
                    }
                    seeds += 1;
                    // Undo the create's first re-seed before it asks again.
                    if seeds == 1 {
                        force_deadline(&mut redis, &act).await;
                    }
                }
            }
        };
        assert_eq!(code, 429, "round {round} ({seeds} re-seeds): {body}");
        if seeds >= 2 {
            redone += 1;
        }
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("")
        .query_async(&mut redis)
        .await
        .unwrap();
    // The undo landed before the recheck at least once, or this test proved nothing.
    assert!(redone > 0, "the undo never beat the create's recheck");
    let held: i64 = redis::cmd("HGET")
        .arg(&act)
        .arg("~count")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(held, 3, "the three admitted callbacks, nothing more");
}
