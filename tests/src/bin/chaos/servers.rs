//! Private servers of the chaos suite: a PostgreSQL cluster (`initdb` + `pg_ctl` in a temp dir
//! on a free port); the 3-node Redis cluster is `harness::PrivateCluster`. Never the shared
//! servers of the test suite: the faults stop, freeze, flush and reconfigure these.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{Context, bail};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (it refuses to run as root).
fn pg_tool(tool: &str) -> Command {
    let path = format!("{PG_BIN}/{tool}");
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", &path]).current_dir("/");
        c
    } else {
        Command::new(path)
    }
}

fn run(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot run"))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A private PostgreSQL cluster, removed when dropped.
#[derive(Debug)]
pub(crate) struct PrivatePg {
    /// Port it listens on.
    pub(crate) port: u16,
    dir: PathBuf,
}

impl PrivatePg {
    /// `initdb` in a fresh temp dir and start on a free port.
    pub(crate) fn start() -> anyhow::Result<Self> {
        let port = harness::free_port();
        let dir = PathBuf::from(format!(
            "/var/tmp/engage-chaos-pg-{}-{port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(&dir);
                    c
                },
                "chown",
            )?;
        }
        let mut init = pg_tool("initdb");
        init.arg("-D").arg(dir.join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        run(init, "initdb")?;
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 200\nsynchronous_commit = on\nfsync = on\n",
            dir.display()
        );
        let conf_path = dir.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text)?;
        let pg = Self { port, dir };
        pg.start_server()?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub(crate) fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub(crate) fn start_server(&self) -> anyhow::Result<()> {
        let mut c = pg_tool("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        run(c, "pg_ctl start")
    }

    /// `pg_ctl stop -m fast`.
    pub(crate) fn stop_server(&self) -> anyhow::Result<()> {
        let mut c = pg_tool("pg_ctl");
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop")
    }

    /// Makes sure the server runs again after a row (thawed, started if stopped).
    pub(crate) fn ensure_running(&self) {
        if let Ok(pids) = self.pids() {
            signal(&pids, "CONT");
        }
        let ready = Command::new(format!("{PG_BIN}/pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        if !ready {
            let _ = self.start_server();
        }
    }

    /// The postmaster and all its children (backends, checkpointer, walwriter…).
    pub(crate) fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let pidfile = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))?;
        let master: u32 = pidfile
            .lines()
            .next()
            .context("empty postmaster.pid")?
            .trim()
            .parse()?;
        let mut pids = vec![master];
        pids.extend(children_of(master));
        Ok(pids)
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        // A frozen server cannot stop: thaw it first.
        if let Ok(pids) = self.pids() {
            signal(&pids, "CONT");
        }
        let _ = self.stop_server();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Direct children of `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    // Fields after the command name (which may hold spaces) end with ')'.
                    let rest = s.rsplit_once(')')?.1;
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Sends `SIG<sig>` to each pid (processes this program started or their children).
pub(crate) fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}
