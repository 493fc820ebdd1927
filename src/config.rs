//! Configuration: an optional flat TOML file overridden by `FLOWGATE_*` environment variables,
//! validated once at start-up into [`Settings`].
//!
//! Invariant: a bad or inconsistent value stops start-up with a [`ConfigError`] naming the
//! variable; nothing half-starts. Secret values (database URL, Vault token, operator token) are
//! held as [`SecretString`] so that `Debug` cannot print them.
//!
//! We read the file with `toml` and the environment by hand rather than through a layering
//! crate: the error must name the environment variable, whichever source the value came from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use crate::net::proxies::{ForwardedHeader, TrustedProxies};

/// A setting that cannot be used, named by its environment variable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {message}")]
    Invalid { var: String, message: String },
    #[error("configuration file {path}: {message}")]
    File { path: PathBuf, message: String },
}

/// Where the control plane and the tenants live.
#[derive(Debug, Clone)]
pub enum DatabaseSettings {
    /// One file for the control plane; tenants get one file each under `tenants/` beside it.
    Sqlite { control_file: PathBuf },
    /// Schema `flowgate` for the control plane, schema `t_<slug>` per tenant. With `ca_file`,
    /// the server's certificate must chain to it and name the host (`verify-full`, unless the
    /// URL's `sslmode` says otherwise).
    Postgres {
        url: SecretString,
        ca_file: Option<PathBuf>,
    },
}

/// Which key store holds tenant keys.
#[derive(Debug, Clone)]
pub enum KeyStoreSettings {
    /// Files under `<data>/keystore`, sealed with AES-256-GCM under a key-encryption key: the
    /// file `kek_file` names (kept apart from the data, a mounted secret say), else one
    /// generated at `<data>/keystore/kek`.
    Local { kek_file: Option<PathBuf> },
    /// HashiCorp Vault or OpenBao: KV v2 for secrets, transit for signing keys.
    Vault {
        addr: String,
        auth: VaultAuth,
        kv_mount: String,
        transit_mount: String,
    },
}

/// How Flowgate gets its Vault token.
#[derive(Debug, Clone)]
pub enum VaultAuth {
    /// `FLOWGATE_VAULT_TOKEN`, renewed while it is renewable.
    Token(SecretString),
    /// `FLOWGATE_VAULT_ROLE_ID` and `FLOWGATE_VAULT_SECRET_ID` at the AppRole mount
    /// `FLOWGATE_VAULT_APPROLE_MOUNT` (default `approle`); logs in again when the token can
    /// no longer be renewed.
    AppRole {
        mount: String,
        role_id: String,
        secret_id: SecretString,
    },
}

/// TLS material; without files a self-signed certificate is generated under the data dir.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Turns on mTLS: clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// How often certificate files are checked for changes.
    pub reload_interval: Duration,
}

/// Rate limits (see `http::pipeline::rate_limit`); bursts are twice the per-second rates.
#[derive(Debug, Clone)]
pub struct RateLimitSettings {
    /// Requests per second from one source address, before authentication.
    pub source_per_second: NonZeroU32,
    /// Failed authentications per minute from one source address.
    pub failures_per_minute: NonZeroU32,
    /// Requests per second of one principal.
    pub principal_per_second: NonZeroU32,
    /// Requests per second to one tenant.
    pub tenant_per_second: NonZeroU32,
}

/// Validated settings of one Flowgate process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub public_url: String,
    pub data_dir: PathBuf,
    pub database: DatabaseSettings,
    pub tls: TlsSettings,
    pub hsts: bool,
    pub keystore: KeyStoreSettings,
    pub operator_token: Option<SecretString>,
    pub redis_url: Option<SecretString>,
    pub otlp_endpoint: Option<String>,
    pub admin_listen: Option<SocketAddr>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// Longest a request body may take to arrive, from when its handler reads it.
    pub body_timeout: Duration,
    /// How often dirty audit chains get a signed checkpoint.
    pub audit_checkpoint_interval: Duration,
    pub rate_limits: RateLimitSettings,
    pub log_filter: String,
    /// Non-public networks that identity providers (issuers, keys, SAML metadata) may be
    /// reached at; public addresses always may. Empty by default: a tenant's provider URL can
    /// then reach nothing inside this deployment's network.
    pub idp_private_networks: Vec<ipnet::IpNet>,
    /// The deployment's own proxies, whose forwarding header names the client; none by default
    /// (the client is the TCP peer).
    pub trusted_proxies: TrustedProxies,
}

