//! Attacks on `shared::redis::script` (b9aae35, 6fb8ea0): every Lua script runs by `EVALSHA`,
//! and on `NOSCRIPT` by `EVAL` with its text on the same connection (same first key on a
//! cluster), never `SCRIPT LOAD`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harness::{PrivateCluster, PrivateRedis};
use shared::redis::script::Script;
use shared::redis::{RedisConn, RedisHandle, RedisTls};

const ECHO: &str = r#"
local r = {tostring(#KEYS)}
for i = 1, #KEYS do r[#r + 1] = KEYS[i] end
r[#r + 1] = '|'
for i = 1, #ARGV do r[#r + 1] = ARGV[i] end
return r
"#;

const INCR: &str = "return redis.call('INCR', KEYS[1])";

fn handle(urls: &str, cluster: bool, timeout_ms: u64) -> RedisHandle {
    RedisHandle::new(
        urls,
        cluster,
        None,
        Duration::from_millis(timeout_ms),
        &RedisTls::default(),
    )
    .unwrap()
}

/// The same keys and arguments through ours and through `redis::Script`.
macro_rules! both {
    ($ours:expr, $theirs:expr, $conn:expr, |$inv:ident| $body:block) => {{
        let mut $inv = $ours.prepare_invoke();
        $body;
        let a: RedisResultV = $inv.invoke_async($conn).await;
        let mut $inv = $theirs.prepare_invoke();
        $body;
        let b: RedisResultV = $inv.invoke_async($conn).await;
        (a, b)
    }};
}

type RedisResultV = redis::RedisResult<Vec<Vec<u8>>>;

async fn flush(conn: &mut RedisConn, cluster: Option<&PrivateCluster>) {
    match cluster {
        Some(c) => {
            for i in 0..3 {
                c.cli(i, &["SCRIPT", "FLUSH"]);
            }
        }
        None => {
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query_async(conn)
                .await
                .unwrap();
        }
    }
}

async fn parity(conn: &mut RedisConn, cluster: Option<&PrivateCluster>) -> usize {
    let ours = Script::new(ECHO);
    let theirs = redis::Script::new(ECHO);
    assert_eq!(ours.get_hash(), theirs.get_hash());
    let mut cases = 0;
    macro_rules! case {
        (|$inv:ident| $body:block) => {{
            // Ours on a node without the script (the EVAL path), then theirs; then ours again
            // with the script cached (the EVALSHA path).
            flush(conn, cluster).await;
            let (a, b) = both!(ours, theirs, conn, |$inv| $body);
            let a = a.expect("ours (EVAL)");
            let b = b.expect("theirs");
            assert_eq!(a, b, "case {}", stringify!($body));
            let mut $inv = ours.prepare_invoke();
            $body;
            let c: Vec<Vec<u8>> = $inv.invoke_async(conn).await.expect("ours (EVALSHA)");
            assert_eq!(c, b, "case {} cached", stringify!($body));
            cases += 1;
        }};
    }
    case!(|inv| {
        inv.key("{t}a");
    });
    case!(|inv| {
        inv.key(vec!["{t}a".to_string(), "{t}b".to_string()]);
    });
    case!(|inv| {
        inv.key(&["{t}a", "{t}b"][..]).arg(&["x", "y", "z"][..]);
    });
    case!(|inv| {
        inv.key("{t}a").arg((1i64, "two", 3u32));
    });
    case!(|inv| {
        inv.key("{t}a")
            .arg(2.5f64)
            .arg(-0.0f64)
            .arg(f64::MAX)
            .arg(1e-300f64);
    });
    case!(|inv| {
        inv.key("{t}a")
            .arg(vec![0u8, 255, 10, 0])
            .arg(&b"\xff\x00"[..]);
    });
    case!(|inv| {
        inv.key(b"{t}\xffbin".to_vec())
            .arg(7u8)
            .arg(u64::MAX)
            .arg(i64::MIN);
    });
    case!(|inv| {
        inv.key("{t}a").arg(true).arg(false);
    });
    case!(|inv| {
        inv.key("{t}a").arg(Option::<i64>::None).arg(Some(5i64));
    });
    case!(|inv| {
        inv.key("{t}a").arg(Vec::<String>::new()).arg("").arg("");
    });
    case!(|inv| {
        inv.key("{t}a").arg(vec![vec![1u8, 2], vec![]]);
    });
    case!(|inv| {
        inv.key(("{t}a", "{t}b")).arg(vec![("k", 1i64), ("l", 2)]);
    });
    case!(|inv| {
        inv.key("{t}a").arg("x".repeat(100_000));
    });
    cases
}

/// Attack: argument expansion. Each of 13 shapes of keys and arguments (a Vec and a slice of
/// keys, a tuple, floats incl. -0.0/MAX/1e-300, raw bytes incl. non-UTF-8 and NUL, a u8, i64::MIN,
/// u64::MAX, bools, Option None/Some, an empty Vec and empty strings, a Vec of byte vectors,
/// a tuple of keys with a Vec of pairs, a 100 kB argument) run through our `Script` on a node
/// whose scripts were just flushed (the `EVAL` path), through `redis::Script` and through ours
/// again (the `EVALSHA` path), standalone and on a 3-node cluster; the replies (KEYS count,
/// KEYS, ARGV as the script saw them) must be identical.
///
/// Found: identical in 13 of 13 cases on both (the wrapper collects with `to_redis_args` as
/// `ScriptInvocation` does with `write_redis_args`, and builds the same command).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43b_argument_expansion_matches_redis_script() {
    let r = PrivateRedis::new(false);
    let h = handle(&r.url(), false, 3000);
    let mut conn = h.conn().await.unwrap();
    assert_eq!(parity(&mut conn, None).await, 13);

    let cluster = PrivateCluster::new();
    let h = handle(&cluster.urls(), true, 3000);
    let mut conn = h.conn().await.unwrap();
    assert_eq!(parity(&mut conn, Some(&cluster)).await, 13);

    // A key count mismatch (the script reads KEYS[2] with one key): the same error both ways.
    let bad = "return redis.call('GET', KEYS[2])";
    flush(&mut conn, Some(&cluster)).await;
    let a: redis::RedisResult<Option<String>> =
        Script::new(bad).key("{t}a").invoke_async(&mut conn).await;
    let b: redis::RedisResult<Option<String>> = redis::Script::new(bad)
        .key("{t}a")
        .invoke_async(&mut conn)
        .await;
    assert_eq!(a.is_err(), b.is_err(), "ours {a:?} theirs {b:?}");
    // No keys at all on the cluster (routed to a random node both times): still answered.
    flush(&mut conn, Some(&cluster)).await;
    let n: i64 = Script::new("return 41 + 1")
        .prepare_invoke()
        .invoke_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 42);
}

/// Runs INCRs of `keys` (round robin, 8 tasks, each at least 150 and until 60 flushes were
/// made) through our `Script` while another thread flushes the scripts every few ms; returns
/// the calls made, the errors, the sum of the counters and the flushes.
async fn count_under_flush(
    h: &RedisHandle,
    keys: Vec<String>,
    flusher: impl Fn() + Send + 'static,
) -> (usize, usize, i64, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let flushes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = {
        let stop = stop.clone();
        let flushes = flushes.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                flusher();
                flushes.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let tasks = 8;
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let h = h.clone();
        let keys = keys.clone();
        let flushes = flushes.clone();
        set.spawn(async move {
            let s = Script::new(INCR);
            let mut conn = h.conn().await.unwrap();
            let (mut calls, mut errors) = (0, 0);
            let began = Instant::now();
            while calls < 150
                || (flushes.load(Ordering::Relaxed) < 60
                    && began.elapsed() < Duration::from_secs(10))
            {
                let k = &keys[(t + calls) % keys.len()];
                if s.key(k).invoke_async::<i64>(&mut conn).await.is_err() {
                    errors += 1;
                }
                calls += 1;
            }
            (calls, errors)
        });
    }
    let (mut calls, mut errors) = (0, 0);
    while let Some(e) = set.join_next().await {
        let (c, e) = e.unwrap();
        calls += c;
        errors += e;
    }
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    let mut conn = h.conn().await.unwrap();
    let mut sum = 0i64;
    for k in &keys {
        let v: Option<i64> = redis::cmd("GET")
            .arg(k)
            .query_async(&mut conn)
            .await
            .unwrap();
        sum += v.unwrap_or(0);
    }
    (calls, errors, sum, flushes.load(Ordering::Relaxed))
}

/// `EVAL` and `SCRIPT LOAD` calls a node counted (`INFO commandstats`).
fn evals(port: u16) -> (u64, u64) {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let calls = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(":calls="))
            .and_then(|r| r.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    (calls("cmdstat_eval"), calls("cmdstat_script|load"))
}

/// Attack: the fallback runs a script twice or not at all. INCRs through our `Script` (8
/// concurrent tasks, until 60 flushes were made) while a thread runs `SCRIPT FLUSH` every ~3 ms: standalone on one key,
/// then on a 3-node cluster over 6 keys spread over every node (`SCRIPT FLUSH` on each node in
/// turn). Every call must succeed and the counters must sum to exactly the calls (a NOSCRIPT'd
/// `EVALSHA` ran nothing; its `EVAL` runs once).
///
/// Found: exact both ways: standalone 38,273–41,546 calls, 0 errors, sum equal, 459–467
/// `EVAL` fallbacks, 0 `SCRIPT LOAD`; cluster 22,684–26,342 calls, 0 errors, sum equal,
/// 85–103 `EVAL`s on every node, 0 `SCRIPT LOAD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43b_script_flush_storm_counts_exact() {
    let r = PrivateRedis::new(false);
    let h = handle(&r.url(), false, 3000);
    let port = r.port;
    let (calls, errors, sum, flushes) = count_under_flush(&h, vec!["c".into()], move || {
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "SCRIPT", "FLUSH"])
            .output();
    })
    .await;
    let (eval, load) = evals(port);
    eprintln!(
        "standalone: calls {calls} errors {errors} sum {sum} flushes {flushes} EVAL {eval} SCRIPT LOAD {load}"
    );
    assert_eq!((errors, sum), (0, calls as i64));
    assert!(eval > 0, "the fallback ran");
    assert_eq!(load, 0);

    let cluster = PrivateCluster::new();
    let mut keys = Vec::new();
    for n in 0..3 {
        let mut found = 0;
        for i in 0..200 {
            let k = format!("{{c{i}}}");
            if cluster.node_of(&k) == n {
                keys.push(k);
                found += 1;
                if found == 2 {
                    break;
                }
            }
        }
    }
    assert_eq!(keys.len(), 6);
    let h = handle(&cluster.urls(), true, 3000);
    let ports = cluster.ports.clone();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let (calls, errors, sum, flushes) = count_under_flush(&h, keys, move || {
        let i = next.fetch_add(1, Ordering::Relaxed) % 3;
        let _ = std::process::Command::new("redis-cli")
            .args(["-p", &ports[i].to_string(), "SCRIPT", "FLUSH"])
            .output();
    })
    .await;
    let stats: Vec<(u64, u64)> = cluster.ports.iter().map(|p| evals(*p)).collect();
    eprintln!(
        "cluster: calls {calls} errors {errors} sum {sum} flushes {flushes} (EVAL, SCRIPT LOAD) per node {stats:?}"
    );
    assert_eq!((errors, sum), (0, calls as i64));
    assert!(stats.iter().all(|(e, l)| *e > 0 && *l == 0), "{stats:?}");
}

