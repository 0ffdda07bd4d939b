//! Attacks on the "lone worker" optimisation (worker/src/fleet.rs, worker/src/wake.rs `hello`,
//! worker/src/dispatch.rs `announce_unannounced`, docs/derived-state.md#a-lone-worker) with
//! partial faults. The promise attacked: a claim held by a worker that dies is taken over by a
//! survivor about at its lease deadline; a lone worker's claims skip their announcement only
//! while no other worker exists, and "what is not covered" needs the *lone* worker to die
//! within milliseconds of a claim, or the newcomer's hello to be lost (the newcomer then
//! announces).
//!
//! The findings here (all three fixed in stop 46; their tests now guard the fixes) are the
//! other way round: the *newcomer* counts itself alone beside a live
//! worker (a flood of hellos, an answer lost to a re-subscription, or the first worker paused
//! longer than the grace), claims without announcing, and dies while the first worker is
//! paused; the survivor never hears of the lease and takes it over only after the sweep or the
//! safety poll (not within the 8 s these tests wait), or by chance one lease after its thaw.
//! The setup needs the survivor paused over the lease's claim (SIGSTOP) so that the newcomer
//! wins it and the survivor's next claim takes something (a claim that takes nothing reads the
//! in-flight head and finds the lease).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use harness::{Fixture, PrivateRedis, TestEnv, WorkerProc, signal, wire};
use serde_json::json;
use shared::redis::Keys;

use super::attack_s34_lease_tag::{
    lease_of, lock_row, pid, unlock, wait_claimed, wait_on_stream, wait_taken_over,
};

const SHARD: u16 = 0;
const LEASE: i64 = 3_000;

type Conn = redis::aio::MultiplexedConnection;
pub(super) type Heard = Arc<Mutex<Vec<String>>>;

/// Every message on shard 0's and the former wake channel, as heard by the test.
pub(super) async fn listen(url: &str, keys: &Keys) -> Heard {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mut ps = redis::Client::open(url)
        .expect("client")
        .get_async_pubsub()
        .await
        .expect("pubsub");
    ps.subscribe(keys.wake_channel(SHARD))
        .await
        .expect("subscribe");
    ps.subscribe(keys.former_wake_channel())
        .await
        .expect("subscribe");
    let h = heard.clone();
    tokio::spawn(async move {
        let mut s = ps.into_on_message();
        while let Some(m) = s.next().await {
            if let Ok(p) = m.get_payload::<String>() {
                h.lock().unwrap().push(p);
            }
        }
    });
    heard
}

pub(super) fn count(heard: &Heard, msg: &str) -> usize {
    heard.lock().unwrap().iter().filter(|m| *m == msg).count()
}

