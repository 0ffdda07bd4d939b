//! Certificates generated at test time (`rcgen`), for servers run with TLS by the harness
//! (PostgreSQL: `PrivatePostgres::with_tls`; Redis reuses the same files): a test CA, a server
//! certificate for `localhost` and `127.0.0.1` signed by it, a certificate signed by the same
//! CA for a name no test connects to, an expired one for the right names, and a second,
//! unrelated CA. Nothing is committed: each test gets fresh keys in its own folder, removed
//! when the [`TestPki`] is dropped.

use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The name the wrong-name certificate is issued for (no test connects to it).
pub const WRONG_NAME: &str = "not-this-server.invalid";

/// PEM files of one test's certificates, in a folder of their own.
#[derive(Debug)]
pub struct TestPki {
    /// The folder holding every file below (removed on drop).
    pub dir: PathBuf,
    /// The test CA's certificate (what clients trust).
    pub ca_pem_path: PathBuf,
    /// Another CA, which signed nothing the servers present.
    pub wrong_ca_pem_path: PathBuf,
    /// Server certificate for `localhost` and `127.0.0.1`, signed by the test CA.
    pub server_cert_path: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub server_key_path: PathBuf,
    /// Server certificate for [`WRONG_NAME`] only, signed by the test CA.
    pub wrong_name_cert_path: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub wrong_name_key_path: PathBuf,
    /// Server certificate for `localhost` and `127.0.0.1`, signed by the test CA, expired
    /// (valid in 2020 only).
    pub expired_cert_path: PathBuf,
    /// Its private key (PKCS#8 PEM).
    pub expired_key_path: PathBuf,
}

impl TestPki {
    /// Generates the certificates into a fresh folder under the temp dir; panics when it cannot.
    pub fn new() -> Self {
        Self::generate().expect("test certificates generated")
    }

    fn generate() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "engage-pki-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        ));
        std::fs::create_dir_all(&dir)?;
        let ca = new_ca("Engage test CA")?;
        let wrong_ca = new_ca("Engage unrelated CA")?;
        let pki = Self {
            ca_pem_path: dir.join("ca.pem"),
            wrong_ca_pem_path: dir.join("wrong-ca.pem"),
            server_cert_path: dir.join("server.pem"),
            server_key_path: dir.join("server.key"),
            wrong_name_cert_path: dir.join("wrong-name.pem"),
            wrong_name_key_path: dir.join("wrong-name.key"),
            expired_cert_path: dir.join("expired.pem"),
            expired_key_path: dir.join("expired.key"),
            dir,
        };
        write(&pki.ca_pem_path, &ca.pem())?;
        write(&pki.wrong_ca_pem_path, &wrong_ca.pem())?;
        let (cert, key) = leaf(&["localhost", "127.0.0.1"], &ca)?;
        write(&pki.server_cert_path, &cert)?;
        write(&pki.server_key_path, &key)?;
        let (cert, key) = leaf(&[WRONG_NAME], &ca)?;
        write(&pki.wrong_name_cert_path, &cert)?;
        write(&pki.wrong_name_key_path, &key)?;
        let (cert, key) = expired_leaf(&["localhost", "127.0.0.1"], &ca)?;
        write(&pki.expired_cert_path, &cert)?;
        write(&pki.expired_key_path, &key)?;
        Ok(pki)
    }

    /// A path as a string (for URLs and variables).
    pub fn path(p: &Path) -> String {
        p.display().to_string()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, pem: &str) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("write {}", path.display()))
}

/// A server certificate for `names` signed by `ca`, valid in 2020 only.
fn expired_leaf(
    names: &[&str],
    ca: &CertifiedIssuer<'_, KeyPair>,
) -> anyhow::Result<(String, String)> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A self-signed CA that may sign server certificates.
fn new_ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

/// A server certificate for `names` (IP addresses become IP SANs), signed by `ca`;
/// (certificate PEM, key PEM).
fn leaf(names: &[&str], ca: &CertifiedIssuer<'_, KeyPair>) -> anyhow::Result<(String, String)> {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, names[0]);
    // Client auth too: Redis cluster nodes present their own certificate on the TLS cluster bus.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, ca)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The TLS files of a server the harness runs (Redis): its certificate and key, and the CA
/// it names to clients.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The test CA (PEM), also what `redis-cli` trusts.
    pub ca: PathBuf,
}

impl ServerTls {
    /// The certificate for `localhost` / `127.0.0.1` signed by the test CA.
    pub fn of(pki: &TestPki) -> Self {
        Self {
            cert: pki.server_cert_path.clone(),
            key: pki.server_key_path.clone(),
            ca: pki.ca_pem_path.clone(),
        }
    }

    /// The certificate for [`WRONG_NAME`] only, signed by the test CA.
    pub fn wrong_name(pki: &TestPki) -> Self {
        Self {
            cert: pki.wrong_name_cert_path.clone(),
            key: pki.wrong_name_key_path.clone(),
            ca: pki.ca_pem_path.clone(),
        }
    }

    /// `redis-server` arguments for these files (clients need no certificate).
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--tls-cert-file".into(),
            TestPki::path(&self.cert),
            "--tls-key-file".into(),
            TestPki::path(&self.key),
            "--tls-ca-cert-file".into(),
            TestPki::path(&self.ca),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }

    /// `redis-cli` arguments to reach such a server (no verification: the harness only checks
    /// that it runs; the binaries under test verify).
    pub fn cli_args(&self) -> Vec<String> {
        vec!["--tls".into(), "--insecure".into()]
    }

    /// Whether the TLS server on `port` answers a read.
    pub fn cli_answers(&self, port: u16) -> bool {
        std::process::Command::new("redis-cli")
            .args(self.cli_args())
            .args(["-p", &port.to_string(), "EXISTS", "x"])
            .stdin(std::process::Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && o.stdout.first().is_some_and(u8::is_ascii_digit))
    }
}