/// Environment variable prefix; a file key `listen` is the variable `FLOWGATE_LISTEN`.
const PREFIX: &str = "FLOWGATE_";

/// Every setting, without the prefix. A file key or a `FLOWGATE_*` variable that is not one of
/// these (or of [`ENVIRONMENT_ONLY`]) stops start-up: a typo must not silently leave a setting
/// (mTLS, say) at its default.
const SETTINGS: &[&str] = &[
    "ADMIN_LISTEN",
    "AUDIT_CHECKPOINT_INTERVAL_MS",
    "BODY_LIMIT",
    "BODY_TIMEOUT_MS",
    "DATABASE_CA",
    "DATABASE_URL",
    "DATA_DIR",
    "HSTS",
    "IDP_PRIVATE_NETWORKS",
    "KEK_FILE",
    "KEYSTORE",
    "LISTEN",
    "LOG",
    "OPERATOR_TOKEN",
    "OTLP_ENDPOINT",
    "PUBLIC_URL",
    "RATE_LIMIT_FAILURES",
    "RATE_LIMIT_PRINCIPAL",
    "RATE_LIMIT_SOURCE",
    "RATE_LIMIT_TENANT",
    "REDIS_URL",
    "TLS_CERT",
    "TLS_CLIENT_CA",
    "TLS_KEY",
    "TLS_RELOAD_INTERVAL_MS",
    "TRUSTED_PROXIES",
    "TRUSTED_PROXY_HEADER",
    "VAULT_ADDR",
    "VAULT_APPROLE_MOUNT",
    "VAULT_KV_MOUNT",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "VAULT_TOKEN",
    "VAULT_TRANSIT_MOUNT",
];

/// Variables that are not settings of the file: where the file is, and the benchmark switch.
const ENVIRONMENT_ONLY: &[&str] = &["CONFIG", "INSECURE_BENCH"];

/// Shortest operator token we accept from configuration.
const MIN_OPERATOR_TOKEN_LEN: usize = 32;

impl Settings {
    /// Reads `config_file` (if any) and the process environment, whose `FLOWGATE_*` variables
    /// must all be known.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        let names = std::env::vars_os().filter_map(|(name, _)| name.into_string().ok());
        if let Some(unknown) = unknown_variable(names) {
            return Err(ConfigError::Invalid {
                var: unknown,
                message: "is not a Flowgate setting (see the README's configuration table)"
                    .to_owned(),
            });
        }
        Self::from_sources(config_file, &|name| std::env::var(name).ok())
    }

    /// Reads `config_file` (if any) and variables from `env`; tests pass their own lookup.
    pub fn from_sources(
        config_file: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let file = match config_file {
            Some(path) => read_file(path)?,
            None => HashMap::new(),
        };
        let src = Source { file, env };
        let data_dir = PathBuf::from(src.get("DATA_DIR").unwrap_or_else(|| "./data".into()));
        let listen = src
            .parse("LISTEN", |v| {
                v.parse::<SocketAddr>().map_err(|e| e.to_string())
            })?
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
        let public_url = match src.get("PUBLIC_URL") {
            Some(url) if url.starts_with("https://") => url.trim_end_matches('/').to_owned(),
            Some(_) => return Err(src.invalid("PUBLIC_URL", "must be an https:// URL")),
            None => format!("https://{listen}"),
        };
        Ok(Settings {
            listen,
            public_url,
            database: database(&src, &data_dir)?,
            tls: tls(&src)?,
            hsts: src.parse("HSTS", parse_bool)?.unwrap_or(true),
            keystore: keystore(&src)?,
            operator_token: operator_token(&src)?,
            redis_url: src
                .parse("REDIS_URL", |v| {
                    url_with_scheme(v, &["redis://", "rediss://"])
                })?
                .map(SecretString::from),
            otlp_endpoint: src.parse("OTLP_ENDPOINT", |v| {
                url_with_scheme(v, &["http://", "https://"])
            })?,
            admin_listen: src.parse("ADMIN_LISTEN", |v| {
                v.parse::<SocketAddr>().map_err(|e| e.to_string())
            })?,
            body_limit: src
                .parse("BODY_LIMIT", positive::<usize>)?
                .unwrap_or(1024 * 1024),
            body_timeout: Duration::from_millis(
                src.parse("BODY_TIMEOUT_MS", positive::<u64>)?
                    .unwrap_or(15_000),
            ),
            audit_checkpoint_interval: Duration::from_millis(
                src.parse("AUDIT_CHECKPOINT_INTERVAL_MS", positive::<u64>)?
                    .unwrap_or(60_000),
            ),
            rate_limits: rate_limits(&src)?,
            log_filter: src.get("LOG").unwrap_or_else(|| "info".into()),
            idp_private_networks: src
                .parse("IDP_PRIVATE_NETWORKS", networks)?
                .unwrap_or_default(),
            trusted_proxies: TrustedProxies::new(
                src.parse("TRUSTED_PROXIES", proxy_networks)?
                    .unwrap_or_default(),
                src.parse("TRUSTED_PROXY_HEADER", ForwardedHeader::parse)?
                    .unwrap_or_default(),
            ),
            data_dir,
        })
    }
}

