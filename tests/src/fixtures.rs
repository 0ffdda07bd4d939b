//! Fixtures that make an integration test a few lines: a tenant + service + API key in one
//! call ([`Fixture`], [`Engage::provision`]), a create builder ([`Create`]), the public calls
//! every test repeats (retrieve, cancel, waiting for a state), and voice-platform events.
//!
//! See `tests/README.md`, "Writing a new test".

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use futures::StreamExt;
use serde_json::{Value, json};

use crate::{Engage, TestEnv, send, wire};

/// `POST` path of a create.
pub const CREATE: &str = "/engagement/v3/callbacks/create";
/// `POST` path of a retrieve.
pub const RETRIEVE: &str = "/engagement/v3/callbacks/retrieve";
/// `POST` path of a cancel.
pub const CANCEL: &str = "/engagement/v3/callbacks/cancel";

/// Settings that keep throttles, hours and capacity out of the way of a test that is about
/// something else; `extra` adds or overrides settings.
pub fn open_service(extra: Value) -> Value {
    let mut s = json!({
        "reject_out_of_hours": false,
        "slot_capacity": 100000,
        "throttle_per_service_1": 10000000,
        "throttle_per_service_2": 10000000,
        "throttle_per_number_24h": 10000000,
        "in_queue_checking": false,
        "max_queued": 10000000,
        "dispatch_rate_per_second": 2000
    });
    if let (Some(s), Value::Object(e)) = (s.as_object_mut(), extra) {
        s.extend(e);
    }
    s
}

/// `now + secs` in the wire format (a `desiredTime`).
pub fn in_secs(secs: i64) -> String {
    wire(jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs))
}

/// A distinct valid US number per call of this process (for creates that need no given one).
pub fn next_phone() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "+1555{:07}",
        9_000_000 + NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `engage serve` on `env` and `tenant` with an API key, for tests that put their own services
/// and rules: (environment, server, key).
pub async fn serve_tenant(env: TestEnv, tenant: &str) -> (TestEnv, Engage, String) {
    let engage = Engage::start(&env, &[]).await;
    let key = engage.tenant(tenant).await;
    (env, engage, key)
}

/// A fresh environment, `engage serve` on it, and one tenant with one service and an API key.
#[derive(Debug)]
pub struct Fixture {
    /// The environment (schema, Redis prefix, streams).
    pub env: TestEnv,
    /// The running `engage serve`.
    pub engage: Engage,
    /// The tenant's API key.
    pub key: String,
    /// The fixture tenant's id (contact-center id), as the test named it.
    pub tenant: String,
    /// The service name creates default to.
    pub service: String,
}

impl Fixture {
    /// `engage serve` on a fresh [`TestEnv`], tenant `acme`, service `sales` with `settings`.
    pub async fn start(settings: Value) -> Self {
        Self::with(TestEnv::new(), &[], "acme", "sales", settings).await
    }

    /// `engage serve <args>` on `env`, then `tenant` with `service` (`settings`) and a key.
    pub async fn with(
        env: TestEnv,
        args: &[&str],
        tenant: &str,
        service: &str,
        settings: Value,
    ) -> Self {
        let engage = Engage::start(&env, args).await;
        let key = engage.provision(tenant, service, settings).await;
        Self {
            env,
            engage,
            key,
            tenant: tenant.to_string(),
            service: service.to_string(),
        }
    }

    /// `engage serve` on `env` with `tenant` and one service of [`open_service`]`(extra)`; the
    /// fixture's `env` sends the events of workers and simulators started on it back to this
    /// server (`GES_URL`).
    pub async fn dispatch(env: TestEnv, tenant: &str, service: &str, extra: Value) -> Self {
        let mut fx = Self::with(env, &[], tenant, service, open_service(extra)).await;
        fx.env = fx.env.clone().with("GES_URL", &fx.engage.internal);
        fx
    }

    /// (environment, server, API key), for tests that use them by name.
    pub fn parts(self) -> (TestEnv, Engage, String) {
        (self.env, self.engage, self.key)
    }

    /// A create on the fixture's service with its key; a distinct number unless `.phone(..)`.
    pub fn create(&self) -> Create<'_> {
        let mut create = self.engage.create(&self.key).service(&self.service);
        create.any_phone = true;
        create
    }

    /// Retrieves `id` (asserting 200); returns `data`.
    pub async fn retrieve(&self, id: &str) -> Value {
        self.engage.retrieve(&self.key, id).await
    }

    /// `POST …/callbacks/cancel` of callback `id` with the fixture's key; (status, body).
    pub async fn cancel(&self, id: &str) -> (u16, Value) {
        self.engage.cancel(&self.key, id).await
    }
}

/// A create request being built: `engage.create(&key).service("sales").phone("+1…").send()`.
/// It sends exactly the fields set (from [`Fixture::create`]: a distinct number unless
/// `.phone(..)`); without `.at(..)` it is immediate.
#[derive(Debug)]
pub struct Create<'a> {
    engage: &'a Engage,
    key: String,
    body: Value,
    headers: Vec<(String, String)>,
    any_phone: bool,
}

