//! The SAML identity provider the sign-in tests talk to: SimpleSAMLphp (Debian) behind
//! `tests/peers/saml/start.py`, started per test on a free port of 127.0.0.1, and the steps of
//! a browser signing in through it.

use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::oidc_peer::{Browser, Landing};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/saml/start.py");

/// A running SAML IdP; stopped, and its directory removed, when dropped.
pub struct SamlPeer {
    workdir: PathBuf,
    pub metadata_url: String,
    pub entity_id: String,
}

/// How the IdP treats one service provider.
#[derive(Default)]
pub struct SpOptions {
    /// Sign the `<Response>` as well.
    pub sign_response: bool,
    /// Leave the `<Assertion>` unsigned.
    pub unsigned_assertion: bool,
    /// Send the response to this ACS instead of the provider's own.
    pub acs_override: Option<String>,
}

impl SamlPeer {
    pub fn start() -> Self {
        let workdir = std::env::temp_dir().join(format!("saml-peer-{}", Uuid::new_v4()));
        let output = Command::new("python3")
            .arg(SCRIPT)
            .arg("start")
            .arg("--workdir")
            .arg(&workdir)
            .output()
            .expect("python3 runs the SAML peer");
        assert!(
            output.status.success(),
            "the SAML peer did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let line = String::from_utf8_lossy(&output.stdout);
        let info: Value = serde_json::from_str(line.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("the SAML peer said {line}: {e}"));
        SamlPeer {
            workdir,
            metadata_url: info["metadata_url"].as_str().unwrap().to_owned(),
            entity_id: info["entity_id"].as_str().unwrap().to_owned(),
        }
    }

    /// Registers Flowgate's provider `view` (as the API showed it) as a service provider.
    pub fn add_sp(&self, view: &Value, options: &SpOptions) {
        let acs = options
            .acs_override
            .clone()
            .unwrap_or_else(|| view["acs_url"].as_str().unwrap().to_owned());
        let mut command = Command::new("python3");
        command
            .arg(SCRIPT)
            .arg("add-sp")
            .arg("--workdir")
            .arg(&self.workdir)
            .arg("--sp-entity-id")
            .arg(view["sp_entity_id"].as_str().unwrap())
            .arg("--sp-acs")
            .arg(acs);
        if options.sign_response {
            command.arg("--sp-sign-response");
        }
        if options.unsigned_assertion {
            command.arg("--no-sp-sign-assertion");
        }
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for SamlPeer {
    fn drop(&mut self) {
        let _ = Command::new("python3")
            .arg(SCRIPT)
            .arg("stop")
            .arg("--workdir")
            .arg(&self.workdir)
            .output();
        let _ = std::fs::remove_dir_all(&self.workdir);
    }
}

/// What the IdP posts back through the browser.
#[derive(Clone)]
pub struct SamlPost {
    pub acs: String,
    pub response: String,
    pub relay_state: String,
}

impl SamlPost {
    /// The response's XML.
    pub fn xml(&self) -> String {
        String::from_utf8(STANDARD.decode(&self.response).unwrap()).unwrap()
    }

    /// This post with the response replaced by `xml`.
    pub fn with_xml(&self, xml: &str) -> Self {
        SamlPost {
            response: STANDARD.encode(xml),
            ..self.clone()
        }
    }
}

impl Browser {
    /// Begins a SAML login at Flowgate and signs in at the IdP as `user` (unless the browser
    /// still has a session there); returns what the IdP asks the browser to post to the ACS,
    /// without posting it.
    pub async fn saml_authorize(&self, app: &TestApp, idp: &str, user: &str) -> SamlPost {
        let start = app.url(&format!("/t/{}/auth/saml/{idp}/login", app.tenant));
        let mut url = self.redirect(&start).await;
        assert!(url.contains("SAMLRequest="), "{url}");
        // The IdP redirects to its login form, or (when the browser is signed in there) answers
        // with the form to post to the ACS.
        let (login, mut page) = loop {
            let response = self.client.get(&url).send().await.unwrap();
            if response.status().is_redirection() {
                let next = response.headers()[LOCATION].to_str().unwrap();
                url = reqwest::Url::parse(&url)
                    .unwrap()
                    .join(next)
                    .unwrap()
                    .to_string();
                continue;
            }
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            break (url, response.text().await.unwrap());
        };
        if !page.contains("name=\"SAMLResponse\"") {
            // No session at the IdP yet: its login form.
            let auth_state = reqwest::Url::parse(&login)
                .unwrap()
                .query_pairs()
                .find(|(k, _)| k == "AuthState")
                .expect("the IdP's login form carries AuthState")
                .1
                .into_owned();
            let password = format!("{user}-pass");
            page = self
                .client
                .post(&login)
                .form(&[
                    ("username", user),
                    ("password", password.as_str()),
                    ("AuthState", auth_state.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
        }
        SamlPost {
            acs: html_attribute(&page, "<form method=\"post\"", "action")
                .expect("the IdP answers with the form to the ACS"),
            response: input_value(&page, "SAMLResponse").expect("a SAMLResponse"),
            relay_state: input_value(&page, "RelayState").unwrap_or_default(),
        }
    }

    /// Posts `post` to the ACS, as the IdP's page makes the browser do.
    pub async fn saml_post(&self, post: &SamlPost) -> Landing {
        let response = self
            .client
            .post(&post.acs)
            .form(&[
                ("SAMLResponse", post.response.as_str()),
                ("RelayState", post.relay_state.as_str()),
            ])
            .send()
            .await
            .unwrap();
        Landing::of(&post.acs, response).await
    }

    /// Signs in as `user` through SAML provider `idp`, all the way.
    pub async fn saml_sign_in(&self, app: &TestApp, idp: &str, user: &str) -> Landing {
        let post = self.saml_authorize(app, idp, user).await;
        self.saml_post(&post).await
    }
}

/// The value of the hidden input called `name`.
fn input_value(page: &str, name: &str) -> Option<String> {
    html_attribute(page, &format!("name=\"{name}\""), "value")
}

/// The attribute `attribute` of the first tag containing `marker`, unescaped.
fn html_attribute(page: &str, marker: &str, attribute: &str) -> Option<String> {
    let at = page.find(marker)?;
    let tag_end = at + page[at..].find('>')?;
    let tag = &page[at..tag_end];
    let key = format!("{attribute}=\"");
    let start = tag.find(&key)? + key.len();
    let end = start + tag[start..].find('"')?;
    Some(
        tag[start..end]
            .replace("&amp;", "&")
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">"),
    )
}
