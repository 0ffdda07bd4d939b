//! A private Redis Cluster for fault tests (restart a node empty, flush one node, kill a
//! primary so that its replica takes over), so that no test disturbs the shared cluster of
//! `infra/local/deps.sh`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{CLUSTER_PORTS, ServerTls, free_port_in};

/// Three primaries on free ports (and, [`PrivateCluster::with_replicas`], one replica each),
/// without persistence: a restarted node comes back empty but keeps its cluster identity and
/// slots (its `nodes.conf`).
#[derive(Debug)]
pub struct PrivateCluster {
    /// Ports of the nodes: the three first primaries, then their replicas (if any).
    pub ports: Vec<u16>,
    /// `cluster-node-timeout` (ms): how long a primary may be silent before its replica is
    /// promoted.
    node_timeout_ms: u32,
    dir: PathBuf,
    children: Vec<Option<Child>>,
    /// With TLS: clients and the cluster bus speak only TLS.
    tls: Option<ServerTls>,
}

impl PrivateCluster {
    /// Starts the nodes, forms the cluster and waits until it serves every slot.
    pub fn new() -> Self {
        Self::start(None, 0, 2000)
    }

    /// Three primaries with one replica each (`--cluster-replicas 1`) and a node timeout of
    /// `node_timeout_ms`: [`PrivateCluster::kill`] a primary and its replica takes over after
    /// about that long.
    pub fn with_replicas(node_timeout_ms: u32) -> Self {
        Self::start(None, 1, node_timeout_ms)
    }

    /// The same speaking only TLS, to clients and between nodes (`tls-cluster`), with `tls`'s
    /// certificate (`rediss://` URLs).
    pub fn with_tls(tls: ServerTls) -> Self {
        Self::start(Some(tls), 0, 2000)
    }