/// The first `FLOWGATE_*` name among `names` that Flowgate does not know.
fn unknown_variable(names: impl Iterator<Item = String>) -> Option<String> {
    names.filter(|name| name.starts_with(PREFIX)).find(|name| {
        let setting = &name[PREFIX.len()..];
        !SETTINGS.contains(&setting) && !ENVIRONMENT_ONLY.contains(&setting)
    })
}

struct Source<'a> {
    file: HashMap<String, String>,
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Source<'_> {
    /// The value of `FLOWGATE_<name>`, from the environment first, then the file.
    fn get(&self, name: &str) -> Option<String> {
        debug_assert!(SETTINGS.contains(&name), "{name} is missing from SETTINGS");
        (self.env)(&format!("{PREFIX}{name}"))
            .or_else(|| self.file.get(&name.to_ascii_lowercase()).cloned())
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &self,
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(name)
            .map(|v| parse(v.trim()).map_err(|message| self.invalid(name, &message)))
            .transpose()
    }

    fn invalid(&self, name: &str, message: &str) -> ConfigError {
        ConfigError::Invalid {
            var: format!("{PREFIX}{name}"),
            message: message.to_owned(),
        }
    }
}

fn read_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let err = |message: String| ConfigError::File {
        path: path.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| err(e.to_string()))?;
    if let Some(key) = table
        .keys()
        .find(|key| !SETTINGS.contains(&key.to_ascii_uppercase().as_str()))
    {
        return Err(err(format!(
            "`{key}` is not a setting (keys are the variables without `FLOWGATE_`, in lower case)"
        )));
    }
    table
        .into_iter()
        .map(|(key, value)| match value {
            toml::Value::String(s) => Ok((key, s)),
            toml::Value::Integer(i) => Ok((key, i.to_string())),
            toml::Value::Boolean(b) => Ok((key, b.to_string())),
            _ => Err(err(format!(
                "{key}: only strings, integers and booleans are allowed"
            ))),
        })
        .collect()
}

fn database(src: &Source, data_dir: &Path) -> Result<DatabaseSettings, ConfigError> {
    match src.get("DATABASE_URL") {
        None => Ok(DatabaseSettings::Sqlite {
            control_file: data_dir.join("control.db"),
        }),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            Ok(DatabaseSettings::Postgres {
                url: SecretString::from(url),
                ca_file: src.parse("DATABASE_CA", existing_file)?,
            })
        }
        Some(url) => match url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Ok(DatabaseSettings::Sqlite {
                control_file: PathBuf::from(path.split('?').next().unwrap_or(path)),
            }),
            _ => Err(src.invalid(
                "DATABASE_URL",
                "must be postgres://… or sqlite://<control-plane file>",
            )),
        },
    }
}

fn existing_file(v: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(v);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{v} is not a readable file"))
    }
}

