//! Group admission (docs/throttling.md#group-admission): concurrent creates of one service ask
//! the create-time limits in one script call ([`throttle::check_many`]) instead of one call
//! each, the way the group commit shares inserts and index writes (`db::batch`). The script
//! checks and counts the requests one after another, exactly as separate calls would, so the
//! limits stay exact; only the round trips, and the script's `TIME`, are shared.
//!
//! At low load a group is one request and nothing waits for a group to fill: requests queue
//! only while [`IN_FLIGHT`] groups are already out. A request whose caller gave up before its
//! verdict arrived gives an admission back at once (the single call would have left it to the
//! next re-seed).

use redis::RedisResult;
use tokio::sync::{Semaphore, mpsc, oneshot};
use uuid::Uuid;

use super::{
    RedisHandle,
    throttle::{self, Limits, ThrottleKeys, Verdict},
};

/// Groups out at once: while they are, new requests queue and form the next groups.
const IN_FLIGHT: usize = 1;
/// Most requests taken from the queue at once, and most in one script call (each costs the
/// script two hash commands; 64 keep one call well under a millisecond of Redis time).
const MAX_GROUP: usize = 64;

/// One create's question.
struct Job {
    tk: ThrottleKeys,
    limits: Limits,
    id: Uuid,
    number: String,
    reply: oneshot::Sender<RedisResult<Verdict>>,
}

/// Handle on the admission task (cheap to clone).
#[derive(Debug, Clone)]
pub struct Admissions {
    /// `None` outside a runtime (tools): each request then makes its own call.
    tx: Option<mpsc::Sender<Job>>,
    redis: RedisHandle,
}

impl Admissions {
    /// Starts the task that groups the admissions asked of `redis`.
    pub fn spawn(redis: RedisHandle) -> Self {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return Self { tx: None, redis };
        };
        let (tx, rx) = mpsc::channel(4096);
        rt.spawn(run(redis.clone(), rx));
        Self {
            tx: Some(tx),
            redis,
        }
    }

    /// [`throttle::check_and_count`] of callback `id` of `number`, grouped with the concurrent
    /// requests of this process. An error is Redis's (the caller fails open).
    pub async fn check(
        &self,
        tk: &ThrottleKeys,
        limits: &Limits,
        id: Uuid,
        number: &str,
    ) -> RedisResult<Verdict> {
        let Some(tx) = &self.tx else {
            let mut conn = self.redis.conn().await?;
            return throttle::check_and_count(&mut conn, tk, id, number, limits).await;
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            tk: tk.clone(),
            limits: *limits,
            id,
            number: number.to_string(),
            reply,
        };
        tx.send(job).await.map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Client, "admission task stopped"))
}

async fn run(redis: RedisHandle, mut rx: mpsc::Receiver<Job>) {
    let permits = std::sync::Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let mut jobs = Vec::with_capacity(MAX_GROUP);
        if rx.recv_many(&mut jobs, MAX_GROUP).await == 0 {
            return; // every sender dropped
        }
        let redis = redis.clone();
        tokio::spawn(async move {
            let groups = group(jobs);
            futures::future::join_all(groups.into_iter().map(|g| ask(&redis, g))).await;
            drop(permit);
        });
    }
}

/// The jobs by service and limits, in arrival order within each group.
fn group(jobs: Vec<Job>) -> Vec<Vec<Job>> {
    let mut groups: Vec<Vec<Job>> = Vec::new();
    for job in jobs {
        match groups
            .iter_mut()
            .find(|g| g[0].tk == job.tk && g[0].limits == job.limits)
        {
            Some(g) => g.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

/// One script call for a group; every job gets its verdict or the call's error.
async fn ask(redis: &RedisHandle, jobs: Vec<Job>) {
    let (tk, limits) = (jobs[0].tk.clone(), jobs[0].limits);
    let requests: Vec<(Uuid, &str)> = jobs.iter().map(|j| (j.id, j.number.as_str())).collect();
    let verdicts = match redis.conn().await {
        Ok(mut conn) => throttle::check_many(&mut conn, &tk, &limits, &requests).await,
        Err(e) => Err(e),
    };
    match verdicts {
        Ok(verdicts) => {
            for (job, verdict) in jobs.into_iter().zip(verdicts) {
                answer(redis, &tk, limits, job, verdict);
            }
        }
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(copy(&e)));
            }
        }
    }
}

/// Sends a verdict; an admission whose caller is gone is given back (in the background: the
/// group's other answers do not wait for it).
fn answer(redis: &RedisHandle, tk: &ThrottleKeys, limits: Limits, job: Job, verdict: Verdict) {
    let id = job.id;
    let Err(Ok(Verdict::Admitted)) = job.reply.send(Ok(verdict)) else {
        return;
    };
    let (redis, tk) = (redis.clone(), tk.clone());
    tokio::spawn(async move {
        let given = async {
            let mut conn = redis.conn().await?;
            throttle::give_back(&mut conn, &tk, &limits, id).await
        };
        if let Err(e) = given.await {
            ::metrics::counter!(crate::metrics::REDIS_WRITE_FAILED, "op" => "throttle_give_back")
                .increment(1);
            tracing::warn!(callback.id = %id, error = %e, "give-back of an abandoned admission failed; the next re-seed repairs it");
        }
    });
}

/// The same error for every job of a failed call (`RedisError` is not `Clone`).
fn copy(e: &redis::RedisError) -> redis::RedisError {
    redis::RedisError::from((e.kind(), "throttle call failed", e.to_string()))
}