    fn start(tls: Option<ServerTls>, replicas: usize, node_timeout_ms: u32) -> Self {
        let ports: Vec<u16> = (0..3 * (1 + replicas)).map(|_| cluster_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "engage-cluster-{}-{}",
            ports[0],
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut c = Self {
            children: ports.iter().map(|_| None).collect(),
            ports,
            node_timeout_ms,
            dir,
            tls,
        };
        for i in 0..c.ports.len() {
            // A port taken between its pick and the node's bind: the node exits; take another.
            for _ in 0..5 {
                if c.start_node(i) {
                    break;
                }
                c.ports[i] = cluster_port();
            }
            assert!(c.children[i].is_some(), "node {i} did not start");
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .args(c.tls.iter().flat_map(ServerTls::cli_args))
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", &replicas.to_string()])
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        c.wait_ok();
        if replicas > 0 {
            c.wait_replicas_synced();
        }
        c
    }

    /// Comma-separated node URLs (`REDIS_URL` with `REDIS_CLUSTER=true`).
    pub fn urls(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        let urls: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("{scheme}://127.0.0.1:{p}"))
            .collect();
        urls.join(",")
    }

    /// Starts node `i` on its port and waits for its `PONG`; false (and no child) when the node
    /// exited at once, e.g. because something else took its port.
    fn start_node(&mut self, i: usize) -> bool {
        let port = self.ports[i].to_string();
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            Some(tls) => cmd
                .args(["--port", "0", "--tls-port", &port])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(tls.server_args()),
            None => cmd.args(["--port", &port]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout"])
            .arg(self.node_timeout_ms.to_string())
            // A replica may always be promoted, however long it was cut off.
            .args(["--cluster-replica-validity-factor", "0"])
            .arg("--cluster-config-file")
            .arg(self.dir.join(format!("nodes-{port}.conf")))
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.children[i] = Some(child);
        let started = Instant::now();
        while self.cli(i, &["PING"]).trim() != "PONG" {
            let exited = self.children[i]
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited {
                self.children[i] = None;
                return false;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Kills node `i` and starts it again with no data (same identity and slots).
    pub fn restart_empty(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(self.start_node(i), "node {i} exited at start (port taken?)");
        self.wait_ok();
    }

    /// Kills node `i` with SIGKILL and leaves it down (a failed primary: its replica takes
    /// over after the node timeout).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops node `i` with SIGSTOP (it keeps its connections but answers nothing and
    /// replicates nothing) until [`Self::resume`]: a replica made to lag behind its primary.
    pub fn pause(&self, i: usize) {
        self.signal(i, "-STOP");
    }

    /// Lets a node stopped by [`Self::pause`] run again.
    pub fn resume(&self, i: usize) {
        self.signal(i, "-CONT");
    }

    fn signal(&self, i: usize, sig: &str) {
        let pid = self.children[i].as_ref().expect("node running").id();
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {sig} {pid}");
    }

    /// The index of the replica of primary `i` (from its `INFO replication`).
    pub fn replica_of(&self, i: usize) -> usize {
        let info = self.cli(i, &["INFO", "replication"]);
        let port: u16 = info
            .lines()
            .find_map(|l| l.strip_prefix("slave0:"))
            .and_then(|l| l.split(',').find_map(|f| f.strip_prefix("port=")))
            .and_then(|p| p.trim().parse().ok())
            .expect("primary has a replica");
        self.ports
            .iter()
            .position(|p| *p == port)
            .expect("one of ours")
    }

    /// Whether node `i` is running.
    pub fn is_up(&self, i: usize) -> bool {
        self.children[i].is_some()
    }

    /// Waits until every running node reports `cluster_state:ok` with all 16384 slots served;
    /// returns how long that took.
    pub fn wait_ok(&self) -> Duration {
        let started = Instant::now();
        let up: Vec<usize> = (0..self.ports.len()).filter(|i| self.is_up(*i)).collect();
        while !up.iter().all(|i| {
            let info = self.cli(*i, &["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cluster not ok"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        started.elapsed()
    }

    /// Waits until replica `i` has been promoted to primary and the cluster serves every slot
    /// again; returns how long that took.
    pub fn wait_promoted(&self, i: usize) -> Duration {
        let started = Instant::now();
        while !self
            .cli(i, &["INFO", "replication"])
            .contains("role:master")
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica {} not promoted",
                self.ports[i]
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        started.elapsed() + self.wait_ok()
    }

    /// Waits until every replica has finished its first sync with its primary. The bound is
    /// generous: in a full suite on two cores a first sync once took over 30 s (2026-12-05,
    /// `attack_s34_failover_of_the_listening_primary`, which passes in 18 s in all when alone).
    fn wait_replicas_synced(&self) {
        let started = Instant::now();
        for i in 3..self.ports.len() {
            loop {
                let info = self.cli(i, &["INFO", "replication"]);
                if info.contains("master_link_status:up") {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "replica {} did not sync: {info}",
                    self.ports[i]
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `redis-cli -p <node i> args…` (not following redirections), its output.
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(self.tls.iter().flat_map(ServerTls::cli_args))
            .args(["-p", &self.ports[i].to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The index of the primary serving `key` (asked of a running node).
    pub fn node_of(&self, key: &str) -> usize {
        let live = (0..self.ports.len())
            .find(|i| self.is_up(*i))
            .expect("a node is up");
        let slot: u16 = self
            .cli(live, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot");
        // `CLUSTER SLOTS` prints, per range: start, end, then the primary's ip and port.
        let out = self.cli(live, &["CLUSTER", "SLOTS"]);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let port = lines
            .windows(4)
            .find_map(|w| {
                match (
                    w[0].parse::<u16>(),
                    w[1].parse::<u16>(),
                    w[3].parse::<u16>(),
                ) {
                    (Ok(a), Ok(b), Ok(p)) if w[2] == "127.0.0.1" && a <= slot && slot <= b => {
                        Some(p)
                    }
                    _ => None,
                }
            })
            .expect("a node serves every slot");
        self.ports
            .iter()
            .position(|p| *p == port)
            .expect("one of ours")
    }
}

/// A free port whose cluster-bus port (+10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port_in(CLUSTER_PORTS);
        if std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl Default for PrivateCluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().filter_map(Option::take) {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
