//! `spawn_app()` and the typed helpers the tests use.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use flowgate::app::AppState;
use flowgate::audit::RequestMeta;
use flowgate::config::Settings;
use flowgate::http::{ServeOptions, Server};
use flowgate::identity::{AccountCredential, Principal};
use flowgate::tenancy::Slug;
use flowgate::tenancy::work::TenantContext;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

pub const POSTGRES_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Which database a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// Generates one test per database from one body: `mod name { fn sqlite(); fn postgres(); }`.
#[macro_export]
macro_rules! on_both_databases {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $app = $crate::helpers::spawn_app($crate::helpers::Db::Sqlite).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $app = $crate::helpers::spawn_app($crate::helpers::Db::Postgres).await;
                    $body
                }
            }
        )*
    };
}

/// A running Flowgate with one onboarded tenant.
pub struct TestApp {
    pub db: Db,
    pub base: String,
    pub client: reqwest::Client,
    pub operator_token: String,
    /// The tenant made by the platform API for this test.
    pub tenant: String,
    /// Its bootstrap admin key.
    pub admin_key: String,
    pub state: Arc<AppState>,
    pub data_dir: PathBuf,
    pub settings_vars: HashMap<String, String>,
    pub server: Option<Server>,
    pub admin_addr: Option<std::net::SocketAddr>,
    database: Option<TestDatabase>,
}

/// Options for [`spawn_app_with`].
#[derive(Default)]
pub struct Options {
    /// Extra `FLOWGATE_*` variables.
    pub vars: Vec<(String, String)>,
    pub admin_listener: bool,
    /// The host PostgreSQL is reached at (default `127.0.0.1`): `localhost` is the name its
    /// certificate carries.
    pub postgres_host: Option<&'static str>,
    /// The host of the public URL and of the test's requests (default `127.0.0.1`): WebAuthn
    /// needs a domain name, `localhost`.
    pub public_host: Option<&'static str>,
}

pub async fn spawn_app(db: Db) -> TestApp {
    spawn_app_with(db, Options::default()).await
}

pub async fn spawn_app_with(db: Db, options: Options) -> TestApp {
    spawn(db, options, None).await
}

/// [`spawn_app_with`], talking through `client` (for custom trust or client certificates).
pub async fn spawn_app_using(db: Db, options: Options, client: reqwest::Client) -> TestApp {
    spawn(db, options, Some(client)).await
}