/// Attack: a frozen cluster node while a healthy node has its scripts flushed. Node F is
/// SIGSTOPped; node H's scripts are flushed; a script on a key of H must answer promptly through
/// our `Script` (`REDIS_TIMEOUT_MS` 3 s). Control: `redis::Script` (SCRIPT LOAD to every node)
/// on the same key.
///
/// Found: ours answered in 0.2–0.3 ms (after `NOSCRIPT`, by `EVAL` on H); the control
/// `redis::Script` failed with "timed out" after 3.0 s (its `SCRIPT LOAD` waited for F): the
/// fix holds at the library level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43b_first_run_on_a_healthy_node_beside_a_frozen_one() {
    let cluster = PrivateCluster::new();
    for i in 0..3 {
        cluster.cli(i, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let key_on = |n: usize| {
        (0..500)
            .map(|i| format!("{{f{i}}}"))
            .find(|k| cluster.node_of(k) == n)
            .unwrap()
    };
    let (h_key, f_key) = (key_on(1), key_on(2));
    let h = handle(&cluster.urls(), true, 3000);
    let mut conn = h.conn().await.unwrap();
    // Connections to every node first.
    for k in [&key_on(0), &h_key, &f_key] {
        let _: i64 = Script::new(INCR)
            .key(k)
            .invoke_async(&mut conn)
            .await
            .unwrap();
    }
    cluster.pause(2);
    cluster.cli(1, &["SCRIPT", "FLUSH"]);
    let t = Instant::now();
    let v: i64 = Script::new(INCR)
        .key(&h_key)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    let ours = t.elapsed();
    assert_eq!(v, 2);
    cluster.cli(1, &["SCRIPT", "FLUSH"]);
    let t = Instant::now();
    let theirs: redis::RedisResult<i64> = redis::Script::new(INCR)
        .key(&h_key)
        .invoke_async(&mut conn)
        .await;
    let theirs_ms = t.elapsed();
    cluster.resume(2);
    eprintln!("ours {ours:?}; redis::Script {theirs_ms:?} {theirs:?}");
    assert!(ours < Duration::from_millis(1500), "ours took {ours:?}");
}

/// Attack: a script run twice by the client when its `EVALSHA` times out (the question "timed
/// out vs NOSCRIPT"). The key's node is SIGSTOPped, an INCR script is invoked with a 500 ms
/// timeout (the error comes back), the node is resumed, and the counter read: more than 1
/// means the cluster client re-sent the `EVALSHA` after the timeout (the node then runs every
/// copy it queued). Standalone (`ConnectionManager`, one retry) the same.
///
/// Found: our fallback adds no run (a timeout is not `NOSCRIPT`, no `EVAL` follows), and
/// standalone the script ran once (counter 2, every run). But on the cluster the timed-out
/// script ran TWICE in 5 of 8 runs (counter 3): the cluster client's per-connection response
/// timeout (`response_timeout`, 500 ms) and its overall timeout (`overall_response_timeout`,
/// by default the same 500 ms) fire together; the first makes an io `TimedOut`, which
/// `RetryMethod::RetryImmediately` re-sends to the same (frozen) node while the second hands the
/// caller its error; the node runs both copies when it wakes. Not from b9aae35 (`redis::Script`'s
/// `EVALSHA` took the same path), and the service's scripts look idempotent or lease-bounded
/// (claim: the extra batch waits out its lease; pace: an extra take), so not asserted as a
/// bug here: the test asserts only the bound (at most 1 + 2 retries) and prints the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43b_a_timed_out_script_on_a_frozen_cluster_node() {
    let cluster = PrivateCluster::new();
    for i in 0..3 {
        cluster.cli(i, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let key = (0..500)
        .map(|i| format!("{{d{i}}}"))
        .find(|k| cluster.node_of(k) == 2)
        .unwrap();
    let h = handle(&cluster.urls(), true, 500);
    let mut conn = h.conn().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = Script::new(INCR)
        .key(&key)
        .invoke_async(&mut conn)
        .await
        .unwrap();
    cluster.pause(2);
    let t = Instant::now();
    let r: redis::RedisResult<i64> = Script::new(INCR).key(&key).invoke_async(&mut conn).await;
    let took = t.elapsed();
    cluster.resume(2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v: i64 = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    eprintln!("cluster: {r:?} after {took:?}; counter {v} (1 before the frozen call)");
    assert!(r.is_err());
    assert!(
        (2..=4).contains(&v),
        "the timed-out script ran {} times",
        v - 1
    );

    let red = PrivateRedis::new(false);
    let h = handle(&red.url(), false, 500);
    let mut conn = h.conn().await.unwrap();
    let _: i64 = Script::new(INCR)
        .key("d")
        .invoke_async(&mut conn)
        .await
        .unwrap();
    let pid = std::process::Command::new("redis-cli")
        .args(["-p", &red.port.to_string(), "INFO", "server"])
        .output()
        .unwrap();
    let pid: String = String::from_utf8_lossy(&pid.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("process_id:").map(|s| s.trim().to_string()))
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status();
    let r: redis::RedisResult<i64> = Script::new(INCR).key("d").invoke_async(&mut conn).await;
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let v: i64 = redis::cmd("GET")
        .arg("d")
        .query_async(&mut conn)
        .await
        .unwrap();
    eprintln!("standalone: {r:?}; counter {v} (1 before the frozen call)");
    assert!(v <= 2, "the timed-out script ran {} times", v - 1);
}

/// `n` concurrent creates on service `s` (numbers `from..from + n`); (ids admitted, refused),
/// panicking on anything but 200/429.
async fn burst(fx: &harness::Fixture, n: usize, from: usize) -> (Vec<String>, usize) {
    let calls = (0..n).map(|j| {
        fx.create()
            .phone(&format!("+1 202 555 {:04}", (from + j) % 10_000))
            .in_secs(3600)
            .send()
    });
    let (mut ids, mut refused) = (Vec::new(), 0);
    for (code, body) in futures::future::join_all(calls).await {
        match code {
            200 => ids.push(body["data"]["id"].as_str().unwrap().to_string()),
            429 => refused += 1,
            _ => panic!("{code} {body}"),
        }
    }
    (ids, refused)
}

/// Attack: `SCRIPT FLUSH` storm on the service Redis (a private standalone one) while creates
/// and cancels run through `engage serve`: throttle counts must stay exact and nothing 5xx.
/// Service `s`: `max_queued` 30 and window 1 of 25 per hour (per-number off), standalone then
/// on a 3-node cluster (each node flushed in turn). Round 1: 60 concurrent creates (a flush
/// every ~3 ms): exactly 25 admitted, 35 refused. 10 of them cancelled concurrently under the
/// storm: 10 × 200; a second cancel of each: no 5xx. Round 2: 20 more creates: 0 admitted
/// (window 1 still holds the 25 creates of the hour; a cancel gives no window slot back).
///
/// Found: exact both ways: 25/35, cancels 10 × 200 then 10 × 400, round 2 0/20; 22–26
/// flushes, 14–16 `EVAL` fallbacks standalone and 2–7 per cluster node, 0 `SCRIPT LOAD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43b_script_flush_storm_through_the_service_keeps_throttles_exact() {
    let r = PrivateRedis::new(false);
    throttle_storm(
        harness::TestEnv::new().with("REDIS_URL", &r.url()),
        vec![r.port],
    )
    .await;
    let cluster = PrivateCluster::new();
    throttle_storm(
        harness::TestEnv::new()
            .with("REDIS_URL", &cluster.urls())
            .with("REDIS_CLUSTER", "true"),
        cluster.ports.clone(),
    )
    .await;
}

async fn throttle_storm(env: harness::TestEnv, ports: Vec<u16>) {
    let env = env.with("API_KEY_RATE_PER_SECOND", "0");
    let fx = harness::Fixture::with(
        env,
        &[],
        "acme",
        "s",
        harness::open_service(serde_json::json!({
            "throttle_per_service_1": 25, "throttle_ttl_1": 3600,
            "throttle_per_number_24h": 0, "max_queued": 30
        })),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let flusher = {
        let stop = stop.clone();
        let ports = ports.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-p", &ports[n % ports.len()].to_string(), "SCRIPT", "FLUSH"])
                    .output();
                n += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            n
        })
    };
    let (ids, refused) = burst(&fx, 60, 0).await;
    let cancels =
        futures::future::join_all(ids.iter().take(10).map(|id| fx.engage.cancel(&fx.key, id)))
            .await;
    let again =
        futures::future::join_all(ids.iter().take(10).map(|id| fx.engage.cancel(&fx.key, id)))
            .await;
    let (ids2, refused2) = burst(&fx, 20, 100).await;
    stop.store(true, Ordering::Relaxed);
    let flushes = flusher.join().unwrap();
    let stats: Vec<(u64, u64)> = ports.iter().map(|p| evals(*p)).collect();
    eprintln!(
        "round 1: {} admitted, {refused} refused; cancels {:?}; again {:?}; round 2: {} admitted, {refused2} refused; flushes {flushes}, (EVAL, SCRIPT LOAD) {stats:?}",
        ids.len(),
        cancels.iter().map(|c| c.0).collect::<Vec<_>>(),
        again.iter().map(|c| c.0).collect::<Vec<_>>(),
        ids2.len()
    );
    assert_eq!((ids.len(), refused), (25, 35));
    assert!(cancels.iter().all(|c| c.0 == 200), "{cancels:?}");
    assert!(again.iter().all(|c| c.0 < 500), "{again:?}");
    assert_eq!(ids2.len(), 0, "window 1 still holds 25 creates");
    assert!(stats.iter().any(|(e, _)| *e > 0), "{stats:?}");
    assert!(stats.iter().all(|(_, l)| *l == 0), "{stats:?}");
}

/// Attack: `SCRIPT FLUSH` on every node of the service Redis Cluster (one node every ~3 ms)
/// while a worker dispatches and creates and cancels go on: 40 callbacks due in 3–4 s on
/// distinct numbers, 12 of them cancelled before they fall due; every script (throttles at
/// create, release at cancel, schedule index, claim, settle, pace, queue views) meets
/// `NOSCRIPT` over and over. No 5xx; each of the 28 kept reaches the voice stream exactly
/// once, none of the 12 cancelled does.
///
/// Found: 28 entries, 28 distinct, 0 missing, 0 doubled, 0 cancelled dispatched; 1,228–1,333
/// flushes; 9–37 `EVAL` fallbacks per node (as many `NOSCRIPT`s), 0 `SCRIPT LOAD`. The
/// `errorstat_ERR` of 4–6 per node printed is there without any script (engage serve and
/// worker start-up on a fresh cluster), not from this change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43b_script_flush_storm_on_a_cluster_while_dispatching() {
    let cluster = PrivateCluster::new();
    let env = harness::TestEnv::new()
        .with("REDIS_URL", &cluster.urls())
        .with("REDIS_CLUSTER", "true");
    let fx = harness::Fixture::dispatch(env, "acme", "svc", serde_json::json!({})).await;
    let w = harness::WorkerProc::start(&fx.env, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let ports = cluster.ports.clone();
    let flusher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let _ = std::process::Command::new("redis-cli")
                    .args(["-p", &ports[n % 3].to_string(), "SCRIPT", "FLUSH"])
                    .output();
                n += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            n
        })
    };
    let due = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(3);
    let creates = (0..40).map(|i| {
        let at = due + jiff::SignedDuration::from_millis(25 * i);
        fx.create()
            .phone(&format!("+1 202 555 {:04}", 7000 + i))
            .at(&harness::wire(at))
            .send()
    });
    let mut ids = Vec::new();
    for (code, body) in futures::future::join_all(creates).await {
        assert_eq!(code, 200, "{body}");
        ids.push(body["data"]["id"].as_str().unwrap().to_string());
    }
    let cancelled: Vec<String> = ids.iter().step_by(3).take(12).cloned().collect();
    for (code, body) in
        futures::future::join_all(cancelled.iter().map(|id| fx.engage.cancel(&fx.key, id))).await
    {
        assert_eq!(code, 200, "{body}");
    }
    let left = (due + jiff::SignedDuration::from_secs(7)).as_millisecond()
        - jiff::Timestamp::now().as_millisecond();
    tokio::time::sleep(Duration::from_millis(left.max(0) as u64)).await;
    stop.store(true, Ordering::Relaxed);
    let flushes = flusher.join().unwrap();
    let stats: Vec<(u64, u64)> = cluster.ports.iter().map(|p| evals(*p)).collect();
    let voice_url = fx.env.vars["VOICE_REDIS_URL"].clone();
    let (total, distinct, per) = harness::stream_census(&voice_url, fx.env.voice_stream()).await;
    let kept: Vec<&String> = ids.iter().filter(|id| !cancelled.contains(id)).collect();
    let missing = kept
        .iter()
        .filter(|id| !per.contains_key(id.as_str()))
        .count();
    let doubled = per.values().filter(|n| **n > 1).count();
    let after_cancel = cancelled
        .iter()
        .filter(|id| per.contains_key(id.as_str()))
        .count();
    eprintln!(
        "stream {total} entries, {distinct} distinct; kept {} missing {missing}, doubled {doubled}, cancelled dispatched {after_cancel}; flushes {flushes}; (EVAL, SCRIPT LOAD) per node {stats:?}",
        kept.len()
    );
    for p in &cluster.ports {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &p.to_string(), "INFO", "all"])
            .output()
            .unwrap();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.starts_with("errorstat") {
                eprintln!("node {p}: {l}");
            }
        }
    }
    drop(w);
    assert_eq!((missing, doubled, after_cancel), (0, 0, 0), "{per:?}");
    assert_eq!(total, kept.len());
    assert!(stats.iter().all(|(_, l)| *l == 0), "{stats:?}");
}

