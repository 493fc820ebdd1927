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
    let resolver = Arc::new(ReloadingCert::load(cert, key, &provider)?);
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let interval = settings.tls.reload_interval;
    let builder = match &settings.tls.client_ca {
        Some(ca) => {
            let verifier = Arc::new(ReloadingClientCa::load(ca.clone(), &provider)?);
            tokio::spawn(watch(Arc::downgrade(&verifier), interval));
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_cert_resolver(resolver.clone());
    tokio::spawn(watch(Arc::downgrade(&resolver), interval));
    Ok((config, resolver))
}

/// The serving certificate, replaced when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

impl ReloadingCert {
    fn load(
        cert_path: PathBuf,
        key_path: PathBuf,
        provider: &Arc<CryptoProvider>,
    ) -> anyhow::Result<Self> {
        let stamp = stamp(&cert_path, &key_path);
        let key = load_certified_key(&cert_path, &key_path, provider)?;
        Ok(ReloadingCert {
            cert_path,
            key_path,
            provider: Arc::clone(provider),
            current: RwLock::new(Loaded { key, stamp }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // Loaded is replaced whole; a poisoned lock still holds a consistent value.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.read().key))
    }
}

/// Something loaded from files that [`watch`] checks for changes.
trait Refresh: Send + Sync + 'static {
    /// Loads the files again if they changed since the last load; a change that does not load
    /// keeps what was loaded before.
    fn refresh(&self);
}

impl Refresh for ReloadingCert {
    fn refresh(&self) {
        let stamp = stamp(&self.cert_path, &self.key_path);
        if self.read().stamp == stamp {
            return;
        }
        match load_certified_key(&self.cert_path, &self.key_path, &self.provider) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Loaded { key, stamp };
                tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::warn!(cert = %self.cert_path.display(), error = %e, "TLS certificate changed but does not load; keeping the previous one");
            }
        }
    }
}

/// Refreshes `target` every `interval` until the TLS configuration holding it is dropped.
async fn watch<T: Refresh>(target: Weak<T>, interval: Duration) {
    loop {
        tokio::time::sleep(interval).await;
        let Some(target) = target.upgrade() else {
            return;
        };
        target.refresh();
    }
}

/// The verifier of client certificates (`FLOWGATE_TLS_CLIENT_CA`), rebuilt when the CA file
/// changes; handshakes already verified are not revisited.
///
/// Its certificate request names no CA (names would have to outlive a reload): a client offers
/// the certificate it has, and the current CA set decides.
#[derive(Debug)]
pub struct ReloadingClientCa {
    path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<LoadedCa>,
}

#[derive(Debug)]
struct LoadedCa {
    verifier: Arc<dyn ClientCertVerifier>,
    stamp: Option<SystemTime>,
}

impl ReloadingClientCa {
    fn load(path: PathBuf, provider: &Arc<CryptoProvider>) -> anyhow::Result<Self> {
        let stamp = modified(&path);
        let verifier = load_client_verifier(&path, provider)?;
        Ok(ReloadingClientCa {
            path,
            provider: Arc::clone(provider),
            current: RwLock::new(LoadedCa { verifier, stamp }),
        })
    }

    fn verifier(&self) -> Arc<dyn ClientCertVerifier> {
        // LoadedCa is replaced whole; a poisoned lock still holds a consistent value.
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        Arc::clone(&current.verifier)
    }
}

impl Refresh for ReloadingClientCa {
    fn refresh(&self) {
        let stamp = modified(&self.path);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).stamp == stamp {
            return;
        }
        match load_client_verifier(&self.path, &self.provider) {
            Ok(verifier) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) =
                    LoadedCa { verifier, stamp };
                tracing::info!(ca = %self.path.display(), "TLS client CA reloaded");
            }
            Err(e) => {
                tracing::warn!(ca = %self.path.display(), error = %e, "TLS client CA changed but does not load; keeping the previous one");
            }
        }
    }
}

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
        self.verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.verifier().supported_verify_schemes()
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

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn stamp(cert: &Path, key: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    (modified(cert), modified(key))
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
    std::fs::create_dir_all(&dir)?;
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
    write_private(&key, generated.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())?;
    tracing::info!(cert = %cert.display(), "generated a self-signed TLS certificate");
    Ok((cert, key))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