fn tls(src: &Source) -> Result<TlsSettings, ConfigError> {
    let cert = src.parse("TLS_CERT", existing_file)?;
    let key = src.parse("TLS_KEY", existing_file)?;
    let cert_and_key = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => return Err(src.invalid("TLS_KEY", "is required with FLOWGATE_TLS_CERT")),
        (None, Some(_)) => return Err(src.invalid("TLS_CERT", "is required with FLOWGATE_TLS_KEY")),
    };
    Ok(TlsSettings {
        cert_and_key,
        client_ca: src.parse("TLS_CLIENT_CA", existing_file)?,
        reload_interval: Duration::from_millis(
            src.parse("TLS_RELOAD_INTERVAL_MS", positive::<u64>)?
                .unwrap_or(5_000),
        ),
    })
}

fn keystore(src: &Source) -> Result<KeyStoreSettings, ConfigError> {
    match src.get("KEYSTORE").as_deref() {
        None | Some("local") => Ok(KeyStoreSettings::Local {
            kek_file: src.parse("KEK_FILE", existing_file)?,
        }),
        Some("vault") => {
            let addr = src.parse("VAULT_ADDR", vault_addr)?.ok_or_else(|| {
                src.invalid("VAULT_ADDR", "is required with FLOWGATE_KEYSTORE=vault")
            })?;
            let auth = match (
                src.get("VAULT_TOKEN"),
                src.get("VAULT_ROLE_ID"),
                src.get("VAULT_SECRET_ID"),
            ) {
                (Some(token), None, None) => VaultAuth::Token(SecretString::from(token)),
                (None, Some(role_id), Some(secret_id)) => VaultAuth::AppRole {
                    mount: src
                        .get("VAULT_APPROLE_MOUNT")
                        .unwrap_or_else(|| "approle".into()),
                    role_id,
                    secret_id: SecretString::from(secret_id),
                },
                (Some(_), _, _) => {
                    return Err(src.invalid(
                        "VAULT_TOKEN",
                        "cannot be set together with FLOWGATE_VAULT_ROLE_ID / FLOWGATE_VAULT_SECRET_ID",
                    ));
                }
                (None, Some(_), None) => {
                    return Err(
                        src.invalid("VAULT_SECRET_ID", "is required with FLOWGATE_VAULT_ROLE_ID")
                    );
                }
                (None, None, Some(_)) => {
                    return Err(
                        src.invalid("VAULT_ROLE_ID", "is required with FLOWGATE_VAULT_SECRET_ID")
                    );
                }
                (None, None, None) => {
                    return Err(src.invalid(
                        "VAULT_TOKEN",
                        "is required with FLOWGATE_KEYSTORE=vault (or FLOWGATE_VAULT_ROLE_ID and FLOWGATE_VAULT_SECRET_ID)",
                    ));
                }
            };
            Ok(KeyStoreSettings::Vault {
                addr,
                auth,
                kv_mount: src.get("VAULT_KV_MOUNT").unwrap_or_else(|| "secret".into()),
                transit_mount: src
                    .get("VAULT_TRANSIT_MOUNT")
                    .unwrap_or_else(|| "transit".into()),
            })
        }
        Some(_) => Err(src.invalid("KEYSTORE", "must be `local` or `vault`")),
    }
}

/// A Vault address: `https://`, or plain `http://` only to this machine (a dev server), since
/// the token and every secret would otherwise cross the network in clear.
fn vault_addr(v: &str) -> Result<String, String> {
    let url = url_with_scheme(v, &["http://", "https://"])?;
    let Some(rest) = url.strip_prefix("http://") else {
        return Ok(url);
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(url)
    } else {
        Err("must be https:// (plain http:// only to a loopback address)".to_owned())
    }
}

fn operator_token(src: &Source) -> Result<Option<SecretString>, ConfigError> {
    src.parse("OPERATOR_TOKEN", |v| {
        if v.len() < MIN_OPERATOR_TOKEN_LEN {
            Err(format!(
                "must be at least {MIN_OPERATOR_TOKEN_LEN} characters (value not shown)"
            ))
        } else {
            Ok(SecretString::from(v.to_owned()))
        }
    })
}

