//! Unit tests of the TLS settings: `sslmode`/`sslrootcert` in both connection-string forms,
//! the CA sources and their precedence, and the configuration errors.

use super::{DbTls, SslMode, Verify, params::split, without_tls_params};
use crate::Config;

/// A CA certificate (the bytes need not be a valid certificate: only the PEM framing is read).
const PEM: &str = "-----BEGIN CERTIFICATE-----\nAQIDBA==\n-----END CERTIFICATE-----\n";

fn tls(url: &str) -> Result<DbTls, String> {
    DbTls::from_settings(url, None, None)
}

fn origin(v: &Verify) -> &str {
    match v {
        Verify::Nothing => "",
        Verify::Chain(r) | Verify::Full(r) => &r.origin,
    }
}

fn ca_file() -> TempFile {
    TempFile::new(PEM)
}

/// A file removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(text: &str) -> Self {
        let p = std::env::temp_dir().join(format!("engage-ca-{}.pem", uuid::Uuid::new_v4()));
        std::fs::write(&p, text).expect("write temp file");
        Self(p)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn url_params_are_taken_out_and_the_rest_kept() {
    let s = split("postgres://u:p@h:5/d?application_name=x&sslmode=verify-full&sslrootcert=%2Fa%20b.pem&connect_timeout=3").unwrap();
    assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
    assert_eq!(s.sslrootcert.as_deref(), Some("/a b.pem"));
    assert_eq!(
        s.rest,
        "postgres://u:p@h:5/d?application_name=x&connect_timeout=3"
    );
    let s = split("postgresql://h/d?sslmode=require").unwrap();
    assert_eq!(
        (s.rest.as_str(), s.sslmode.as_deref()),
        ("postgresql://h/d", Some("require"))
    );
    assert_eq!(split("postgres://h/d").unwrap().sslmode, None);
    assert!(
        split("postgres://h/d?sslrootcert=%zz")
            .unwrap_err()
            .contains("hex")
    );
}

#[test]
fn key_value_params_are_taken_out_with_quotes_and_escapes() {
    let s = split("host=h  sslmode = verify-ca sslrootcert='/my ca\\'s.pem' dbname=d").unwrap();
    assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
    assert_eq!(s.sslrootcert.as_deref(), Some("/my ca's.pem"));
    assert_eq!(s.rest, "host=h dbname=d");
    assert!(
        split("host=h sslmode")
            .unwrap_err()
            .contains("expected '='")
    );
    assert!(split("host='h").unwrap_err().contains("not closed"));
    let pg: tokio_postgres::Config = without_tls_params("host=h sslmode=verify-full user=u")
        .parse()
        .unwrap();
    assert_eq!(pg.get_user(), Some("u"));
}

#[test]
fn modes_resolve_to_what_libpq_verifies() {
    let t = tls("postgres://h/d").unwrap();
    assert_eq!(t.mode, SslMode::Prefer);
    assert!(matches!(t.verify, Verify::Nothing));
    for (mode, wire) in [
        ("disable", tokio_postgres::config::SslMode::Disable),
        ("prefer", tokio_postgres::config::SslMode::Prefer),
        ("require", tokio_postgres::config::SslMode::Require),
        ("verify-ca", tokio_postgres::config::SslMode::Require),
        ("verify-full", tokio_postgres::config::SslMode::Require),
    ] {
        let t = tls(&format!("postgres://h/d?sslmode={mode}")).unwrap();
        assert_eq!((t.mode.as_str(), t.mode.wire()), (mode, wire));
    }
    assert!(matches!(
        tls("postgres://h/d?sslmode=require").unwrap().verify,
        Verify::Nothing
    ));
    let ca = tls("postgres://h/d?sslmode=verify-ca").unwrap();
    assert!(matches!(&ca.verify, Verify::Chain(r) if r.certs.is_none()));
    assert!(origin(&ca.verify).contains("system"));
    let full = tls("postgres://h/d?sslmode=verify-full").unwrap();
    assert!(matches!(&full.verify, Verify::Full(r) if r.certs.is_none()));
}

#[test]
fn require_with_a_root_certificate_verifies_the_chain_like_libpq() {
    let f = ca_file();
    let url = format!(
        "postgres://h/d?sslmode=require&sslrootcert={}",
        f.0.display()
    );
    let t = tls(&url).unwrap();
    assert!(matches!(&t.verify, Verify::Chain(r) if r.certs.as_ref().unwrap().len() == 1));
    assert!(origin(&t.verify).starts_with("sslrootcert /"));
    // prefer and disable never verify, even with a CA given (nor read it).
    let t = tls("postgres://h/d?sslmode=prefer&sslrootcert=/nonexistent.pem").unwrap();
    assert!(matches!(t.verify, Verify::Nothing));
}

#[test]
fn ca_sources_take_precedence_in_order() {
    let (a, b) = (ca_file(), ca_file());
    let url = format!(
        "postgres://h/d?sslmode=verify-full&sslrootcert={}",
        a.0.display()
    );
    let t = DbTls::from_settings(&url, Some(&b.0), Some(PEM)).unwrap();
    assert!(origin(&t.verify).starts_with("sslrootcert "));
    let url = "postgres://h/d?sslmode=verify-full";
    let t = DbTls::from_settings(url, Some(&b.0), Some(PEM)).unwrap();
    assert!(origin(&t.verify).starts_with("DATABASE_TLS_CA_FILE "));
    let t = DbTls::from_settings(url, None, Some(PEM)).unwrap();
    assert!(origin(&t.verify).starts_with("DB_CA_CERT"));
}

