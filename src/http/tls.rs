//! TLS: rustls with aws-lc-rs, TLS 1.2 and 1.3 only, AEAD suites only, optional mTLS, and
//! certificates reloaded from disk when they change.
//!
//! Invariants:
//! - No protocol below TLS 1.2 and no CBC or other non-AEAD suite is ever offered: the provider's
//!   suite list is filtered here, not trusted to stay as it is.
//! - With a client CA configured, a client that does not present a certificate chaining to it
//!   cannot finish the handshake.
//! - A certificate change that does not load (half-written files, a key that does not match,
//!   a client CA file without a certificate) keeps the previous certificate or CA in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::config::Settings;

/// Suites we offer: ECDHE key exchange with AES-GCM or ChaCha20-Poly1305.
const ALLOWED_SUITES: &[CipherSuite] = &[
    CipherSuite::TLS13_AES_256_GCM_SHA384,
    CipherSuite::TLS13_AES_128_GCM_SHA256,
    CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
];

/// Makes aws-lc-rs the process's rustls provider; call first thing (later calls are harmless).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The server's TLS configuration; keep the returned value alive for certificate reloading to
/// continue.
pub fn server_config(settings: &Settings) -> anyhow::Result<(ServerConfig, Arc<ReloadingCert>)> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .retain(|s| ALLOWED_SUITES.contains(&s.suite()));
    anyhow::ensure!(
        !provider.cipher_suites.is_empty(),
        "the TLS provider offers no allowed suite"
    );
    let provider = Arc::new(provider);
    let (cert, key) = match &settings.tls.cert_and_key {
        Some((cert, key)) => (cert.clone(), key.clone()),
        None => self_signed(settings)?,
    };
    let resolver = Arc::new(ReloadingCert::new(
        "TLS certificate",
        vec![cert, key],
        &provider,
        |paths, provider| load_certified_key(&paths[0], &paths[1], provider),
    )?);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let interval = settings.tls.reload_interval;
    let builder = match &settings.tls.client_ca {
        Some(ca) => {
            let verifier = Arc::new(ReloadingClientCa::new(
                "TLS client CA",
                vec![ca.clone()],
                &provider,
                |paths, provider| load_client_verifier(&paths[0], provider),
            )?);
            tokio::spawn(watch(Arc::downgrade(&verifier), interval));
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(resolver.clone());
    tokio::spawn(watch(Arc::downgrade(&resolver), interval));
    Ok((config, resolver))
}

/// A value loaded from files and loaded again when their modification times change. A change
/// that does not load (half-written files, a key that does not match) keeps the previous value
/// in service.
#[derive(Debug)]
pub struct Reloading<T> {
    /// What is loaded, for the logs.
    what: &'static str,
    paths: Vec<PathBuf>,
    provider: Arc<CryptoProvider>,
    load: fn(&[PathBuf], &Arc<CryptoProvider>) -> anyhow::Result<T>,
    current: RwLock<Loaded<T>>,
}

#[derive(Debug)]
struct Loaded<T> {
    value: T,
    stamp: Vec<Option<SystemTime>>,
}

impl<T: Clone> Reloading<T> {
    fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        provider: &Arc<CryptoProvider>,
        load: fn(&[PathBuf], &Arc<CryptoProvider>) -> anyhow::Result<T>,
    ) -> anyhow::Result<Self> {
        let stamp = stamp(&paths);
        let value = load(&paths, provider)?;
        Ok(Reloading {
            what,
            paths,
            provider: Arc::clone(provider),
            load,
            current: RwLock::new(Loaded { value, stamp }),
        })
    }

    /// The value last loaded.
    fn current(&self) -> T {
        self.read().value.clone()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded<T>> {
        // Loaded is replaced whole; a poisoned lock still holds a consistent value.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads the files again if they changed since the last load.
    fn refresh(&self) {
        let stamp = stamp(&self.paths);
        if self.read().stamp == stamp {
            return;
        }
        match (self.load)(&self.paths, &self.provider) {
            Ok(value) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Loaded { value, stamp };
                tracing::info!(files = ?self.paths, "{} reloaded", self.what);
            }
            Err(e) => {
                tracing::warn!(files = ?self.paths, error = %e, "{} changed but does not load; keeping the previous one", self.what);
            }
        }
    }
}

/// Refreshes `target` every `interval` until the TLS configuration holding it is dropped.
async fn watch<T: Clone + Send + Sync + 'static>(target: Weak<Reloading<T>>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(target) = target.upgrade() else {
            return;
        };
        target.refresh();
    }
}

/// The serving certificate and key (`paths`: certificate chain, then key).
pub type ReloadingCert = Reloading<Arc<CertifiedKey>>;

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The verifier of client certificates (`FLOWGATE_TLS_CLIENT_CA`); handshakes already verified
/// are not revisited after a reload.
///
/// Its certificate request names no CA (names would have to outlive a reload): a client offers
/// the certificate it has, and the current CA set decides.
pub type ReloadingClientCa = Reloading<Arc<dyn ClientCertVerifier>>;

impl ClientCertVerifier for ReloadingClientCa {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// A verifier requiring a client certificate that chains to a CA in the PEM file `path`.
fn load_client_verifier(
    path: &Path,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
    {
        roots
            .add(cert.with_context(|| format!("parsing {}", path.display()))?)
            .with_context(|| format!("a CA certificate in {}", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "{} holds no certificate", path.display());
    Ok(
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            .build()?,
    )
}

/// When each of `paths` was last modified, as far as it can be read.
fn stamp(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn load_certified_key(
    cert: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    anyhow::ensure!(!chain.is_empty(), "{} holds no certificate", cert.display());
    let key_der =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .with_context(|| format!("loading the key in {}", key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .with_context(|| format!("{} does not match {}", key.display(), cert.display()))?;
    Ok(Arc::new(certified))
}

/// The generated development certificate under `<data>/tls/`, created on first start.
fn self_signed(settings: &Settings) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = settings.data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.is_file() && key.is_file() {
        return Ok((cert, key));
    }
    crate::files::create_private_dir(&dir)?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let listen_ip = settings.listen.ip();
    if !listen_ip.is_unspecified() {
        names.push(listen_ip.to_string());
    }
    if let Some(host) = settings
        .public_url
        .strip_prefix("https://")
        .and_then(|rest| rest.split(['/', ':']).next())
        .filter(|h| !h.is_empty() && !h.starts_with('['))
    {
        names.push(host.to_owned());
    }
    names.sort();
    names.dedup();
    let generated = rcgen::generate_simple_self_signed(names)?;
    crate::files::replace_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}
