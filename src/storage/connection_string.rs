//! `DATABASE_URL` as libpq reads it: a URL or `key=value` pairs, with the TLS options
//! (`sslmode`, `sslrootcert`) taken out and read with libpq's meanings, since tokio-postgres
//! knows only part of the first and none of the second (see [`super::tls`]). Errors never quote
//! the string, which may hold a password.

use std::{fmt, path::PathBuf};

/// The connection settings, and how to secure the connection. `sslmode` and `sslrootcert`
/// are taken out and read here, with libpq's meanings (see [`super::tls`]), since
/// tokio-postgres knows only part of the first and none of the second; the rest is
/// tokio-postgres's to read. Errors never quote the string, which may hold a password.
pub fn parse(url: &str) -> Result<(tokio_postgres::Config, TlsSettings), DatabaseUrlError> {
    let (rest, tls_options) = take_tls_options(url);
    let mut tls = TlsSettings::default();
    for (key, value) in tls_options {
        match key {
            TlsKey::SslMode => {
                tls.mode = value
                    .parse()
                    .map_err(|()| DatabaseUrlError::SslMode(value))?;
            }
            TlsKey::SslRootCert => tls.root_cert = Some(PathBuf::from(value)),
        }
    }
    let mut config: tokio_postgres::Config = rest.parse().map_err(DatabaseUrlError::Invalid)?;
    // PostgreSQL has no TLS on Unix sockets, and libpq ignores sslmode for them. A
    // connection string of only `hostaddr`s names no host at all, and goes over TCP.
    let only_sockets = config.get_hostaddrs().is_empty()
        && !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, tokio_postgres::config::Host::Unix(_)));
    if tls.mode == SslMode::VerifyFull && config.get_hosts().is_empty() {
        return Err(DatabaseUrlError::NoHostToVerify);
    }
    config.ssl_mode(match tls.mode {
        _ if only_sockets => tokio_postgres::config::SslMode::Disable,
        SslMode::Disable => tokio_postgres::config::SslMode::Disable,
        SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            tokio_postgres::config::SslMode::Require
        }
    });
    if only_sockets {
        tls.mode = SslMode::Disable;
    }
    Ok((config, tls))
}

/// Why `DATABASE_URL` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseUrlError {
    #[error(
        "sslmode {0:?} is not one of disable, prefer, require, verify-ca, verify-full \
         (libpq's allow, which tries without TLS first, is not supported)"
    )]
    SslMode(String),
    #[error(
        "sslmode=verify-full checks that the database's certificate names the host, so \
         DATABASE_URL needs a host name, not only hostaddr"
    )]
    NoHostToVerify,
    #[error(transparent)]
    Invalid(tokio_postgres::Error),
}

/// `sslmode` in `DATABASE_URL`, as libpq reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS when the server offers it (libpq's default, and ours).
    #[default]
    Prefer,
    /// Always TLS; the certificate is checked only against an `sslrootcert` given.
    Require,
    /// Always TLS, the certificate signed by a root in `sslrootcert`.
    VerifyCa,
    /// Like `VerifyCa`, and the certificate names the host connected to.
    VerifyFull,
}

impl SslMode {
    const NAMES: [(&str, Self); 5] = [
        ("disable", Self::Disable),
        ("prefer", Self::Prefer),
        ("require", Self::Require),
        ("verify-ca", Self::VerifyCa),
        ("verify-full", Self::VerifyFull),
    ];
}

impl std::str::FromStr for SslMode {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == text)
            .map(|(_, mode)| *mode)
            .ok_or(())
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, _) = Self::NAMES
            .iter()
            .find(|(_, mode)| mode == self)
            .expect("every mode is named");
        f.write_str(name)
    }
}

/// How the connection to an external database is secured: `sslmode` and `sslrootcert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// A PEM file of the root certificates the server's must be signed by.
    pub root_cert: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TlsKey {
    SslMode,
    SslRootCert,
}

impl TlsKey {
    fn of(key: &str) -> Option<Self> {
        match key {
            "sslmode" => Some(Self::SslMode),
            "sslrootcert" => Some(Self::SslRootCert),
            _ => None,
        }
    }
}

/// Splits a connection string, URL or key=value, into the rest and its TLS options in the
/// order given (so the last of a repeated one wins, as in libpq). A string that cannot be
/// read is returned whole, for tokio-postgres to report what is wrong with it.
fn take_tls_options(text: &str) -> (String, Vec<(TlsKey, String)>) {
    let is_url = text.starts_with("postgres://") || text.starts_with("postgresql://");
    let taken = if is_url {
        take_from_url(text)
    } else {
        take_from_key_values(text)
    };
    taken.unwrap_or_else(|| (text.to_owned(), Vec::new()))
}

