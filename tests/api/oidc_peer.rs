//! The OpenID provider the sign-in tests talk to: npm `oidc-provider` behind
//! `tests/peers/oidc/provider.mjs`, started per test on a free port of 127.0.0.1, and a browser
//! (a cookie jar that follows no redirect by itself) that signs in through it.

use std::process::Stdio;

use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::helpers::TestApp;

pub const CLIENT_ID: &str = "flowgate-test";
pub const CLIENT_SECRET: &str = "test-client-secret-not-real";
pub const AZURE_DIRECTORY: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

/// A running provider.
pub struct OidcPeer {
    _child: Child,
    /// The peer's configuration and logs.
    dir: std::path::PathBuf,
    pub issuer: String,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    http: reqwest::Client,
}

impl OidcPeer {
    /// Starts a provider configured by `config` (see tests/peers/README.md), whose client
    /// `flowgate-test` may redirect to `redirect_uri`.
    pub async fn start(mut config: Value, redirect_uri: &str) -> Self {
        config["clients"] = json!([{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect_uri],
        }]);
        let dir = std::env::temp_dir().join(format!("oidc-peer-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.json");
        std::fs::write(&file, config.to_string()).unwrap();
        // A peer that has not announced itself after 15 s is started again, once: on this box
        // node now and then stalls at start under a loaded full run (its log is kept for that).
        let (child, line) = match spawn_peer(&file, &dir.join("peer.log")).await {
            Ok(started) => started,
            Err(log) => {
                eprintln!("the OIDC peer stalled at start; starting another. Its log:\n{log}");
                spawn_peer(&file, &dir.join("peer-2.log"))
                    .await
                    .unwrap_or_else(|log| panic!("the OIDC peer did not start twice:\n{log}"))
            }
        };
        let info: Value = serde_json::from_str(&line).unwrap();
        let port = info["port"].as_u64().unwrap();
        OidcPeer {
            _child: child,
            dir,
            issuer: info["issuer"].as_str().unwrap().to_owned(),
            origin: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// A provider with one account per `(subject, claims)`.
    pub async fn with_accounts(
        preset: &str,
        accounts: &[(&str, Value)],
        redirect_uri: &str,
    ) -> Self {
        let mut config = json!({"preset": preset, "accounts": account_list(accounts)});
        if preset == "azure_ad" {
            config["tenant_id"] = json!(AZURE_DIRECTORY);
            config["azure_overage"] = json!(true);
        }
        Self::start(config, redirect_uri).await
    }

    /// An Azure AD provider playing Entra ID's multi-tenant `organizations` endpoint: its
    /// discovery names the issuer template `…/{tenantid}/v2.0`, and each account's ID token
    /// carries its own `tid` (default [`AZURE_DIRECTORY`]) and that directory's issuer.
    pub async fn azure_organizations(accounts: &[(&str, Value)], redirect_uri: &str) -> Self {
        let config = json!({
            "preset": "azure_ad",
            "azure_multi_tenant": "organizations",
            "tenant_id": AZURE_DIRECTORY,
            "accounts": account_list(accounts),
        });
        Self::start(config, redirect_uri).await
    }

    /// The issuer of directory `tid`'s tokens at a multi-tenant peer.
    pub fn directory_issuer(&self, tid: &str) -> String {
        format!("{}/{tid}/v2.0", self.origin)
    }

    /// Queues a change of the next ID token the provider issues.
    pub async fn tamper_next_id_token(&self, change: Value) {
        self.post("/__test/tamper-next-id-token", change).await;
    }

    /// Replaces the claims of account `id`.
    pub async fn set_account(&self, id: &str, claims: Value) {
        let response = self
            .http
            .put(format!("{}/__test/accounts/{id}", self.origin))
            .json(&json!({"claims": claims}))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// Signs with new keys from now on, publishing only them.
    pub async fn rotate_keys(&self) {
        self.post("/__test/rotate-keys", json!({"keep_old": false}))
            .await;
    }

    /// The provider's request counters.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/__test/stats", self.origin))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.origin))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{path}");
    }
}

impl Drop for OidcPeer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The peer's `accounts`: one per `(subject, claims)`.
fn account_list(accounts: &[(&str, Value)]) -> Vec<Value> {
    accounts
        .iter()
        .map(|(id, claims)| json!({"id": id, "claims": claims}))
        .collect()
}

/// Starts `node provider.mjs config` and reads the line it announces itself with; the peer's
/// stderr goes to `log`, which is returned when no line came within 15 s.
async fn spawn_peer(
    config: &std::path::Path,
    log: &std::path::Path,
) -> Result<(Child, String), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/oidc/provider.mjs");
    let mut child = Command::new("node")
        .arg(script)
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs the OIDC peer (scripts/test installs it)");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(std::time::Duration::from_secs(15), lines.next_line()).await;
    match line {
        Ok(Ok(Some(line))) => Ok((child, line)),
        _ => Err(std::fs::read_to_string(log).unwrap_or_default()),
    }
}

/// A browser: a cookie jar over HTTPS to Flowgate (trusting its certificate) and HTTP to the
/// provider, following redirects one at a time.
pub struct Browser {
    pub client: reqwest::Client,
}

/// What a sign-in ended with.
pub struct Landing {
    pub status: StatusCode,
    /// The URL that answered: the callback the provider sent the browser to (with its code
    /// and state), or the SAML ACS.
    pub callback: String,
    pub location: Option<String>,
    pub set_cookies: Vec<String>,
    pub body: String,
}

impl Landing {
    /// What the browser saw when `url` answered `response`.
    pub async fn of(url: &str, response: reqwest::Response) -> Self {
        Landing {
            status: response.status(),
            callback: url.to_owned(),
            location: response
                .headers()
                .get(LOCATION)
                .map(|v| v.to_str().unwrap().to_owned()),
            set_cookies: response
                .headers()
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect(),
            body: response.text().await.unwrap(),
        }
    }
}

impl Browser {
    pub fn new(app: &TestApp) -> Self {
        let pem = std::fs::read(app.data_dir.join("tls/cert.pem")).unwrap();
        Browser {
            client: reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Begins a login at Flowgate and signs in at the provider as `account`; returns the
    /// callback URL the provider sends the browser to, without visiting it.
    pub async fn authorize(&self, app: &TestApp, idp: &str, account: &str) -> String {
        let start = app.url(&format!("/t/{}/auth/oidc/{idp}/login", app.tenant));
        let to_provider = self.redirect(&start).await;
        let to_interaction = self.redirect(&to_provider).await;
        let interaction = absolute(&to_provider, &to_interaction);
        let response = self
            .client
            .post(format!("{interaction}/login"))
            .form(&[("login", account)])
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "login at the provider"
        );
        let resume = absolute(&interaction, location(&response));
        let callback = self.redirect(&resume).await;
        assert!(callback.contains("/callback?"), "{callback}");
        callback
    }

    /// Visits `url` and returns where it redirects.
    pub async fn redirect(&self, url: &str) -> String {
        let response = self.client.get(url).send().await.unwrap();
        assert!(
            response.status().is_redirection(),
            "{url}: {}",
            response.status()
        );
        location(&response).to_owned()
    }

    /// Visits the callback URL.
    pub async fn land(&self, callback: &str) -> Landing {
        let response = self.client.get(callback).send().await.unwrap();
        Landing::of(callback, response).await
    }

    /// Signs in as `account` through provider `idp`, all the way.
    pub async fn sign_in(&self, app: &TestApp, idp: &str, account: &str) -> Landing {
        let callback = self.authorize(app, idp, account).await;
        self.land(&callback).await
    }

    /// Signs in as `account` through provider `idp`, which must succeed.
    pub async fn sign_in_ok(&self, app: &TestApp, idp: &str, account: &str) {
        let landing = self.sign_in(app, idp, account).await;
        assert_eq!(landing.status, StatusCode::SEE_OTHER, "{}", landing.body);
    }

    /// A tenant API call with this browser's cookies.
    pub async fn api(
        &self,
        app: &TestApp,
        method: reqwest::Method,
        path: &str,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, app.tenant_url(path))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

fn location(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get(LOCATION)
        .expect("a Location")
        .to_str()
        .unwrap()
}

/// `location` resolved against the URL it came from.
fn absolute(from: &str, location: &str) -> String {
    reqwest::Url::parse(from)
        .unwrap()
        .join(location)
        .unwrap()
        .to_string()
}
