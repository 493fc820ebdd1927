//! Latency of opening an envelope-encrypted field (`Envelope::open`) — p50, p90, p99 and max over
//! a few thousand opens — with the tenant's data key cached (warm, the common case) and with the
//! cache emptied before each open (cold: the open reads the `data_keys` row and asks the key
//! store to unwrap it), for the local key store and for Vault (a local OpenBao dev server, where
//! the unwrap is a transit decrypt over HTTP). `Envelope::seal` (warm) is shown for reference.
//!
//! `cargo bench --bench envelope` builds a real `AppState` on SQLite in a temporary data
//! directory, onboards a tenant, seals one field as its bootstrap admin, then times only the
//! envelope call: each seal in a write transaction of its own (rolled back), each open in a read
//! transaction of its own (begun and committed outside the timing). Under the cold rows, the two
//! steps that cold adds are timed on their own: reading the `data_keys` row and the key store's
//! unwrap. The Vault case runs when `bao` is on `PATH` (scripts/test installs it in
//! `~/.cache/flowgate/tools/venv/bin`), and is skipped with a note otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use entity::tenant::data_key;
use flowgate::app::AppState;
use flowgate::audit::RequestMeta;
use flowgate::authz::actions::SecretWrite;
use flowgate::authz::schema::EntityKind;
use flowgate::config::Settings;
use flowgate::identity::operator::OperatorAuthority;
use flowgate::keystore::{KeyName, Purpose};
use flowgate::platform::{NewTenant, create_tenant};
use flowgate::tenancy::work::{Allowed, Change, TenantContext};
use flowgate::tenancy::{Environment, Slug};
use sea_orm::EntityTrait as _;
use secrecy::ExposeSecret as _;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Timed operations per row.
const OPS: usize = 3_000;
/// Untimed operations before each row (connections, prepared statements, caches).
const WARM_UP: usize = 100;
const FIELD: &str = "iban";
const VALUE: &[u8] = b"DE89 3704 0044 0532 0130 00";

/// A tenant with one sealed field, on a fresh `AppState`.
struct Fixture {
    state: Arc<AppState>,
    work: TenantContext,
    allowed: Allowed<SecretWrite>,
    slug: String,
    sealed: String,
    /// The data key the field is sealed under.
    key_id: Uuid,
    data_dir: PathBuf,
    audit_task: JoinHandle<()>,
}

impl Fixture {
    /// Opens the services with `extra` settings, onboards a tenant and seals [`VALUE`] as its
    /// bootstrap admin (which makes the tenant's first data key).
    async fn new(extra: &[(&str, String)]) -> Fixture {
        let data_dir =
            std::env::temp_dir().join(format!("flowgate-bench-envelope-{}", Uuid::new_v4()));
        let mut vars: HashMap<String, String> = HashMap::from([
            ("FLOWGATE_DATA_DIR".into(), data_dir.display().to_string()),
            (
                "FLOWGATE_OPERATOR_TOKEN".into(),
                format!("op-{}", Uuid::new_v4().simple()),
            ),
            ("FLOWGATE_LOG".into(), "warn".into()),
        ]);
        vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let settings = Settings::from_sources(None, &|name| vars.get(name).cloned()).unwrap();
        let opened = AppState::open(settings).await.unwrap();
        let state = opened.state;

        let slug = Slug::parse(&format!(
            "bench-{}",
            &Uuid::new_v4().simple().to_string()[..12]
        ))
        .unwrap();
        let onboarded = create_tenant(
            &state,
            &OperatorAuthority::console(),
            NewTenant {
                slug: slug.clone(),
                name: "Envelope bench".to_owned(),
                environment: Environment::Dev,
            },
            &RequestMeta::default(),
        )
        .await
        .unwrap();
        let principal = state
            .api_keys
            .authenticate(&state.dbs, &slug, onboarded.admin_api_key.expose_secret())
            .await
            .unwrap();
        let tenant = state.tenants.get(&slug).await.unwrap();
        let meta = RequestMeta {
            request_id: format!("bench-{}", Uuid::new_v4().simple()),
            ..RequestMeta::default()
        };
        let work = TenantContext::open(Arc::clone(&state), tenant, principal, meta)
            .await
            .unwrap();
        let secret_id = Uuid::now_v7().to_string();
        let resource = work
            .policies()
            .resource_in(EntityKind::Secret, secret_id.clone(), None)
            .unwrap();
        let allowed = work.authorize::<SecretWrite>(resource).unwrap();

        let tx = work.write(&allowed).await.unwrap();
        let sealed = work
            .envelope()
            .seal(&work, &tx, FIELD, VALUE)
            .await
            .unwrap();
        tx.commit(Change::new("secret", secret_id, 200))
            .await
            .unwrap();
        // `fge1.<data key id>.<body>`
        let key_id = Uuid::try_parse(sealed.split('.').nth(1).unwrap()).unwrap();
        Fixture {
            state,
            work,
            allowed,
            slug: slug.as_str().to_owned(),
            sealed,
            key_id,
            data_dir,
            audit_task: opened.audit_task,
        }
    }

    /// Drops the services, lets the audit writer finish and removes the data directory.
    async fn close(self) {
        let Fixture {
            state,
            work,
            allowed,
            data_dir,
            audit_task,
            ..
        } = self;
        drop((work, allowed, state));
        let _ = tokio::time::timeout(Duration::from_secs(5), audit_task).await;
        let _ = std::fs::remove_dir_all(data_dir);
    }

