//! A private 3-primary Redis Cluster for fault tests (restart a node empty, flush one node),
//! so that no test disturbs the shared cluster of `infra/local/deps.sh`.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{ServerTls, free_port};

/// Three primaries on free ports, without persistence: a restarted node comes back empty but
/// keeps its cluster identity and slots (its `nodes.conf`).
#[derive(Debug)]
pub struct PrivateCluster {
    /// Ports of the nodes.
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Option<Child>>,
    /// With TLS: clients and the cluster bus speak only TLS.
    tls: Option<ServerTls>,
}

impl PrivateCluster {
    /// Starts the nodes, forms the cluster and waits until it serves every slot.
    pub fn new() -> Self {
        Self::start(None)
    }

    /// The same speaking only TLS, to clients and between nodes (`tls-cluster`), with `tls`'s
    /// certificate (`rediss://` URLs).
    pub fn with_tls(tls: ServerTls) -> Self {
        Self::start(Some(tls))
    }

    fn start(tls: Option<ServerTls>) -> Self {
        let ports: Vec<u16> = (0..3).map(|_| cluster_port()).collect();
        let dir = std::env::temp_dir().join(format!(
            "engage-cluster-{}-{}",
            ports[0],
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let mut c = Self {
            children: ports.iter().map(|_| None).collect(),
            ports,
            dir,
            tls,
        };
        for i in 0..3 {
            c.start_node(i);
        }
        let nodes: Vec<String> = c.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let status = Command::new("redis-cli")
            .args(c.tls.iter().flat_map(ServerTls::cli_args))
            .args(["--cluster", "create"])
            .args(&nodes)
            .arg("--cluster-yes")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli runs");
        assert!(status.success(), "redis-cli --cluster create failed");
        c.wait_ok();
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

    fn start_node(&mut self, i: usize) {
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
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
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
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills node `i` and starts it again with no data (same identity and slots).
    pub fn restart_empty(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.start_node(i);
        self.wait_ok();
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

    /// The index of the node serving `key`.
    pub fn node_of(&self, key: &str) -> usize {
        let slot: u16 = self
            .cli(0, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("slot");
        // `CLUSTER SLOTS` prints, per range: start, end, then the primary's ip and port.
        let out = self.cli(0, &["CLUSTER", "SLOTS"]);
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

    fn wait_ok(&self) {
        let started = Instant::now();
        while !(0..3).all(|i| {
            self.cli(i, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "cluster not ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A free port whose cluster-bus port (+10000) is free and valid too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
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