/// Attack: a create's first script run on a healthy node beside a frozen one, through
/// `engage serve` (`REDIS_TIMEOUT_MS` 4 s, one schedule shard). The tenant is picked so that a
/// node (not node 0) holds none of its keys (schedule shard, throttle, queue, pace); that node
/// is SIGSTOPped, the other nodes' scripts flushed, and one create timed (the throttle check
/// and the schedule index meet `NOSCRIPT`). Before b9aae35 the `SCRIPT LOAD` went to every
/// node and waited for the frozen one.
///
/// Found: 200 in 4.7 ms, the next 200 in 2.4 ms, 3 `EVAL`s on the node holding the keys,
/// 0 `SCRIPT LOAD`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_s43b_create_beside_a_frozen_node_after_a_flush() {
    let cluster = PrivateCluster::new();
    for i in 0..3 {
        cluster.cli(i, &["CONFIG", "SET", "cluster-require-full-coverage", "no"]);
    }
    let env = harness::TestEnv::new()
        .with("REDIS_URL", &cluster.urls())
        .with("REDIS_CLUSTER", "true")
        .with("REDIS_SCHEDULE_SHARDS", "1")
        .with("REDIS_TIMEOUT_MS", "4000");
    let keys = shared::redis::Keys::new(&env.id, 1);
    let (tenant, frozen) = (0..200)
        .map(|i| format!("t{i}"))
        .find_map(|t| {
            let used = [
                cluster.node_of(&keys.sched(0)),
                cluster.node_of(&keys.queue(&t, "svc")),
                cluster.node_of(&keys.pace(&t)),
                cluster.node_of(&format!("{{{}:thr:{t}:svc}}:act", env.id)),
            ];
            (1..3).find(|n| !used.contains(n)).map(|n| (t, n))
        })
        .expect("a tenant with a node free of its keys");
    let fx = harness::Fixture::dispatch(env, &tenant, "svc", serde_json::json!({})).await;
    for _ in 0..3 {
        let (code, body) = fx.create().in_secs(3600).send().await;
        assert_eq!(code, 200, "{body}");
    }
    cluster.pause(frozen);
    for i in (0..3).filter(|i| *i != frozen) {
        cluster.cli(i, &["SCRIPT", "FLUSH"]);
    }
    let t = Instant::now();
    let (code, body) = fx.create().in_secs(3600).send().await;
    let took = t.elapsed();
    let (code2, body2) = fx.create().in_secs(3600).send().await;
    let took2 = t.elapsed() - took;
    cluster.resume(frozen);
    let stats: Vec<(u64, u64)> = cluster.ports.iter().map(|p| evals(*p)).collect();
    eprintln!(
        "node {frozen} frozen: create {code} in {took:?}, then {code2} in {took2:?}; (EVAL, SCRIPT LOAD) per node {stats:?}"
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(code2, 200, "{body2}");
    assert!(took < Duration::from_millis(2500), "create took {took:?}");
}