    /// `Envelope::seal` with the data key cached, in a write transaction that is rolled back.
    async fn seal(&self) -> Duration {
        let tx = self.work.write(&self.allowed).await.unwrap();
        let start = Instant::now();
        let sealed = self
            .work
            .envelope()
            .seal(&self.work, &tx, FIELD, VALUE)
            .await
            .unwrap();
        let took = start.elapsed();
        drop(tx);
        black_box(sealed);
        took
    }

    /// `Envelope::open` of the sealed field; with `cold`, the tenant's data keys are forgotten
    /// first (outside the timing).
    async fn open(&self, cold: bool) -> Duration {
        let envelope = self.work.envelope();
        let tx = self.work.read().await.unwrap();
        if cold {
            envelope.forget_tenant(&self.slug);
        }
        let start = Instant::now();
        let plain = envelope
            .open(&self.slug, &tx, FIELD, &self.sealed)
            .await
            .unwrap();
        let took = start.elapsed();
        tx.commit().await.unwrap();
        assert_eq!(plain.as_slice(), VALUE);
        took
    }

    /// The cold open's first step alone: reading the data key's row.
    async fn read_row(&self) -> (Duration, data_key::Model) {
        let tx = self.work.read().await.unwrap();
        let start = Instant::now();
        let row = data_key::Entity::find_by_id(self.key_id)
            .one(&tx)
            .await
            .unwrap()
            .unwrap();
        let took = start.elapsed();
        tx.commit().await.unwrap();
        (took, row)
    }

    /// The cold open's second step alone: the key store's unwrap of the data key.
    async fn unwrap(&self, wrapped: &str) -> Duration {
        let kek = KeyName::new(&self.slug, Purpose::DataKek);
        let start = Instant::now();
        let plain = self.state.keystore.unwrap(&kek, wrapped).await.unwrap();
        let took = start.elapsed();
        assert!(plain.is_some());
        black_box(plain);
        took
    }
}

/// [`WARM_UP`] untimed runs of `once`, then the durations it reports over [`OPS`] runs, sorted.
async fn measure(mut once: impl AsyncFnMut() -> Duration) -> Vec<Duration> {
    for _ in 0..WARM_UP {
        once().await;
    }
    let mut times = Vec::with_capacity(OPS);
    for _ in 0..OPS {
        times.push(once().await);
    }
    times.sort_unstable();
    times
}

/// The nearest-rank `q` quantile of `sorted`, in µs.
fn quantile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

fn print_row(store: &str, operation: &str, sorted: &[Duration]) {
    println!(
        "{store:<6} {operation:<26} {:>6} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
        sorted.len(),
        quantile(sorted, 0.50),
        quantile(sorted, 0.90),
        quantile(sorted, 0.99),
        quantile(sorted, 1.0),
    );
}

/// Every row for one key store.
async fn run(store: &str, fixture: &Fixture) {
    print_row(
        store,
        "seal (warm)",
        &measure(async || fixture.seal().await).await,
    );
    print_row(
        store,
        "open (warm)",
        &measure(async || fixture.open(false).await).await,
    );
    print_row(
        store,
        "open (cold)",
        &measure(async || fixture.open(true).await).await,
    );
    print_row(
        store,
        "  cold: data_keys row read",
        &measure(async || fixture.read_row().await.0).await,
    );
    let (_, row) = fixture.read_row().await;
    print_row(
        store,
        "  cold: key store unwrap",
        &measure(async || fixture.unwrap(&row.wrapped).await).await,
    );
}

/// An OpenBao dev server on a free port, stopped on drop.
struct OpenBao {
    child: Child,
    addr: String,
    token: String,
}

impl OpenBao {
    /// `bao` on `PATH`, if any.
    fn binary() -> Option<PathBuf> {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("bao"))
            .find(|path| path.is_file())
    }

    async fn start(binary: &std::path::Path) -> OpenBao {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let token = format!("root-{}", Uuid::new_v4().simple());
        let child = Command::new(binary)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let bao = OpenBao {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token,
        };
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("{}/v1/sys/health", bao.addr)).await
                && r.status().is_success()
            {
                return bao;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("OpenBao did not start");
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    // `cargo test --benches` runs benches with `--bench` absent: nothing to measure then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    flowgate::http::tls::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "envelope latency, µs ({OPS} timed operations per row after {WARM_UP} untimed; SQLite)"
        );
        println!(
            "{:<6} {:<26} {:>6} {:>10} {:>10} {:>10} {:>10}",
            "store", "operation", "n", "p50", "p90", "p99", "max"
        );
        let local = Fixture::new(&[]).await;
        run("local", &local).await;
        local.close().await;

        match OpenBao::binary() {
            Some(binary) => {
                let bao = OpenBao::start(&binary).await;
                let vault = Fixture::new(&[
                    ("FLOWGATE_KEYSTORE", "vault".to_owned()),
                    ("FLOWGATE_VAULT_ADDR", bao.addr.clone()),
                    ("FLOWGATE_VAULT_TOKEN", bao.token.clone()),
                ])
                .await;
                run("vault", &vault).await;
                vault.close().await;
                drop(bao);
            }
            None => println!(
                "vault: skipped, `bao` is not on PATH (scripts/test installs it in \
                 ~/.cache/flowgate/tools/venv/bin)"
            ),
        }
    });
}