async fn spawn(db: Db, options: Options, client: Option<reqwest::Client>) -> TestApp {
    flowgate::http::tls::install_crypto_provider();
    let data_dir = std::env::temp_dir().join(format!("flowgate-test-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&data_dir).unwrap();
    let operator_token = format!("op-{}", Uuid::new_v4().simple());
    let mut vars: HashMap<String, String> = HashMap::from([
        ("FLOWGATE_DATA_DIR".into(), data_dir.display().to_string()),
        ("FLOWGATE_OPERATOR_TOKEN".into(), operator_token.clone()),
        ("FLOWGATE_LOG".into(), "warn".into()),
        ("FLOWGATE_AUDIT_CHECKPOINT_INTERVAL_MS".into(), "100".into()),
        ("FLOWGATE_TLS_RELOAD_INTERVAL_MS".into(), "200".into()),
        // Tests fail authentication on purpose, many times, from one address; the rate-limit
        // tests set their own budget.
        ("FLOWGATE_RATE_LIMIT_FAILURES".into(), "100000".into()),
    ]);
    let database = match db {
        Db::Sqlite => None,
        Db::Postgres => {
            let database = TestDatabase::create().await;
            vars.insert(
                "FLOWGATE_DATABASE_URL".into(),
                database.url_at(options.postgres_host.unwrap_or("127.0.0.1")),
            );
            Some(database)
        }
    };
    // Bound first, so that the public URL (redirect URIs, cookie origins) names its port.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let public_host = options.public_host.unwrap_or("127.0.0.1");
    vars.insert(
        "FLOWGATE_PUBLIC_URL".into(),
        format!(
            "https://{public_host}:{}",
            listener.local_addr().unwrap().port()
        ),
    );
    // The test peers (OpenID and SAML providers) listen on the loopback interface.
    vars.insert("FLOWGATE_IDP_PRIVATE_NETWORKS".into(), "127.0.0.0/8".into());
    vars.extend(options.vars);
    let settings = Settings::from_sources(None, &|name| vars.get(name).cloned()).unwrap();
    let opened = AppState::open(settings).await.unwrap();
    let admin_listener = options
        .admin_listener
        .then(|| TcpListener::bind("127.0.0.1:0").unwrap());
    let server = Server::start(
        Arc::clone(&opened.state),
        ServeOptions {
            listener,
            admin_listener,
            handle_signals: false,
        },
    )
    .unwrap();
    let base = format!("https://{public_host}:{}", server.addr.port());
    let client = client.unwrap_or_else(|| client_trusting(&data_dir));
    let mut app = TestApp {
        db,
        base,
        client,
        operator_token,
        tenant: String::new(),
        admin_key: String::new(),
        state: opened.state,
        data_dir,
        settings_vars: vars,
        admin_addr: server.admin_addr,
        server: Some(server),
        database,
    };
    let slug = unique_slug("acme");
    app.admin_key = app.create_tenant(&slug).await;
    app.tenant = slug;
    app
}

/// An HTTPS client that trusts the server's generated certificate only.
pub fn client_trusting(data_dir: &std::path::Path) -> reqwest::Client {
    let pem = std::fs::read(data_dir.join("tls/cert.pem")).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
        .build()
        .unwrap()
}

/// A slug no other test uses.
pub fn unique_slug(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `/t/<tenant>/api/v1<path>`
    pub fn tenant_url(&self, path: &str) -> String {
        self.url(&format!("/t/{}/api/v1{path}", self.tenant))
    }

    /// Onboards `slug` through the platform API and returns its admin key.
    pub async fn create_tenant(&self, slug: &str) -> String {
        let response = self
            .client
            .post(self.url("/api/v1/platform/tenants"))
            .bearer_auth(&self.operator_token)
            .json(&json!({"slug": slug, "name": format!("Tenant {slug}"), "environment": "dev"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::CREATED,
            "{}",
            response.text().await.unwrap()
        );
        let body: Value = response.json().await.unwrap();
        body["admin_api_key"].as_str().unwrap().to_owned()
    }

    /// A request to the tenant API as `key`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, self.tenant_url(path))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, key, None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, key, Some(body)).await
    }

    /// Creates a user as the admin and returns its id.
    pub async fn create_user(&self, email: &str) -> String {
        let (status, body) = self
            .post(
                "/users",
                &self.admin_key,
                json!({"email": email, "display_name": email}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    /// A new service account holding `role` on the tenant (or no role); its id.
    pub async fn account_with_role(&self, role: Option<&str>) -> String {
        let name = format!("sa-{}", Uuid::new_v4().simple());
        let (status, account) = self
            .post("/service-accounts", &self.admin_key, json!({"name": name}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{account}");
        let id = account["id"].as_str().unwrap().to_owned();
        if let Some(role) = role {
            let (status, body) = self
                .post(
                    "/role-bindings",
                    &self.admin_key,
                    json!({"role": role, "subject": {"type": "service_account", "id": id}, "scope": {"type": "tenant"}}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
        id
    }

    /// A new service account holding `role` on the tenant (or no role), and a key for it.
    pub async fn key_with_role(&self, role: Option<&str>) -> String {
        let id = self.account_with_role(role).await;
        let (status, key) = self
            .post(
                "/api-keys",
                &self.admin_key,
                json!({"name": "test", "service_account_id": id}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{key}");
        key["key"].as_str().unwrap().to_owned()
    }

    /// A new service account with `role` (or none), as the principal a worker acting for it
    /// holds outside HTTP.
    pub async fn worker(&self, role: Option<&str>) -> Principal {
        Principal::ServiceAccount {
            id: self.account_with_role(role).await.parse().unwrap(),
            credential: AccountCredential::ApiKey(Uuid::nil()),
        }
    }

    /// The unit of work of `principal` in this app's tenant, as a job outside HTTP opens it.
    pub async fn work(&self, principal: Principal) -> TenantContext {
        let slug = Slug::parse(&self.tenant).unwrap();
        let tenant = self.state.tenants.get(&slug).await.unwrap();
        let meta = RequestMeta {
            request_id: format!("job-{}", Uuid::new_v4().simple()),
            ..RequestMeta::default()
        };
        TenantContext::open(self.state.clone(), tenant, principal, meta)
            .await
            .unwrap()
    }

    /// Every audit event of the tenant, oldest first (reading them adds events of its own).
    pub async fn audit_events(&self) -> Vec<Value> {
        self.state.audit.checkpoint_now().await.unwrap();
        let mut events = Vec::new();
        let mut after = 0i64;
        loop {
            let (status, page) = self
                .get(
                    &format!("/audit/events?limit=1000&after={after}"),
                    &self.admin_key,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{page}");
            events.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(cursor) => after = cursor.parse().unwrap(),
                None => return events,
            }
        }
    }

    /// A direct connection to the tenant's schema or file, bypassing the application (to play
    /// the attacker with database access, or to look at what is stored).
    pub async fn tenant_connection(&self) -> sea_orm::DatabaseConnection {
        match self.db {
            Db::Sqlite => {
                let file = self
                    .data_dir
                    .join("tenants")
                    .join(format!("{}.db", self.tenant));
                flowgate::tenancy::open_sqlite(&file).unwrap()
            }
            Db::Postgres => {
                let mut opts = sea_orm::ConnectOptions::new(self.database.as_ref().unwrap().url());
                opts.set_schema_search_path(
                    flowgate::tenancy::Slug::parse(&self.tenant)
                        .unwrap()
                        .schema(),
                );
                sea_orm::Database::connect(opts).await.unwrap()
            }
        }
    }

    /// Runs a statement directly in the tenant's storage.
    ///
    /// A change behind Flowgate's back reaches no cache (an authenticated session is trusted
    /// from memory for up to a minute), so this replica's caches are flushed after it: tests
    /// see the edit at once, as the application would after that minute.
    pub async fn tenant_sql(&self, sql: &str) {
        use sea_orm::ConnectionTrait as _;
        let conn = self.tenant_connection().await;
        conn.execute_unprepared(sql).await.unwrap();
        conn.close().await.unwrap();
        self.state.forget_everything();
    }

    /// Runs a statement directly in the control plane (the platform trail lives there).
    pub async fn control_sql(&self, sql: &str) {
        use sea_orm::ConnectionTrait as _;
        let conn = match self.db {
            Db::Sqlite => {
                flowgate::tenancy::open_sqlite(&self.data_dir.join("control.db")).unwrap()
            }
            Db::Postgres => {
                let mut opts = sea_orm::ConnectOptions::new(self.database.as_ref().unwrap().url());
                opts.set_schema_search_path(flowgate::tenancy::CONTROL_SCHEMA);
                sea_orm::Database::connect(opts).await.unwrap()
            }
        };
        conn.execute_unprepared(sql).await.unwrap();
        conn.close().await.unwrap();
    }

    /// Rows of a query run directly in the tenant's storage, as JSON objects.
    pub async fn tenant_rows(&self, sql: &str) -> Vec<Value> {
        use sea_orm::FromQueryResult as _;
        let conn = self.tenant_connection().await;
        let statement = sea_orm::Statement::from_string(conn.get_database_backend(), sql);
        let rows = sea_orm::JsonValue::find_by_statement(statement)
            .all(&conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        rows
    }

    /// A second replica: another process state and server on the same database and key store,
    /// as a load balancer would spread requests over. Returns its base URL.
    pub async fn replica(&self) -> (String, Server, Arc<AppState>) {
        let settings =
            Settings::from_sources(None, &|name| self.settings_vars.get(name).cloned()).unwrap();
        let opened = AppState::open(settings).await.unwrap();
        let server = Server::start(
            Arc::clone(&opened.state),
            ServeOptions {
                listener: TcpListener::bind("127.0.0.1:0").unwrap(),
                admin_listener: None,
                handle_signals: false,
            },
        )
        .unwrap();
        (
            format!("https://127.0.0.1:{}", server.addr.port()),
            server,
            opened.state,
        )
    }

    pub fn database_url(&self) -> Option<String> {
        self.database.as_ref().map(TestDatabase::url)
    }

    /// The name of the app's PostgreSQL database, and a connection to its server as the
    /// administrator (to watch or end the app's sessions).
    pub async fn postgres_admin(&self) -> (String, sea_orm::DatabaseConnection) {
        let name = self
            .database
            .as_ref()
            .expect("a PostgreSQL app")
            .name
            .clone();
        let admin = sea_orm::Database::connect(POSTGRES_ADMIN_URL)
            .await
            .unwrap();
        (name, admin)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A PostgreSQL database that exists for one test.
pub struct TestDatabase {
    pub name: String,
}

impl TestDatabase {
    pub async fn create() -> Self {
        use sea_orm::ConnectionTrait as _;
        let name = format!("flowgate_test_{}", Uuid::new_v4().simple());
        let admin = sea_orm::Database::connect(POSTGRES_ADMIN_URL)
            .await
            .unwrap();
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        admin.close().await.unwrap();
        TestDatabase { name }
    }

    pub fn url(&self) -> String {
        self.url_at("127.0.0.1")
    }

    pub fn url_at(&self, host: &str) -> String {
        format!("postgres://postgres@{host}:5432/{}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and the test's runtime may be gone.
        let _ = std::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// Asserts that `body` is a problem document with `code`.
pub fn assert_problem(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], expected.as_u16(), "{body}");
    assert!(body["type"].as_str().unwrap().ends_with(code), "{body}");
    assert!(!body["request_id"].as_str().unwrap().is_empty(), "{body}");
}

/// Starts the Python test peer `script` (a path under `tests/peers`) with `args`; it announces
/// `{"port": N}` on the first line of its standard output. It is killed with the child.
pub async fn python_peer(script: &str, args: &[&std::ffi::OsStr]) -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt as _;
    let path = format!("{}/tests/peers/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("python3 runs {script}: {e}"));
    let mut line = String::new();
    tokio::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let announced: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("{script} did not start ({e}): {line}"));
    (child, announced["port"].as_u64().unwrap() as u16)
}

/// The values of a JSON-lines file; none while it does not exist.
pub fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A PostgreSQL app whose replicas share `redis` and allow `failures` failed authentications per
/// minute from one source, with a second replica of it: the app, and the replica's base URL,
/// server and state.
pub async fn replicas_with_redis(
    redis: &Redis,
    failures: u32,
) -> (TestApp, (String, Server, Arc<AppState>)) {
    let app = spawn_app_with(
        Db::Postgres,
        Options {
            vars: vec![
                ("FLOWGATE_REDIS_URL".into(), redis.url.clone()),
                ("FLOWGATE_RATE_LIMIT_FAILURES".into(), failures.to_string()),
            ],
            ..Options::default()
        },
    )
    .await;
    let replica = app.replica().await;
    (app, replica)
}

/// A `redis-server` of the test's own on a free port, keeping nothing on disk; stopped on drop.
pub struct Redis {
    child: std::process::Child,
    pub url: String,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("`redis-server` is installed (scripts/test installs it)");
        let redis = Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return redis;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start");
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
