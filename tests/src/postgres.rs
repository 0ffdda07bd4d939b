//! A PostgreSQL cluster owned by one test or chaos row (`initdb` + `pg_ctl` in a temp folder on
//! a free port), never the shared server: faults stop, freeze (SIGSTOP) and restart it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, bail};

/// A private PostgreSQL cluster with a database `engage`; stopped and removed when dropped.
#[derive(Debug)]
pub struct PrivatePostgres {
    /// Port it listens on.
    pub port: u16,
    dir: PathBuf,
    /// Leave `dir` when dropped ([`Self::keep`]).
    kept: AtomicBool,
}

/// Path of a PostgreSQL tool (whatever version is installed under /usr/lib/postgresql).
fn pg_bin(tool: &str) -> anyhow::Result<PathBuf> {
    std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL installed under /usr/lib/postgresql")?
        .filter_map(Result::ok)
        .map(|d| d.path().join("bin").join(tool))
        .find(|p| p.exists())
        .with_context(|| format!("PostgreSQL tool {tool} not found"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A PostgreSQL tool, run as the `postgres` user when we are root (initdb refuses root).
fn pg_tool(tool: &str) -> anyhow::Result<Command> {
    let path = pg_bin(tool)?;
    let mut c = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    };
    c.current_dir("/");
    Ok(c)
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

impl PrivatePostgres {
    /// Starts one for a test (`fsync` off: faster, nothing survives a machine crash anyway);
    /// panics when it cannot.
    pub fn new() -> Self {
        Self::start(false).expect("private PostgreSQL starts")
    }

    /// One with `ssl = on`, presenting `cert` with its `key` (PEM files, e.g. from
    /// [`crate::TestPki`]); plain connections are still accepted. Panics when it cannot start.
    pub fn with_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with(false, Some((cert, key))).expect("private PostgreSQL with TLS starts")
    }

    /// `initdb` in a fresh folder under /var/tmp, start on a free port, create `engage`.
    /// `fsync` on for runs that kill the server and audit what survived (chaos).
    pub fn start(fsync: bool) -> anyhow::Result<Self> {
        Self::start_with(fsync, None)
    }

    /// As [`Self::start`], with TLS when `tls` names a certificate and key.
    pub fn start_with(fsync: bool, tls: Option<(&Path, &Path)>) -> anyhow::Result<Self> {
        let port = crate::free_port();
        let dir = PathBuf::from(format!("/var/tmp/engage-pg-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            let mut c = Command::new("chown");
            c.args(["-R", "postgres:postgres"]).arg(&dir);
            run(c, "chown")?;
        }
        let mut init = pg_tool("initdb")?;
        init.arg("-D").arg(dir.join("data")).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ]);
        run(init, "initdb")?;
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 200\nsynchronous_commit = on\nfsync = {}\n",
            dir.display(),
            if fsync { "on" } else { "off" }
        );
        if let Some((cert, key)) = tls {
            conf.push_str(&tls_files(&dir, cert, key)?);
        }
        let conf_path = dir.join("data/postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path)?;
        text.push_str(&conf);
        std::fs::write(&conf_path, text)?;
        let pg = Self {
            port,
            dir,
            kept: false.into(),
        };
        pg.start_server()?;
        let mut create = Command::new("psql");
        create
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
            .args(["-qc", "CREATE DATABASE engage"]);
        run(create, "CREATE DATABASE engage")?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:<port>/engage`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/engage", self.port)
    }

    /// [`Self::url`] with a query, e.g. `sslmode=require`.
    pub fn url_with(&self, query: &str) -> String {
        format!("{}?{query}", self.url())
    }

    /// `sslmode=verify-full` with `sslrootcert=<ca>` (a server started [`Self::with_tls`]):
    /// what `TestEnv::on` takes for an environment whose PostgreSQL traffic is all TLS.
    pub fn verify_full_url(&self, ca: &Path) -> String {
        self.url_with(&format!("sslmode=verify-full&sslrootcert={}", ca.display()))
    }

    /// `pg_ctl start`, waiting until it accepts connections.
    pub fn start_server(&self) -> anyhow::Result<()> {
        let mut c = pg_tool("pg_ctl")?;
        c.arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        run(c, "pg_ctl start")
    }

    /// Appends `name = value` to `postgresql.conf` (the last setting of a name wins): for
    /// settings that take a restart, such as `max_connections`.
    pub fn set_conf(&self, name: &str, value: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("data/postgresql.conf"))
            .expect("postgresql.conf");
        writeln!(f, "{name} = {value}").expect("append to postgresql.conf");
    }

    /// `pg_ctl stop -m fast`.
    pub fn stop_server(&self) -> anyhow::Result<()> {
        let mut c = pg_tool("pg_ctl")?;
        c.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w", "stop"]);
        run(c, "pg_ctl stop")
    }

    /// Makes sure the server runs (thawed, started if stopped).
    pub fn ensure_running(&self) {
        self.thaw();
        let ready = pg_bin("pg_isready").is_ok_and(|bin| {
            Command::new(bin)
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        });
        if !ready {
            let _ = self.start_server();
        }
    }

    /// The postmaster and all its children (backends, checkpointer, walwriter…).
    pub fn pids(&self) -> anyhow::Result<Vec<u32>> {
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

    /// SIGSTOP to every process: connections stay open, nothing answers.
    pub fn freeze(&self) {
        signal(&self.pids().unwrap_or_default(), "STOP");
    }

    /// SIGCONT to every process.
    pub fn thaw(&self) {
        signal(&self.pids().unwrap_or_default(), "CONT");
    }

    /// Leaves the cluster's folder (data directory `data/`, log `server.log`) in place when
    /// dropped, for a post-mortem (`pg_ctl -D <folder>/data start`); returns the folder.
    pub fn keep(&self) -> &Path {
        self.kept.store(true, Ordering::Relaxed);
        &self.dir
    }
}

impl Default for PrivatePostgres {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // A frozen server cannot stop: thaw it first.
        self.thaw();
        if let Ok(mut c) = pg_tool("pg_ctl") {
            c.arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = run(c, "pg_ctl stop");
        }
        if !self.kept.load(Ordering::Relaxed) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Copies the certificate and key into the server's folder, the key readable by the server
/// user only (PostgreSQL refuses a key others can read); the `ssl*` settings using them.
fn tls_files(dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let (cert_to, key_to) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::copy(cert, &cert_to).context("copy server certificate")?;
    std::fs::copy(key, &key_to).context("copy server key")?;
    std::fs::set_permissions(&key_to, std::fs::Permissions::from_mode(0o600))?;
    if is_root() {
        let mut c = Command::new("chown");
        c.arg("postgres:postgres").arg(&cert_to).arg(&key_to);
        run(c, "chown server key")?;
    }
    Ok(format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        cert_to.display(),
        key_to.display()
    ))
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
pub fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
}