fn take_from_url(url: &str) -> Option<(String, Vec<(TlsKey, String)>)> {
    let Some((base, query)) = url.split_once('?') else {
        return Some((url.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for parameter in query.split('&') {
        let (key, value) = parameter.split_once('=').unwrap_or((parameter, ""));
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|text| text.into_owned())
                .ok()
        };
        match TlsKey::of(&decode(key)?) {
            Some(tls_key) => taken.push((tls_key, decode(value)?)),
            None => kept.push(parameter),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Some((rest, taken))
}

/// The key=value form: `key = value` pairs apart by white space, a value either bare or in
/// single quotes, with `\` escaping the next character in both.
fn take_from_key_values(text: &str) -> Option<(String, Vec<(TlsKey, String)>)> {
    let bytes = text.as_bytes();
    let mut at = 0;
    let skip_space = |at: &mut usize| {
        while *at < bytes.len() && bytes[*at].is_ascii_whitespace() {
            *at += 1;
        }
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    loop {
        skip_space(&mut at);
        if at == bytes.len() {
            break;
        }
        let start = at;
        while at < bytes.len() && !bytes[at].is_ascii_whitespace() && bytes[at] != b'=' {
            at += 1;
        }
        let key = &text[start..at];
        skip_space(&mut at);
        if bytes.get(at) != Some(&b'=') {
            return None;
        }
        at += 1;
        skip_space(&mut at);
        let mut value = Vec::new();
        let quoted = bytes.get(at) == Some(&b'\'');
        if quoted {
            at += 1;
        }
        loop {
            match bytes.get(at) {
                None if quoted => return None,
                None => break,
                Some(b'\'') if quoted => {
                    at += 1;
                    break;
                }
                Some(byte) if !quoted && byte.is_ascii_whitespace() => break,
                Some(b'\\') => {
                    value.push(*bytes.get(at + 1)?);
                    at += 2;
                }
                Some(byte) => {
                    value.push(*byte);
                    at += 1;
                }
            }
        }
        match TlsKey::of(key) {
            Some(tls_key) => taken.push((tls_key, String::from_utf8(value).ok()?)),
            None => kept.push(&text[start..at]),
        }
    }
    Some((kept.join(" "), taken))
}

#[cfg(test)]
mod tests {
    use tokio_postgres::config::{Host, SslMode as WireMode};

    use super::*;

    fn parsed(text: &str) -> (tokio_postgres::Config, TlsSettings) {
        parse(text).unwrap()
    }

    #[test]
    fn a_url_gives_up_its_tls_options_and_keeps_the_rest() {
        let (config, tls) = parsed(
            "postgres://app:s3cret@db.example:6543/orders?sslmode=verify-full\
             &application_name=orders&sslrootcert=%2Fetc%2Fssl%2Froot%20ca.pem",
        );
        assert_eq!(
            tls,
            TlsSettings {
                mode: SslMode::VerifyFull,
                root_cert: Some(PathBuf::from("/etc/ssl/root ca.pem")),
            }
        );
        assert_eq!(config.get_ssl_mode(), WireMode::Require);
        assert_eq!(config.get_hosts(), [Host::Tcp("db.example".to_owned())]);
        assert_eq!(config.get_ports(), [6543]);
        assert_eq!(config.get_dbname(), Some("orders"));
        assert_eq!(config.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(config.get_application_name(), Some("orders"));
    }

    #[test]
    fn a_key_value_string_gives_up_its_tls_options_quoted_or_not() {
        let (config, tls) = parsed(
            "host=db.example sslrootcert = '/etc/it\\'s root.pem' user=app sslmode=verify-ca \
             password='a b' dbname=orders",
        );
        assert_eq!(
            tls,
            TlsSettings {
                mode: SslMode::VerifyCa,
                root_cert: Some(PathBuf::from("/etc/it's root.pem")),
            }
        );
        assert_eq!(config.get_ssl_mode(), WireMode::Require);
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"a b"[..]));
        assert_eq!(config.get_dbname(), Some("orders"));
    }

    #[test]
    fn without_sslmode_tls_is_preferred_as_by_libpq_and_the_last_sslmode_wins() {
        let (config, tls) = parsed("postgres://app@db.example/orders");
        assert_eq!(tls, TlsSettings::default());
        assert_eq!(tls.mode, SslMode::Prefer);
        assert_eq!(config.get_ssl_mode(), WireMode::Prefer);

        let (config, tls) = parsed("host=db.example sslmode=require sslmode=disable");
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(config.get_ssl_mode(), WireMode::Disable);
    }

    #[test]
    fn a_connection_string_of_only_hostaddrs_goes_over_tcp_with_the_tls_it_asks_for() {
        let (config, tls) = parsed("hostaddr=10.0.0.5 sslmode=require dbname=orders");
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(config.get_ssl_mode(), WireMode::Require);
        let error = parse("hostaddr=10.0.0.5 sslmode=verify-full sslrootcert=/x").unwrap_err();
        assert!(matches!(error, DatabaseUrlError::NoHostToVerify), "{error}");
    }

    #[test]
    fn a_unix_socket_never_uses_tls_whatever_sslmode_says() {
        let (config, tls) = parsed("host=/var/run/postgresql sslmode=require dbname=orders");
        assert_eq!(tls.mode, SslMode::Disable);
        assert_eq!(config.get_ssl_mode(), WireMode::Disable);
    }

    #[test]
    fn an_unknown_sslmode_is_refused_by_name_without_the_rest_of_the_string() {
        for text in [
            "postgres://app:s3cret@db.example/orders?sslmode=allow",
            "host=db.example password=s3cret sslmode=allow",
        ] {
            let error = parse(text).unwrap_err();
            let message = crate::telemetry::error_chain(&error);
            assert!(
                message.contains("sslmode \"allow\" is not one of"),
                "{message}"
            );
            assert!(!message.contains("s3cret"), "{message}");
        }
    }
}