fn rate_limits(src: &Source) -> Result<RateLimitSettings, ConfigError> {
    let rate = |name: &str, default: u32| -> Result<NonZeroU32, ConfigError> {
        Ok(src
            .parse(name, positive::<u32>)?
            .and_then(NonZeroU32::new)
            .unwrap_or(NonZeroU32::new(default).unwrap_or(NonZeroU32::MIN)))
    };
    Ok(RateLimitSettings {
        source_per_second: rate("RATE_LIMIT_SOURCE", 1_000)?,
        failures_per_minute: rate("RATE_LIMIT_FAILURES", 30)?,
        principal_per_second: rate("RATE_LIMIT_PRINCIPAL", 500)?,
        tenant_per_second: rate("RATE_LIMIT_TENANT", 2_000)?,
    })
}

/// A comma-separated list of CIDR ranges, such as `10.20.0.0/16,127.0.0.1/32`.
fn networks(v: &str) -> Result<Vec<ipnet::IpNet>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            n.parse::<ipnet::IpNet>()
                .map_err(|_| format!("`{n}` is not a CIDR range such as 10.0.0.0/8"))
        })
        .collect()
}

/// The networks of the deployment's own proxies: never every IPv4 or every IPv6 address, in one
/// range or several, which would let any client name its own; IPv4 ranges written as IPv4, as
/// peers are compared (an IPv4-mapped IPv6 range would match no one).
fn proxy_networks(v: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let networks = networks(v)?;
    if let Some(all) = ipnet::IpNet::aggregate(&networks)
        .into_iter()
        .find(|n| n.prefix_len() == 0)
    {
        return Err(format!(
            "the ranges cover `{all}`, every address, so any client could name its own: list your proxies' networks"
        ));
    }
    let mapped = |n: &&ipnet::IpNet| match n {
        ipnet::IpNet::V6(v6) => v6.prefix_len() >= 96 && v6.addr().to_ipv4_mapped().is_some(),
        ipnet::IpNet::V4(_) => false,
    };
    match networks.iter().find(mapped) {
        Some(range) => Err(format!(
            "`{range}` is an IPv4-mapped IPv6 range: write the IPv4 range itself"
        )),
        None => Ok(networks),
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" | "1" | "on" | "yes" => Ok(true),
        "false" | "0" | "off" | "no" => Ok(false),
        _ => Err(format!("`{v}` is not a boolean (true or false)")),
    }
}

fn positive<T: std::str::FromStr + PartialOrd + Default>(v: &str) -> Result<T, String> {
    match v.parse::<T>() {
        Ok(n) if n > T::default() => Ok(n),
        _ => Err(format!("`{v}` is not a positive whole number")),
    }
}

