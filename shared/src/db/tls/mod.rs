//! TLS to PostgreSQL (docs/tls.md#postgresql): libpq's `sslmode` and `sslrootcert` taken out
//! of `DATABASE_URL` (tokio-postgres itself knows `sslmode` only up to `require`), the trusted
//! CAs (`sslrootcert`, `DATABASE_TLS_CA_FILE`, the secret `DB-CA-CERT`, else the system's),
//! all read once with the configuration; [`connector`] is the rustls connector every
//! connection uses, and its refusals say what to fix.

mod connect;
mod params;
mod verify;

use std::path::Path;

pub use connect::{Connector, TlsRefused, connector, explain};
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// libpq's `sslmode` (docs/tls.md#sslmode); `allow` is not supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it, without verification (libpq's default, and ours).
    Prefer,
    /// TLS or no connection; the certificate is checked against a CA only when one is given.
    Require,
    /// TLS; the certificate must chain to a trusted CA (any host name).
    VerifyCa,
    /// TLS; the certificate must chain to a trusted CA and name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<Self, String> {
        Ok(match value {
            "disable" => Self::Disable,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            "allow" => {
                return Err(
                    "DATABASE_URL: sslmode=allow is not supported: use disable, prefer, \
                            require, verify-ca or verify-full"
                        .into(),
                );
            }
            other => {
                return Err(format!(
                    "DATABASE_URL: sslmode {other:?} is not one of disable, prefer, require, \
                     verify-ca, verify-full"
                ));
            }
        })
    }

    /// The value as written in a connection string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disable => "disable",
            Self::Prefer => "prefer",
            Self::Require => "require",
            Self::VerifyCa => "verify-ca",
            Self::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether it is mandatory.
    pub(crate) fn wire(self) -> tokio_postgres::config::SslMode {
        use tokio_postgres::config::SslMode as Wire;
        match self {
            Self::Disable => Wire::Disable,
            Self::Prefer => Wire::Prefer,
            Self::Require | Self::VerifyCa | Self::VerifyFull => Wire::Require,
        }
    }
}

/// The CAs a server certificate must chain to.
#[derive(Debug, Clone)]
pub struct Roots {
    /// Where they come from, for messages (`sslrootcert /etc/ca.pem`, `the system's root
    /// certificates`, …).
    pub origin: String,
    /// The certificates; `None` = the system's (loaded when the connector is built).
    pub certs: Option<Vec<CertificateDer<'static>>>,
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone)]
pub enum Verify {
    /// Nothing: the connection is encrypted, the server unauthenticated.
    Nothing,
    /// The chain up to `Roots`, not the host name (`verify-ca`, or `require` with a CA).
    Chain(Roots),
    /// The chain and the host name (`verify-full`).
    Full(Roots),
}

/// The TLS settings of the PostgreSQL connections, validated at start.
#[derive(Debug, Clone)]
pub struct DbTls {
    /// The `sslmode` (default `prefer`, as libpq).
    pub mode: SslMode,
    /// What is verified, resolved from the mode and the CAs given.
    pub verify: Verify,
}

impl Default for DbTls {
    fn default() -> Self {
        Self {
            mode: SslMode::Prefer,
            verify: Verify::Nothing,
        }
    }
}

impl DbTls {
    /// Reads `sslmode`/`sslrootcert` of `url` and the CA given by file or secret (in this
    /// order of precedence: `sslrootcert`, `ca_file`, `ca_pem`), reading CA files now when
    /// the mode verifies (`disable` and `prefer` read none, as libpq).
    pub fn from_settings(
        url: &str,
        ca_file: Option<&Path>,
        ca_pem: Option<&str>,
    ) -> Result<Self, String> {
        let split = params::split(url)?;
        let system = split.sslrootcert.as_deref() == Some("system");
        let mode = match split.sslmode.as_deref() {
            Some(m) => SslMode::parse(m)?,
            // libpq: sslrootcert=system makes verify-full the default.
            None if system => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system && mode != SslMode::VerifyFull {
            return Err(format!(
                "DATABASE_URL: sslrootcert=system needs sslmode=verify-full (not {})",
                mode.as_str()
            ));
        }
        let system_roots = || Roots {
            origin: "the system's root certificates (no sslrootcert, DATABASE_TLS_CA_FILE or \
                     DB-CA-CERT given)"
                .into(),
            certs: None,
        };
        let verify = match mode {
            SslMode::Disable | SslMode::Prefer => Verify::Nothing,
            SslMode::Require => match given_roots(split.sslrootcert, ca_file, ca_pem)? {
                Some(roots) => Verify::Chain(roots),
                None => Verify::Nothing,
            },
            SslMode::VerifyCa => Verify::Chain(
                given_roots(split.sslrootcert, ca_file, ca_pem)?.unwrap_or_else(system_roots),
            ),
            SslMode::VerifyFull => Verify::Full(
                given_roots(split.sslrootcert, ca_file, ca_pem)?.unwrap_or_else(system_roots),
            ),
        };
        Ok(Self { mode, verify })
    }
}

/// `url` without `sslmode` and `sslrootcert`, for tokio-postgres (unchanged when it cannot be
/// split: tokio-postgres then reports what is wrong with it).
pub fn without_tls_params(url: &str) -> String {
    params::split(url).map_or_else(|_| url.to_string(), |s| s.rest)
}

/// The CAs given (read now), in order of precedence; `None` = none given (or `system`).
fn given_roots(
    sslrootcert: Option<String>,
    ca_file: Option<&Path>,
    ca_pem: Option<&str>,
) -> Result<Option<Roots>, String> {
    Ok(match (sslrootcert, ca_file, ca_pem) {
        (Some(p), _, _) if p == "system" => None,
        (Some(p), _, _) => Some(file_roots(Path::new(&p), &format!("sslrootcert {p}"))?),
        (None, Some(f), _) => Some(file_roots(
            f,
            &format!("DATABASE_TLS_CA_FILE {}", f.display()),
        )?),
        (None, None, Some(pem)) => Some(Roots {
            certs: Some(parse_pem(pem.as_bytes(), "DB_CA_CERT (secret DB-CA-CERT)")?),
            origin: "DB_CA_CERT (secret DB-CA-CERT)".into(),
        }),
        (None, None, None) => None,
    })
}

fn file_roots(path: &Path, origin: &str) -> Result<Roots, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{origin}: cannot read the file: {e}"))?;
    Ok(Roots {
        certs: Some(parse_pem(&bytes, origin)?),
        origin: origin.to_string(),
    })
}

/// The certificates of a PEM bundle (other PEM sections are skipped); at least one.
fn parse_pem(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{origin} is not a valid PEM bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{origin} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests;