#[test]
fn sslrootcert_system_means_verify_full_with_the_system_roots() {
    let t = tls("postgres://h/d?sslrootcert=system").unwrap();
    assert_eq!(t.mode, SslMode::VerifyFull);
    assert!(matches!(&t.verify, Verify::Full(r) if r.certs.is_none()));
    let e = tls("postgres://h/d?sslrootcert=system&sslmode=require").unwrap_err();
    assert!(
        e.contains("sslrootcert=system needs sslmode=verify-full"),
        "{e}"
    );
}

#[test]
fn bad_settings_are_refused_naming_what_to_fix() {
    let e = tls("postgres://h/d?sslmode=verify_full").unwrap_err();
    assert!(e.contains("sslmode \"verify_full\" is not one of"), "{e}");
    let e = tls("postgres://h/d?sslmode=allow").unwrap_err();
    assert!(e.contains("sslmode=allow is not supported"), "{e}");
    let e = tls("postgres://h/d?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem").unwrap_err();
    assert!(
        e.contains("sslrootcert /nonexistent/ca.pem: cannot read the file"),
        "{e}"
    );
    let junk = TempFile::new("not a certificate\n");
    let e =
        DbTls::from_settings("postgres://h/d?sslmode=verify-ca", Some(&junk.0), None).unwrap_err();
    assert!(e.contains("holds no PEM certificate"), "{e}");
    assert!(e.starts_with("DATABASE_TLS_CA_FILE "), "{e}");
    let e =
        DbTls::from_settings("postgres://h/d?sslmode=verify-full", None, Some("x")).unwrap_err();
    assert!(
        e.contains("DB_CA_CERT (secret DB-CA-CERT) holds no PEM"),
        "{e}"
    );
}

#[test]
fn the_configuration_reads_the_tls_settings_once_and_validates_them() {
    let vars = |url: &str, extra: &[(&str, &str)]| {
        let mut v = vec![("DATABASE_URL".to_string(), url.to_string())];
        v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.to_string())));
        v
    };
    let cfg = Config::from_vars(vars(
        "postgres://u@h/d?sslmode=verify-full&application_name=a",
        &[],
    ))
    .unwrap();
    assert_eq!(cfg.db.tls.mode, SslMode::VerifyFull);
    let pg = cfg.db.pg_config().unwrap();
    assert_eq!(pg.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
    let e = Config::from_vars(vars("postgres://u@h/d?sslmode=bogus", &[])).unwrap_err();
    assert!(e.to_string().contains("sslmode \"bogus\""), "{e}");
    let e = Config::from_vars(vars(
        "postgres://u@h/d?sslmode=verify-ca",
        &[("DATABASE_TLS_CA_FILE", "/nonexistent/ca.pem")],
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("DATABASE_TLS_CA_FILE /nonexistent/ca.pem"),
        "{e}"
    );
    // A secret folder's DB-CA-CERT file is the PEM itself.
    let dir = std::env::temp_dir().join(format!("engage-secrets-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("DB-CA-CERT"), PEM).unwrap();
    let cfg = Config::from_vars(vars(
        "postgres://u@h/d?sslmode=verify-ca",
        &[("CONFIG_FOLDERS", dir.to_str().unwrap())],
    ))
    .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(origin(&cfg.db.tls.verify).starts_with("DB_CA_CERT"));
}

#[test]
fn refusals_say_what_to_fix() {
    use super::connect::{Hint, bare_name, message};
    use rustls::{CertificateError, Error};
    let hint = Hint {
        mode: SslMode::VerifyFull,
        origin: Some("sslrootcert /ca.pem".into()),
    };
    let m = message(
        &Error::InvalidCertificate(CertificateError::UnknownIssuer),
        "db",
        &hint,
    );
    assert!(
        m.contains("PostgreSQL's certificate at db is not trusted (sslmode=verify-full)"),
        "{m}"
    );
    assert!(m.contains("issued by a CA in sslrootcert /ca.pem"), "{m}");
    let m = message(
        &Error::InvalidCertificate(CertificateError::NotValidForName),
        "db",
        &hint,
    );
    assert!(
        m.contains("does not match the host name db (sslmode=verify-full)"),
        "{m}"
    );
    assert!(m.contains("sslmode=verify-ca"), "{m}");
    let m = message(
        &Error::InvalidCertificate(CertificateError::Expired),
        "db",
        &hint,
    );
    assert!(m.contains("at db is outside its validity period"), "{m}");
    let m = message(&Error::DecryptError, "db", &hint);
    assert!(
        m.starts_with("TLS handshake with PostgreSQL at db failed (sslmode=verify-full)"),
        "{m}"
    );
    assert_eq!(bare_name("DnsName(\"db.example\")"), "db.example");
    assert_eq!(bare_name("IpAddress(10.0.0.1)"), "10.0.0.1");
    assert_eq!(bare_name("plain"), "plain");
}

#[test]
fn a_connector_builds_for_every_verification_and_refuses_an_unusable_ca() {
    for url in [
        "postgres://h/d?sslmode=disable",
        "postgres://h/d?sslmode=prefer",
        "postgres://h/d?sslmode=require",
        "postgres://h/d?sslmode=verify-ca",
        "postgres://h/d?sslmode=verify-full",
    ] {
        assert!(super::connector(&tls(url).unwrap()).is_ok(), "{url}");
    }
    // `PEM` is framed like a certificate but is no X.509 certificate: refused at start.
    let f = ca_file();
    let url = format!(
        "postgres://h/d?sslmode=verify-ca&sslrootcert={}",
        f.0.display()
    );
    let e = format!("{:#}", super::connector(&tls(&url).unwrap()).unwrap_err());
    assert!(
        e.contains(&format!(
            "sslrootcert {}: a certificate is not usable",
            f.0.display()
        )),
        "{e}"
    );
}
