//! The connector of every PostgreSQL connection (rustls via `tokio-postgres-rustls`), whose
//! handshake refusals are rewritten into what to fix (docs/tls.md#errors): an untrusted
//! certificate names the CA setting, a host-name mismatch names the host and `verify-ca`.

use std::{error::Error as StdError, fmt, future::Future, pin::Pin, sync::Arc};

use rustls::CertificateError;
use tokio_postgres::{
    Socket,
    tls::{MakeTlsConnect, TlsConnect},
};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::{DbTls, SslMode, Verify};

type BoxError = Box<dyn StdError + Send + Sync>;
type Inner = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// What a refusal message needs to know of the settings.
#[derive(Debug)]
pub(super) struct Hint {
    pub(super) mode: SslMode,
    /// Where the trusted CAs come from (none when nothing is verified).
    pub(super) origin: Option<String>,
}

/// The `MakeTlsConnect` of the pool (and of the test harness): rustls with the verification of
/// the configured `sslmode`.
#[derive(Clone)]
pub struct Connector {
    inner: MakeRustlsConnect,
    hint: Arc<Hint>,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// Builds the connector of `tls` (loading the system roots when they are used).
pub fn connector(tls: &DbTls) -> anyhow::Result<Connector> {
    let origin = match &tls.verify {
        Verify::Nothing => None,
        Verify::Chain(roots) | Verify::Full(roots) => Some(roots.origin.clone()),
    };
    Ok(Connector {
        inner: MakeRustlsConnect::new(super::verify::client_config(&tls.verify)?),
        hint: Arc::new(Hint {
            mode: tls.mode,
            origin,
        }),
    })
}

impl MakeTlsConnect<Socket> for Connector {
    type Stream = Stream;
    type TlsConnect = Connect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, host: &str) -> Result<Connect, Self::Error> {
        Ok(Connect {
            inner: MakeTlsConnect::<Socket>::make_tls_connect(&mut self.inner, host)?,
            host: host.to_string(),
            hint: self.hint.clone(),
        })
    }
}

/// One handshake.
pub struct Connect {
    inner: Inner,
    host: String,
    hint: Arc<Hint>,
}

impl TlsConnect<Socket> for Connect {
    type Stream = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let Connect { inner, host, hint } = self;
        let handshake = inner.connect(stream);
        Box::pin(async move {
            handshake
                .await
                .map_err(|e| refine(Box::new(e), &host, &hint))
        })
    }
}

/// A handshake refused by our side, with what to fix.
#[derive(Debug)]
pub struct TlsRefused(pub String);

impl fmt::Display for TlsRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for TlsRefused {}

/// A handshake error as [`TlsRefused`] when rustls refused it (other errors, e.g. the
/// connection cut, are kept as they are).
fn refine(e: BoxError, host: &str, hint: &Hint) -> BoxError {
    let tls = e
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(tls) => Box::new(TlsRefused(message(tls, host, hint))),
        None => e,
    }
}

/// What an operator reads for `e` on `host`: the cause and the setting to change.
pub(super) fn message(e: &rustls::Error, host: &str, hint: &Hint) -> String {
    let mode = hint.mode.as_str();
    let origin = hint.origin.as_deref().unwrap_or("no CA");
    let rustls::Error::InvalidCertificate(cert) = e else {
        return format!("TLS handshake with PostgreSQL at {host} failed (sslmode={mode}): {e}");
    };
    match cert {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            let names = match cert {
                CertificateError::NotValidForNameContext { presented, .. } => {
                    let plain: Vec<&str> = presented.iter().map(|p| bare_name(p)).collect();
                    format!(" (it names {})", plain.join(", "))
                }
                _ => String::new(),
            };
            format!(
                "PostgreSQL's certificate does not match the host name {host}{names} \
                 (sslmode={mode}): connect with a host name the certificate lists, or use \
                 sslmode=verify-ca, which checks the CA but skips the host name check"
            )
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => format!(
            "PostgreSQL's certificate at {host} is outside its validity period ({e}): renew \
             it, or check this machine's clock"
        ),
        _ => format!(
            "PostgreSQL's certificate at {host} is not trusted (sslmode={mode}): {e}; it must \
             be issued by a CA in {origin}: set sslrootcert in DATABASE_URL (or \
             DATABASE_TLS_CA_FILE, or the secret DB-CA-CERT) to the CA that issued it"
        ),
    }
}

/// `not-this.example` of rustls' `DnsName("not-this.example")` (`IpAddress(…)` alike).
pub(super) fn bare_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
}

/// A failed first connection as said at start: a refused handshake by itself, a server
/// without TLS with what to change, anything else with its cause.
pub fn explain(e: deadpool_postgres::PoolError) -> anyhow::Error {
    let mut source: Option<&(dyn StdError + 'static)> = Some(&e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<TlsRefused>() {
            return anyhow::anyhow!("cannot connect to PostgreSQL: {refused}");
        }
        if s.to_string() == "server does not support TLS" {
            return anyhow::anyhow!(
                "cannot connect to PostgreSQL: the server does not support TLS, but DATABASE_URL \
                 requires it (sslmode=require, verify-ca or verify-full): turn ssl on at the \
                 server, or set sslmode=prefer (TLS when offered) or sslmode=disable"
            );
        }
        source = s.source();
    }
    anyhow::Error::new(e).context("cannot connect to PostgreSQL")
}