/// Waits until a `hello.<id>.1` not in `known` is heard; its id (hex).
async fn new_hello(heard: &Heard, known: &HashSet<String>) -> String {
    let started = Instant::now();
    loop {
        let found = heard.lock().unwrap().iter().find_map(|m| {
            let id = m.strip_prefix("hello.")?.strip_suffix(".1")?;
            (!known.contains(id)).then(|| id.to_string())
        });
        if let Some(id) = found {
            return id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no new hello: {:?}",
            heard.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_count(heard: &Heard, msg: &str, n: usize, limit: Duration) {
    let started = Instant::now();
    while count(heard, msg) < n {
        assert!(
            started.elapsed() < limit,
            "{msg} heard {} times, not {n}",
            count(heard, msg)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Whether a lease announcement with `deadline` was heard.
fn announced(heard: &Heard, deadline: i64) -> bool {
    let prefix = format!("{deadline}.");
    heard.lock().unwrap().iter().any(|m| m.starts_with(&prefix))
}

async fn subscribers(conn: &mut Conn, keys: &Keys) -> i64 {
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(keys.wake_channel(SHARD))
        .query_async(conn)
        .await
        .expect("PUBSUB NUMSUB");
    n
}

async fn wait_subscribers(conn: &mut Conn, keys: &Keys, n: i64) {
    let started = Instant::now();
    while subscribers(conn, keys).await < n {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "not {n} subscribers"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The ids of the pub/sub clients of the server.
async fn pubsub_clients(conn: &mut Conn) -> HashSet<String> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(conn)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter_map(|l| l.split(' ').find_map(|f| f.strip_prefix("id=")))
        .map(str::to_string)
        .collect()
}

async fn client_kill(conn: &mut Conn, id: &str) {
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(conn)
        .await
        .expect("CLIENT KILL");
}

/// One shard, on the shared Redis or `redis` (a private one, for `CLIENT KILL`).
async fn one_shard(tenant: &str, redis: Option<&PrivateRedis>) -> Fixture {
    let mut env = TestEnv::new().with("REDIS_SCHEDULE_SHARDS", "1");
    if let Some(r) = redis {
        env = env.with("REDIS_URL", &r.url());
    }
    Fixture::dispatch(env, tenant, "svc", json!({})).await
}

async fn due_in(fx: &Fixture, ms: i64) -> String {
    let at = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(ms);
    fx.create().at(&wire(at)).id().await
}

fn lease() -> [(&'static str, String); 1] {
    [("WORKER_LEASE_MS", LEASE.to_string())]
}

/// Y (its row locked, so that its claimer waits in its pass) and X, due `ms` and `ms` +
/// 300 ms from now. Both announcements are taken in by every listening worker; the test then
/// waits 150 ms so that A's dispatcher has them before it is frozen.
async fn y_then_x(fx: &Fixture, ms: i64) -> (String, tokio_postgres::Client, String) {
    let y = due_in(fx, ms).await;
    let lock = lock_row(&fx.env, &y).await;
    let x = due_in(fx, ms + 300).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    (y, lock, x)
}

/// A frozen (the caller froze it, after it took in Y's and X's announcements): B claims Y at
/// its time, hands it off and waits in its pass; X falls due meanwhile (B, held in Y's pass,
/// does not claim it). B is killed (SIGKILL) and A thawed `thaw_ms` later (still well before
/// Y's deadline): A's one claim takes X (a claim that
/// takes something does not read the in-flight head when the worker's bound is fresh) and
/// hands it off. Returns (Y's deadline, whether B announced that lease, lateness of the
/// takeover of Y on the Redis clock, `None` after 8 s).
async fn newcomer_claims_and_dies(
    fx: &Fixture,
    conn: &mut Conn,
    keys: &Keys,
    heard: &Heard,
    (a, b): (&WorkerProc, &mut WorkerProc),
    (y, x, thaw_ms): (&str, &str, u64),
) -> (i64, bool, Option<i64>) {
    let dy = wait_claimed(conn, keys, y, Duration::from_secs(10)).await;
    wait_on_stream(&fx.env, y, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(lease_of(conn, keys, x).await, None, "X claimed by B");
    let was_announced = announced(heard, dy);
    b.proc.kill();
    tokio::time::sleep(Duration::from_millis(thaw_ms)).await;
    signal(&[pid(a)], "CONT");
    wait_on_stream(&fx.env, x, Duration::from_secs(5)).await;
    let taken = wait_taken_over(conn, keys, y, dy, Duration::from_secs(8)).await;
    (dy, was_announced, taken.map(|t| t - dy))
}

/// Finding, fixed in stop 46 (answers coalesced, never capped): (no fault but a publisher on
/// the wake channel; equally 1,024 worker restarts beside a long-lived worker): A, alone,
/// hears 1,100 fake `hello.<random>.1` and answered 1,024 of them (`ANSWERS`), then none for
/// good. A real newcomer B is then never answered; B counts
/// itself alone beside a live A (crowded all along) and claims Y without announcing its lease.
/// A paused (SIGSTOP) over Y's time, B dies; A, thawed, claims X and never learns of Y's lease:
/// Y is not taken over within 8 s of its deadline (the sweep's 25 s). Before the optimisation
/// B's claim announced, A's subscription kept the message, and A took Y over on time; the
/// docs' uncovered cases are the lone worker dying, or the newcomer's hello being lost, not an
/// answer refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46c_a_hello_flood_leaves_a_newcomer_unanswered_and_its_lease_unwatched() {
    let fx = one_shard("s46cflood", None).await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let heard = listen(&fx.env.vars["REDIS_URL"], &keys).await;
    let a = WorkerProc::start(&fx.env, &lease()).await;
    wait_subscribers(&mut conn, &keys, 2).await;
    let mut known = HashSet::new();
    let a_id = new_hello(&heard, &known).await;
    known.insert(a_id.clone());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // The flood: 1,100 distinct fake workers.
    let mut pipe = redis::pipe();
    for _ in 0..1_100 {
        let id = format!("{:x}", uuid::Uuid::new_v4().as_u64_pair().0);
        pipe.cmd("PUBLISH")
            .arg(keys.former_wake_channel())
            .arg(format!("hello.{id}.1"))
            .ignore();
        known.insert(id);
    }
    let _: () = pipe.query_async(&mut conn).await.expect("flood");
    let answer = format!("hello.{a_id}.0");
    wait_count(&heard, &answer, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let flood_answers = count(&heard, &answer);
    // Coalesced (worker/src/fleet.rs): one answer in flight at a time answers every hello
    // heard before it.
    assert!(
        flood_answers <= 1_100,
        "{flood_answers} answers to 1,100 hellos"
    );
    // The newcomer.
    let mut b = WorkerProc::start(&fx.env, &lease()).await;
    let b_id = new_hello(&heard, &known).await;
    // B's grace (1 s) passes unanswered.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let a_answers = count(&heard, &answer);
    let b_answered = count(&heard, &format!("hello.{b_id}.0"));
    let (y, lock, x) = y_then_x(&fx, 500).await;
    signal(&[pid(&a)], "STOP");
    let (dy, was_announced, late) =
        newcomer_claims_and_dies(&fx, &mut conn, &keys, &heard, (&a, &mut b), (&y, &x, 0)).await;
    println!(
        "FIGURE s46c_flood a={a_id} b={b_id} a_answers={a_answers} b_answers={b_answered} \
         dy={dy} announced={was_announced} late_ms={late:?}"
    );
    unlock(&lock).await;
    let (total, distinct, per) = fx.env.census().await;
    assert_eq!(total, distinct, "{per:?}");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "the dead newcomer's lease on {y} taken over {late:?} ms after its deadline (None: not \
         within 8 s); A answered {a_answers} hellos (B's: {b_answered}), B announced the \
         lease: {was_announced}"
    );
}

/// Finding, fixed in stop 46 (every hello that asks is answered, also an id asking again) (a
/// pause of A shorter than the grace, then B's subscription dropped): A, alone, is
/// frozen (SIGSTOP) while B starts and says hello; B's wake subscription is killed
/// (`CLIENT KILL ID`) and A thawed at once: A takes B's hello in, counts itself crowded and
/// answers while B is re-subscribing (its 200 ms back-off). B's new subscription says hello
/// again, but A answers each id only once. So B counts itself alone beside a live A after both
/// faults are over; then as in the flood: A paused over Y's time, B claims Y unannounced and
/// dies, A does not take Y over on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46c_an_answer_lost_to_a_resubscription_is_never_repeated() {
    let redis = PrivateRedis::new(false);
    let fx = one_shard("s46clost", Some(&redis)).await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = redis.conn().await;
    let heard = listen(&redis.url(), &keys).await;
    let a = WorkerProc::start(&fx.env, &lease()).await;
    wait_subscribers(&mut conn, &keys, 2).await;
    let mut known = HashSet::new();
    let a_id = new_hello(&heard, &known).await;
    known.insert(a_id.clone());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = pubsub_clients(&mut conn).await;
    signal(&[pid(&a)], "STOP");
    let mut b = WorkerProc::start(&fx.env, &lease()).await;
    let b_id = new_hello(&heard, &known).await;
    let b_hello = format!("hello.{b_id}.1");
    let fresh: Vec<String> = pubsub_clients(&mut conn)
        .await
        .difference(&before)
        .cloned()
        .collect();
    assert_eq!(fresh.len(), 1, "B's subscription alone is new: {fresh:?}");
    client_kill(&mut conn, &fresh[0]).await;
    signal(&[pid(&a)], "CONT");
    let answer = format!("hello.{a_id}.0");
    wait_count(&heard, &answer, 1, Duration::from_secs(5)).await;
    // B re-subscribes and says hello again; A does not answer a second time.
    wait_count(&heard, &b_hello, 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let a_answers = count(&heard, &answer);
    let (y, lock, x) = y_then_x(&fx, 500).await;
    signal(&[pid(&a)], "STOP");
    let (dy, was_announced, late) =
        newcomer_claims_and_dies(&fx, &mut conn, &keys, &heard, (&a, &mut b), (&y, &x, 0)).await;
    println!(
        "FIGURE s46c_lost_answer a_answers={a_answers} b_hellos={} dy={dy} \
         announced={was_announced} late_ms={late:?}",
        count(&heard, &b_hello)
    );
    unlock(&lock).await;
    let (total, distinct, per) = fx.env.census().await;
    assert_eq!(total, distinct, "{per:?}");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "the dead newcomer's lease on {y} taken over {late:?} ms after its deadline (None: not \
         within 8 s); A answered {a_answers} time(s), B said hello {} times, B announced the \
         lease: {was_announced}",
        count(&heard, &b_hello)
    );
}

/// Finding, fixed in stop 46 (a hello heard has every shard's in-flight head read again) (A
/// paused longer than the grace): A, alone, takes in Y's and X's announcements and
/// is frozen; B starts, its hello echoes, nobody answers within 1 s, and B counts itself alone.
/// B claims Y unannounced and is killed; A is thawed 1.5 s later, about 1 s before Y's deadline
/// (it takes B's hello in now: crowded), claims X, and does not take Y over on time: only when
/// it wakes for X's lease, one lease after its thaw (its claim of X went out alone, unannounced;
/// its own late announcement of it is heard as a lease). Before the optimisation B's claim
/// announced its lease, A's subscription kept the message while A was frozen, and A took Y
/// over at its deadline. (Thawed 0.5 s after B's death, A is 0.5 s late: within the margin.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46c_a_newcomer_beside_a_frozen_worker_claims_unannounced() {
    let fx = one_shard("s46cfrozen", None).await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let heard = listen(&fx.env.vars["REDIS_URL"], &keys).await;
    let a = WorkerProc::start(&fx.env, &lease()).await;
    wait_subscribers(&mut conn, &keys, 2).await;
    let mut known = HashSet::new();
    let a_id = new_hello(&heard, &known).await;
    known.insert(a_id.clone());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (y, lock, x) = y_then_x(&fx, 4_000).await;
    signal(&[pid(&a)], "STOP");
    let mut b = WorkerProc::start(&fx.env, &lease()).await;
    let _b_id = new_hello(&heard, &known).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        lease_of(&mut conn, &keys, &y).await,
        None,
        "Y claimed before B was alone"
    );
    let (dy, was_announced, late) =
        newcomer_claims_and_dies(&fx, &mut conn, &keys, &heard, (&a, &mut b), (&y, &x, 1_500))
            .await;
    println!("FIGURE s46c_frozen dy={dy} announced={was_announced} late_ms={late:?}");
    unlock(&lock).await;
    let (total, distinct, per) = fx.env.census().await;
    assert_eq!(total, distinct, "{per:?}");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "the dead newcomer's lease on {y} taken over {late:?} ms after its deadline (None: not \
         within 8 s); B announced the lease: {was_announced}"
    );
}

/// Guard (attack 3 of the brief): a lone A holds Y unannounced (its pass waits on Y's locked
/// row) and is frozen; B starts and, nobody answering, counts itself alone; A is killed. B's
/// start-up claim read the in-flight head, so B takes Y over at its deadline; Y is on the
/// stream once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46c_a_frozen_lone_holder_killed_after_a_newcomer_joins() {
    let fx = one_shard("s46cholder", None).await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let heard = listen(&fx.env.vars["REDIS_URL"], &keys).await;
    let mut a = WorkerProc::start(&fx.env, &lease()).await;
    wait_subscribers(&mut conn, &keys, 2).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let y = due_in(&fx, 200).await;
    let lock = lock_row(&fx.env, &y).await;
    let dy = wait_claimed(&mut conn, &keys, &y, Duration::from_secs(10)).await;
    wait_on_stream(&fx.env, &y, Duration::from_secs(5)).await;
    signal(&[pid(&a)], "STOP");
    let was_announced = announced(&heard, dy);
    let b = WorkerProc::start(&fx.env, &lease()).await;
    wait_subscribers(&mut conn, &keys, 3).await;
    a.proc.kill();
    let taken = wait_taken_over(&mut conn, &keys, &y, dy, Duration::from_secs(8)).await;
    let late = taken.map(|t| t - dy);
    println!("FIGURE s46c_holder dy={dy} announced={was_announced} late_ms={late:?}");
    unlock(&lock).await;
    let n = fx.env.wait_submitted(1, Duration::from_secs(10)).await;
    let (total, distinct, per) = fx.env.census().await;
    assert!(!was_announced, "a lone worker announced its lease");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "taken over {late:?} ms late\nB:\n{}",
        b.proc.output()
    );
    assert_eq!(n, 1);
    assert_eq!((total, distinct), (1, 1), "{per:?}");
}

/// Guard (a lost hello, recovered): a lone A is frozen, its wake subscription killed, and B
/// starts and says hello while A has no subscription (lost to A). A is thawed: it
/// re-subscribes and says hello, B answers, both are crowded; B's claim of Y announces its
/// lease, and after B dies A (frozen over Y's time, thawed 1.5 s after B's death, as in
/// `…_a_newcomer_beside_a_frozen_worker_claims_unannounced`) takes Y over at its deadline: the
/// control of the findings, where B's lease went unannounced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46c_a_hello_lost_to_a_dropped_subscription_is_recovered() {
    let redis = PrivateRedis::new(false);
    let fx = one_shard("s46cresub", Some(&redis)).await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = redis.conn().await;
    let before = pubsub_clients(&mut conn).await;
    let heard = listen(&redis.url(), &keys).await;
    let mine: Vec<String> = pubsub_clients(&mut conn)
        .await
        .difference(&before)
        .cloned()
        .collect();
    let a = WorkerProc::start(&fx.env, &lease()).await;
    wait_subscribers(&mut conn, &keys, 2).await;
    let mut known = HashSet::new();
    let a_id = new_hello(&heard, &known).await;
    known.insert(a_id.clone());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    signal(&[pid(&a)], "STOP");
    for id in pubsub_clients(&mut conn).await {
        if !mine.contains(&id) {
            client_kill(&mut conn, &id).await;
        }
    }
    let mut b = WorkerProc::start(&fx.env, &lease()).await;
    let b_id = new_hello(&heard, &known).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&[pid(&a)], "CONT");
    // A re-subscribes and says hello again; B answers.
    wait_count(
        &heard,
        &format!("hello.{a_id}.1"),
        2,
        Duration::from_secs(10),
    )
    .await;
    wait_count(
        &heard,
        &format!("hello.{b_id}.0"),
        1,
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (y, lock, x) = y_then_x(&fx, 500).await;
    signal(&[pid(&a)], "STOP");
    let (dy, was_announced, late) =
        newcomer_claims_and_dies(&fx, &mut conn, &keys, &heard, (&a, &mut b), (&y, &x, 1_500))
            .await;
    println!("FIGURE s46c_resub dy={dy} announced={was_announced} late_ms={late:?}");
    unlock(&lock).await;
    let (total, distinct, per) = fx.env.census().await;
    assert_eq!(total, distinct, "{per:?}");
    assert!(
        late.is_some_and(|l| l < 1_000),
        "{y} taken over {late:?} ms late; announced: {was_announced}"
    );
}

/// Guard (a flood does not slow dispatch): a lone A hears 20,000 fake hellos while 10
/// callbacks fall due; each is handed off within 1.5 s of its time, and A answers far fewer
/// than the fakes (coalesced: 66 for 20,000 in one run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s46c_a_hello_flood_neither_stalls_dispatch_nor_grows_answers() {
    let fx = one_shard("s46cpace", None).await;
    let keys = Keys::new(&fx.env.id, 1);
    let mut conn = fx.env.redis().await;
    let heard = listen(&fx.env.vars["REDIS_URL"], &keys).await;
    let _a = WorkerProc::start(&fx.env, &lease()).await;
    wait_subscribers(&mut conn, &keys, 2).await;
    let a_id = new_hello(&heard, &HashSet::new()).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut ids = Vec::new();
    for k in 0..10 {
        ids.push(due_in(&fx, 1_000 + k * 100).await);
    }
    let due_by = Instant::now() + Duration::from_millis(2_000);
    let flood = async {
        let mut c = fx.env.redis().await;
        for _ in 0..20 {
            let mut pipe = redis::pipe();
            for _ in 0..1_000 {
                let id = format!("{:x}", uuid::Uuid::new_v4().as_u64_pair().0);
                pipe.cmd("PUBLISH")
                    .arg(keys.former_wake_channel())
                    .arg(format!("hello.{id}.1"))
                    .ignore();
            }
            let _: () = pipe.query_async(&mut c).await.expect("flood");
        }
    };
    flood.await;
    for id in &ids {
        wait_on_stream(&fx.env, id, Duration::from_secs(10)).await;
    }
    let late = Instant::now().saturating_duration_since(due_by);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answers = count(&heard, &format!("hello.{a_id}.0"));
    let (total, distinct, per) = fx.env.census().await;
    println!("FIGURE s46c_pace answers={answers} last_handoff_late={late:?}");
    assert!(answers <= 1_024, "{answers} answers");
    assert!(
        late < Duration::from_millis(1_500),
        "handed off {late:?} late"
    );
    assert_eq!((total, distinct), (10, 10), "{per:?}");
}