impl Create<'_> {
    /// Sets `serviceName`.
    pub fn service(self, name: &str) -> Self {
        self.field("serviceName", json!(name))
    }

    /// Sets `phoneNumber`.
    pub fn phone(self, number: &str) -> Self {
        self.field("phoneNumber", json!(number))
    }

    /// `desiredTime` (as given: any string the test wants to send).
    pub fn at(self, desired_time: &str) -> Self {
        self.field("desiredTime", json!(desired_time))
    }

    /// `desiredTime` `secs` from now.
    pub fn in_secs(self, secs: i64) -> Self {
        self.at(&in_secs(secs))
    }

    /// No `desiredTime`: an immediate callback (the default).
    pub fn immediate(mut self) -> Self {
        if let Some(body) = self.body.as_object_mut() {
            body.remove("desiredTime");
        }
        self
    }

    /// Sets `userData` (any JSON; the server filters it).
    pub fn user_data(self, data: Value) -> Self {
        self.field("userData", data)
    }

    /// Any other field of the body.
    pub fn field(self, name: &str, value: Value) -> Self {
        self.fields(json!({ name: value }))
    }

    /// Every field of `body` (an object is merged into what is set; anything else replaces
    /// the body, for tests of malformed ones).
    pub fn fields(mut self, body: Value) -> Self {
        match (self.body.as_object_mut(), body) {
            (Some(set), Value::Object(more)) => set.extend(more),
            (_, other) => self.body = other,
        }
        self
    }

    /// Sends an `Idempotency-Key` header.
    pub fn idempotency_key(self, key: &str) -> Self {
        self.header("Idempotency-Key", key)
    }

    /// Sends a header (besides `x-api-key`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The JSON body as it will be sent.
    pub fn body(&self) -> Value {
        let mut body = self.body.clone();
        if let Some(set) = body.as_object_mut().filter(|_| self.any_phone) {
            set.entry("phoneNumber")
                .or_insert_with(|| json!(next_phone()));
        }
        body
    }

    /// Sends it; returns the status and the envelope.
    pub async fn send(self) -> (u16, Value) {
        let mut req = self
            .engage
            .http
            .post(format!("{}{CREATE}", self.engage.external))
            .header("x-api-key", &self.key)
            .json(&self.body());
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        send(req).await
    }

    /// Sends it, asserts 200 and returns the new callback's id.
    pub async fn id(self) -> String {
        let (code, resp) = self.send().await;
        assert_eq!(code, 200, "{resp}");
        resp["data"]["id"].as_str().expect("id").to_string()
    }
}

impl Engage {
    /// A tenant with one service (`settings`); returns a fresh API key of the tenant.
    pub async fn provision(&self, tenant: &str, service: &str, settings: Value) -> String {
        let key = self.tenant(tenant).await;
        self.service(tenant, service, settings).await;
        key
    }

    /// A create request with `key` (set its service with `.service(..)`).
    pub fn create(&self, key: &str) -> Create<'_> {
        Create {
            engage: self,
            key: key.to_string(),
            body: json!({}),
            headers: Vec::new(),
            any_phone: false,
        }
    }

    /// Creates `n` immediate callbacks on `service` (numbers `+1555` + `offset + i`), 24 at
    /// a time; returns their ids.
    pub async fn create_immediate(
        &self,
        key: &str,
        service: &str,
        n: usize,
        offset: usize,
    ) -> Vec<String> {
        futures::stream::iter(0..n)
            .map(|i| {
                let phone = format!("+1555{:07}", offset + i);
                async move { self.create(key).service(service).phone(&phone).id().await }
            })
            .buffer_unordered(24)
            .collect()
            .await
    }

    /// Creates immediate callbacks on `service` (numbers `+1555` + `*phone`, counting up) until
    /// one lands in a schedule shard of `keys` that `accept` takes: for attacks that need a
    /// callback on (or off) one cluster node. Returns that id and every id created on the way,
    /// it included; panics after 400 creates.
    pub async fn create_in_shard(
        &self,
        key: &str,
        service: &str,
        phone: &mut u32,
        keys: &shared::redis::Keys,
        accept: impl Fn(u16) -> bool,
    ) -> (String, Vec<String>) {
        let mut made = Vec::new();
        for _ in 0..400 {
            let number = format!("+1555{:07}", *phone);
            *phone += 1;
            let id = self.create(key).service(service).phone(&number).id().await;
            made.push(id.clone());
            let uuid = uuid::Uuid::parse_str(&id).expect("a callback id is a UUID");
            if accept(keys.shard_of(&uuid)) {
                return (id, made);
            }
        }
        panic!("400 creates and none landed in an accepted shard")
    }

    /// Retrieves `id` (asserting 200); returns `data`.
    pub async fn retrieve(&self, key: &str, id: &str) -> Value {
        let (code, body) = self.post(key, RETRIEVE, json!({"id": id})).await;
        assert_eq!(code, 200, "{body}");
        body["data"].clone()
    }

    /// `POST …/callbacks/cancel` of callback `id` with API key `key`; (status, body).
    pub async fn cancel(&self, key: &str, id: &str) -> (u16, Value) {
        self.post(key, CANCEL, json!({"id": id})).await
    }

    /// Polls retrieve until `pred` holds; panics after `secs` with the last answer.
    pub async fn wait_for(
        &self,
        key: &str,
        id: &str,
        secs: u64,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let cb = self.retrieve(key, id).await;
            if pred(&cb) {
                return cb;
            }
            assert!(
                started.elapsed() < Duration::from_secs(secs),
                "condition not reached; last: {cb}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Posts a voice-platform event for `id` with the events token (internal port).
    pub async fn event(&self, id: &str, body: Value) -> (u16, Value) {
        self.event_as(Some(crate::ORS_EVENTS_TOKEN), id, body).await
    }

    /// Posts a voice-platform event for `id` with `token` as bearer (none: no header).
    pub async fn event_as(&self, token: Option<&str>, id: &str, body: Value) -> (u16, Value) {
        let mut req = self.http.post(self.event_url(id)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        send(req).await
    }

    /// The URL voice-platform events of `id` are posted to.
    pub fn event_url(&self, id: &str) -> String {
        format!("{}/ges/v1/ors/callbacks/{id}/events", self.internal)
    }
}