fn url_with_scheme(v: &str, schemes: &[&str]) -> Result<String, String> {
    if schemes
        .iter()
        .any(|s| v.starts_with(s) && v.len() > s.len())
    {
        Ok(v.trim_end_matches('/').to_owned())
    } else {
        Err(format!(
            "must be a URL starting with {}",
            schemes.join(" or ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_sources(None, &|name| vars.get(name).cloned())
    }

    fn error_var(result: Result<Settings, ConfigError>) -> String {
        match result {
            Err(ConfigError::Invalid { var, .. }) => var,
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn nothing_configured_means_embedded_defaults() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8443");
        assert!(matches!(s.database, DatabaseSettings::Sqlite { .. }));
        assert!(matches!(
            s.keystore,
            KeyStoreSettings::Local { kek_file: None }
        ));
        assert!(s.hsts);
        assert_eq!(s.body_limit, 1024 * 1024);
        assert!(
            s.idp_private_networks.is_empty(),
            "providers are public by default"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        assert_eq!(
            error_var(settings(&[(
                "FLOWGATE_IDP_PRIVATE_NETWORKS",
                "10.0.0.0/8, intranet"
            )])),
            "FLOWGATE_IDP_PRIVATE_NETWORKS"
        );
        let networks = settings(&[("FLOWGATE_IDP_PRIVATE_NETWORKS", "10.0.0.0/8, fd00::/8")])
            .unwrap()
            .idp_private_networks;
        assert_eq!(networks.len(), 2);
        for (var, value) in [
            ("FLOWGATE_TRUSTED_PROXIES", "10.0.0.0/8, lb"),
            ("FLOWGATE_TRUSTED_PROXIES", "10.0.0.0/8, ::/0"),
            ("FLOWGATE_TRUSTED_PROXIES", "0.0.0.0/0"),
            (
                "FLOWGATE_TRUSTED_PROXIES",
                "10.0.0.0/8, 0.0.0.0/1, 128.0.0.0/1",
            ),
            ("FLOWGATE_TRUSTED_PROXIES", "::ffff:10.0.0.0/104"),
            ("FLOWGATE_TRUSTED_PROXY_HEADER", "x-real-ip"),
        ] {
            assert_eq!(error_var(settings(&[(var, value)])), var, "{value}");
        }
        assert_eq!(
            error_var(settings(&[("FLOWGATE_LISTEN", "nowhere")])),
            "FLOWGATE_LISTEN"
        );
        assert_eq!(
            error_var(settings(&[("FLOWGATE_DATABASE_URL", "mysql://x")])),
            "FLOWGATE_DATABASE_URL"
        );
        assert_eq!(
            error_var(settings(&[("FLOWGATE_KEYSTORE", "vault")])),
            "FLOWGATE_VAULT_ADDR"
        );
        assert_eq!(
            error_var(settings(&[("FLOWGATE_OPERATOR_TOKEN", "short")])),
            "FLOWGATE_OPERATOR_TOKEN"
        );
        assert_eq!(
            error_var(settings(&[("FLOWGATE_HSTS", "maybe")])),
            "FLOWGATE_HSTS"
        );
        assert_eq!(
            error_var(settings(&[("FLOWGATE_BODY_LIMIT", "0")])),
            "FLOWGATE_BODY_LIMIT"
        );
        assert_eq!(
            error_var(settings(&[("FLOWGATE_TLS_CERT", "/nonexistent.pem")])),
            "FLOWGATE_TLS_CERT"
        );
    }

    #[test]
    fn rejected_secret_values_are_not_echoed() {
        let message = settings(&[("FLOWGATE_OPERATOR_TOKEN", "hunter2")])
            .unwrap_err()
            .to_string();
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = std::env::temp_dir().join(format!("flowgate-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("flowgate.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nhsts = false\n").unwrap();
        let env = |name: &str| (name == "FLOWGATE_LISTEN").then(|| "127.0.0.1:9001".to_owned());
        let s = Settings::from_sources(Some(&file), &env).unwrap();
        assert_eq!(s.listen.port(), 9001);
        assert!(!s.hsts);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unknown_file_key_or_variable_stops_start_up() {
        let dir = std::env::temp_dir().join(format!("flowgate-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("typo.toml");
        std::fs::write(&file, "tls_client_ca_file = \"/etc/ca.pem\"\n").unwrap();
        let err = Settings::from_sources(Some(&file), &|_| None).unwrap_err();
        assert!(err.to_string().contains("tls_client_ca_file"), "{err}");
        std::fs::write(&file, "tls_reload_interval_ms = 100\n").unwrap();
        assert!(Settings::from_sources(Some(&file), &|_| None).is_ok());
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            unknown_variable(
                names(&["PATH", "FLOWGATE_LISTEN", "FLOWGATE_TLS_CLIENTCA"]).into_iter()
            ),
            Some("FLOWGATE_TLS_CLIENTCA".to_owned())
        );
        assert_eq!(
            unknown_variable(names(&["FLOWGATE_CONFIG", "FLOWGATE_LOG", "HOME"]).into_iter()),
            None
        );
    }

    #[test]
    fn vault_over_plain_http_only_to_this_machine() {
        let vault = |addr: &str| {
            settings(&[
                ("FLOWGATE_KEYSTORE", "vault"),
                ("FLOWGATE_VAULT_ADDR", addr),
                ("FLOWGATE_VAULT_TOKEN", "t"),
            ])
        };
        for ok in [
            "https://vault.example.com:8200",
            "http://127.0.0.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            assert!(vault(ok).is_ok(), "{ok}");
        }
        for refused in [
            "http://vault.example.com:8200",
            "http://10.0.0.5:8200",
            "http://127.0.0.1.example.com",
        ] {
            assert_eq!(
                error_var(vault(refused)),
                "FLOWGATE_VAULT_ADDR",
                "{refused}"
            );
        }
    }
}
