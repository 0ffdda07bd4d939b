//! Lua scripts sent by their hash (`EVALSHA`), and by their text (`EVAL`) to a node that does
//! not have them: never `SCRIPT LOAD`.
//!
//! `redis::Script` answers a `NOSCRIPT` with `SCRIPT LOAD`, and the cluster client sends
//! `SCRIPT LOAD` to every node and waits for all of them: a script run for the first time on a
//! node (after a restart, a failover, `SCRIPT FLUSH`) then waited for a frozen node elsewhere
//! in the cluster until `REDIS_TIMEOUT_MS`, and failed. In the worker that held every shard's
//! dispatch up (helper-73, `attack_s43_a_script_load_on_a_frozen_node_holds_up_healthy_shards`;
//! docs/derived-state.md#a-failing-shard). `EVAL` goes where `EVALSHA` went, by the first key,
//! and leaves the script cached there. The API mirrors `redis::Script`'s.

use redis::{Cmd, ErrorKind, FromRedisValue, RedisResult, ServerErrorKind, ToRedisArgs};

/// A Lua script: its text and its SHA-1.
pub struct Script {
    text: String,
    hash: String,
}

impl Script {
    /// The script `code`.
    pub fn new(code: &str) -> Self {
        let hash = redis::Script::new(code).get_hash().to_string();
        Self {
            text: code.to_string(),
            hash,
        }
    }

    /// Its SHA-1 (what `EVALSHA` names it by).
    pub fn get_hash(&self) -> &str {
        &self.hash
    }

    /// An invocation with no keys or arguments yet.
    pub fn prepare_invoke(&self) -> Invocation<'_> {
        Invocation {
            script: self,
            keys: Vec::new(),
            args: Vec::new(),
        }
    }

    /// An invocation with its first key.
    pub fn key<T: ToRedisArgs>(&self, key: T) -> Invocation<'_> {
        let mut inv = self.prepare_invoke();
        inv.key(key);
        inv
    }

    /// An invocation with its first argument.
    pub fn arg<T: ToRedisArgs>(&self, arg: T) -> Invocation<'_> {
        let mut inv = self.prepare_invoke();
        inv.arg(arg);
        inv
    }
}

/// One call of a [`Script`] with its keys and arguments.
pub struct Invocation<'a> {
    script: &'a Script,
    keys: Vec<Vec<u8>>,
    args: Vec<Vec<u8>>,
}

impl Invocation<'_> {
    /// Adds a key (`KEYS`).
    pub fn key<T: ToRedisArgs>(&mut self, key: T) -> &mut Self {
        self.keys.extend(key.to_redis_args());
        self
    }

    /// Adds an argument (`ARGV`).
    pub fn arg<T: ToRedisArgs>(&mut self, arg: T) -> &mut Self {
        self.args.extend(arg.to_redis_args());
        self
    }

    /// Runs it: `EVALSHA`, then `EVAL` with the text on the same node if it does not have the
    /// script (see the module doc).
    pub async fn invoke_async<T: FromRedisValue>(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
    ) -> RedisResult<T> {
        match self.evalsha_cmd().query_async(conn).await {
            Err(e) if is_noscript(&e) => self.eval_cmd().query_async(conn).await,
            other => other,
        }
    }

    /// Its `EVALSHA` (for a pipeline; a caller answered `NOSCRIPT` sends
    /// [`eval_cmd`](Self::eval_cmd) instead).
    pub fn evalsha_cmd(&self) -> Cmd {
        self.cmd("EVALSHA", &self.script.hash)
    }

    /// Its `EVAL`, with the script's text.
    pub fn eval_cmd(&self) -> Cmd {
        self.cmd("EVAL", &self.script.text)
    }

    fn cmd(&self, name: &str, body: &str) -> Cmd {
        let mut c = redis::cmd(name);
        c.arg(body)
            .arg(self.keys.len())
            .arg(&self.keys)
            .arg(&self.args);
        c
    }
}

/// Whether `e` is Redis's `NOSCRIPT` (the node does not have the script).
pub fn is_noscript(e: &redis::RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}
