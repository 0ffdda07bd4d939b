//! TLS to Redis (`rediss://`), for the service and the voice Redis, standalone and cluster:
//! the trusted CA (a PEM bundle, else the system roots), the voice secret's
//! `rejectUnauthorized`, and hints that turn a refused handshake into what to fix
//! (docs/tls.md#redis).

use redis::{
    Client, ConnectionAddr, ConnectionInfo, RedisError, RedisResult, TlsCertificates, TlsMode,
    cluster::ClusterClientBuilder,
};
use rustls::pki_types::{CertificateDer, pem::PemObject};

/// The TLS settings of one Redis role, resolved once with the configuration.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// PEM of the CA bundle that signs the servers' certificates; `None` = the system roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The variable that sets (or would set) the CA, named in hints (`REDIS_TLS_CA_FILE`).
    pub ca_var: &'static str,
    /// The variable holding the URL, named in hints (`REDIS_URL`).
    pub url_var: &'static str,
    /// No certificate verification at all (the voice secret's `rejectUnauthorized: false`).
    pub insecure: bool,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca_pem_bytes", &self.ca_pem.as_ref().map(Vec::len))
            .field("ca_var", &self.ca_var)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Selects rustls's `ring` provider for the whole process, once. rustls refuses to choose when
/// a build enables two providers (the AWS SDK brings `aws-lc-rs`), so every process that may
/// open a TLS connection calls this first; later calls are no-ops.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether a Redis URL asks for TLS.
pub fn is_tls_url(url: &str) -> bool {
    url.trim().to_ascii_lowercase().starts_with("rediss://")
}

/// The certificates in a PEM bundle, or why there are none (`what` names the source).
pub fn parse_ca(pem: &[u8], what: &str) -> Result<Vec<u8>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} holds no certificate (expected one or more -----BEGIN CERTIFICATE----- blocks)"
        ));
    }
    Ok(pem.to_vec())
}

/// A standalone client for `info` with the role's TLS settings (plain when the URL is
/// `redis://`).
pub fn client(info: ConnectionInfo, tls: &RedisTls) -> RedisResult<Client> {
    let ConnectionAddr::TcpTls {
        host,
        port,
        insecure,
        tls_params,
    } = info.addr().clone()
    else {
        return Client::open(info);
    };
    let info = info.set_addr(ConnectionAddr::TcpTls {
        host,
        port,
        insecure: insecure || tls.insecure,
        tls_params,
    });
    match &tls.ca_pem {
        Some(pem) => Client::build_with_tls(info, certificates(pem)),
        None => Client::open(info),
    }
}

/// Applies the role's TLS settings to a cluster client whose nodes are `rediss://`.
pub fn cluster(
    b: ClusterClientBuilder,
    tls: &RedisTls,
    insecure_url: bool,
) -> ClusterClientBuilder {
    let b = match &tls.ca_pem {
        Some(pem) => b.certs(certificates(pem)),
        None => b,
    };
    b.tls(if tls.insecure || insecure_url {
        TlsMode::Insecure
    } else {
        TlsMode::Secure
    })
}

fn certificates(pem: &[u8]) -> TlsCertificates {
    TlsCertificates {
        client_tls: None,
        root_cert: Some(pem.to_vec()),
    }
}

/// Whether a parsed URL connects without verifying the server (`#insecure`).
pub fn url_is_insecure(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { insecure: true, .. })
}

/// The error text of a connection over TLS with what to fix: an untrusted certificate names
/// the CA variable, a host name mismatch the URL variable, a server that does not speak TLS
/// (an alert, or no answer at all) the scheme (docs/tls.md#redis).
pub fn explain(err: &RedisError, tls: &RedisTls) -> String {
    let text = err.to_string();
    let hint = if text.contains("UnknownIssuer") || text.contains("BadSignature") {
        let ca = if tls.ca_pem.is_some() {
            format!("the CA in {} did not sign it", tls.ca_var)
        } else {
            format!(
                "set {} to the PEM file of the CA that signed it",
                tls.ca_var
            )
        };
        format!("TLS: the Redis server's certificate is not trusted ({ca})")
    } else if text.contains("not valid for name") || text.contains("NotValidForName") {
        format!(
            "TLS: host name mismatch: the Redis server's certificate does not name the host in {}; \
             connect by a name (or IP) the certificate carries",
            tls.url_var
        )
    } else if text.contains("InvalidContentType") || text.contains("corrupt message") {
        format!(
            "TLS: the server at {} does not speak TLS (use redis://, or enable TLS on the server)",
            tls.url_var
        )
    } else if text.contains("timed out") {
        // A plain Redis reads a TLS hello as the start of a command and never answers it.
        format!(
            "TLS: no answer from the server at {} (if it persists: does the server speak TLS on \
             that port? a Redis without TLS never answers the handshake)",
            tls.url_var
        )
    } else {
        return text;
    };
    format!("{hint}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_without_certificates_is_refused() {
        let err = parse_ca(b"hello", "REDIS_TLS_CA_FILE").unwrap_err();
        assert!(
            err.contains("REDIS_TLS_CA_FILE holds no certificate"),
            "{err}"
        );
        let bad = b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = parse_ca(bad, "X").unwrap_err();
        assert!(err.starts_with("X is not a PEM"), "{err}");
    }

    #[test]
    fn schemes_are_told_apart() {
        assert!(is_tls_url(" rediss://h:1"));
        assert!(is_tls_url("REDISS://h:1"));
        assert!(!is_tls_url("redis://h:1"));
    }

    #[test]
    fn hints_name_what_to_fix() {
        let tls = RedisTls {
            ca_var: "VOICE_REDIS_TLS_CA_FILE",
            url_var: "VOICE_REDIS_URL",
            ..RedisTls::default()
        };
        let io = |m: &str| RedisError::from(std::io::Error::other(m.to_string()));
        let e = explain(&io("invalid peer certificate: UnknownIssuer"), &tls);
        assert!(e.contains("set VOICE_REDIS_TLS_CA_FILE"), "{e}");
        let e = explain(
            &io("invalid peer certificate: certificate not valid for name \"localhost\""),
            &tls,
        );
        assert!(
            e.contains("host name mismatch") && e.contains("VOICE_REDIS_URL"),
            "{e}"
        );
        assert_eq!(
            explain(&io("connection refused"), &tls),
            "connection refused"
        );
    }
}
