//! Sign-in through a tenant's SAML identity providers, against a real IdP (SimpleSAMLphp), with
//! the attacks a service provider must refuse: replays, tampering, signature wrapping, unsigned
//! assertions, responses for another service or another browser.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{Db, TestApp, assert_problem, spawn_app};
use crate::oidc_peer::{Browser, Landing};
use crate::saml_peer::{SamlPeer, SamlPost, SpOptions};

/// Starts an IdP, configures it in Flowgate from its metadata URL and registers Flowgate at it.
async fn provider(app: &TestApp, options: &SpOptions) -> (String, SamlPeer, Value) {
    let peer = SamlPeer::start();
    let (status, view) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({
                "name": "Acme SAML",
                "kind": "saml",
                "metadata_url": peer.metadata_url,
                "email_domains": ["acme.example"],
                "claim_mappings": {"department": "department"},
                "group_mappings": {"finance": "finance"},
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    peer.add_sp(&view, options);
    (view["id"].as_str().unwrap().to_owned(), peer, view)
}

async fn last_refusal(app: &TestApp) -> String {
    let refusal = app
        .audit_events()
        .await
        .into_iter()
        .rfind(|e| e["action"] == "auth.login" && e["decision"] == "deny")
        .expect("a refused sign-in on record");
    refusal["details"]["reason"].as_str().unwrap().to_owned()
}

fn refused(landing: &Landing) {
    assert_eq!(landing.status, StatusCode::UNAUTHORIZED, "{}", landing.body);
    assert!(
        !landing
            .set_cookies
            .iter()
            .any(|c| c.starts_with("__Host-flowgate-session-") && !c.contains("Max-Age=0")),
        "a refused sign-in opens no session: {:?}",
        landing.set_cookies
    );
}

crate::on_both_databases! {
    async fn a_person_signs_in_through_a_saml_provider(app) {
        let (idp, peer, view) = provider(&app, &SpOptions::default()).await;
        assert_eq!(view["kind"], "saml");
        assert_eq!(view["idp_entity_id"], peer.entity_id.as_str());
        assert_eq!(view["certificate_fingerprints"].as_array().unwrap().len(), 1);
        assert!(view.get("client_id").is_none() && view.get("metadata_xml").is_none(), "{view}");
        let sp_entity_id = view["sp_entity_id"].as_str().unwrap();
        assert_eq!(
            view["acs_url"].as_str().unwrap(),
            format!("{}/t/{}/auth/saml/{idp}/acs", app.base, app.tenant)
        );

        // The SP metadata to register at the IdP is served at the entity id.
        let metadata = app.client.get(sp_entity_id).send().await.unwrap();
        assert_eq!(metadata.status(), StatusCode::OK);
        assert_eq!(metadata.headers()["content-type"], "application/samlmetadata+xml");
        let xml = metadata.text().await.unwrap();
        assert!(xml.contains(view["acs_url"].as_str().unwrap()), "{xml}");
        assert!(xml.contains("WantAssertionsSigned=\"true\""), "{xml}");

        // The login page sends an acme.example address to this provider.
        let browser = Browser::new(&app);
        let chooser = browser
            .client
            .get(app.url(&format!("/t/{}/auth/login?email=alice@acme.example", app.tenant)))
            .send()
            .await
            .unwrap();
        assert_eq!(
            chooser.headers()["location"].to_str().unwrap(),
            format!("/t/{}/auth/saml/{idp}/login", app.tenant)
        );

        let landing = browser.saml_sign_in(&app, &idp, "alice").await;
        assert_eq!(landing.status, StatusCode::SEE_OTHER, "{}", landing.body);
        let cookie = format!("__Host-flowgate-session-{}=", app.tenant);
        assert!(landing.set_cookies.iter().any(|c| c.starts_with(&cookie)));
        let (status, me) = browser.api(&app, Method::GET, "/me").await;
        assert_eq!(status, StatusCode::OK, "{me}");
        assert_eq!(me["email"], "alice@acme.example");
        assert_eq!(me["name"], "Alice Admin");
        assert_eq!(me["attributes"], json!({"department": "finance"}));
        assert_eq!(me["groups"], json!(["finance"]));

        let trail = app.audit_events().await;
        let login = trail
            .iter()
            .rfind(|e| e["action"] == "auth.login" && e["status"] == 303)
            .unwrap_or_else(|| panic!("the sign-in is audited: {trail:?}"));
        assert_eq!(login["details"]["method"], "saml");
        assert_eq!(login["actor_id"], me["id"]);
        assert!(!login.to_string().contains("SAMLResponse"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_response_covering_an_unsigned_assertion_is_accepted() {
    let app = spawn_app(Db::Sqlite).await;
    let options = SpOptions {
        sign_response: true,
        unsigned_assertion: true,
        ..SpOptions::default()
    };
    let (idp, _peer, _) = provider(&app, &options).await;
    let browser = Browser::new(&app);
    let post = browser.saml_authorize(&app, &idp, "bob").await;
    let xml = post.xml();
    let assertion = xml.find("<saml:Assertion").unwrap();
    assert!(
        xml[..assertion].contains("<ds:Signature"),
        "the response is signed: {xml}"
    );
    assert!(
        !xml[assertion..].contains("<ds:Signature"),
        "the assertion is not: {xml}"
    );
    let landing = browser.saml_post(&post).await;
    assert_eq!(landing.status, StatusCode::SEE_OTHER, "{}", landing.body);
    let (_, me) = browser.api(&app, Method::GET, "/me").await;
    assert_eq!(me["email"], "bob@acme.example");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_assertion_is_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let options = SpOptions {
        unsigned_assertion: true,
        ..SpOptions::default()
    };
    let (idp, _peer, _) = provider(&app, &options).await;
    let browser = Browser::new(&app);
    refused(&browser.saml_sign_in(&app, &idp, "alice").await);
    assert_eq!(last_refusal(&app).await, "bad_signature");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_tampered_and_wrapped_responses_are_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer, _) = provider(&app, &SpOptions::default()).await;
    let browser = Browser::new(&app);
    let first = browser.saml_authorize(&app, &idp, "alice").await;
    let landing = browser.saml_post(&first).await;
    assert_eq!(landing.status, StatusCode::SEE_OTHER, "{}", landing.body);

    // The same post again: its RelayState was used.
    refused(&browser.saml_post(&first).await);
    assert_eq!(last_refusal(&app).await, "unknown_state");

    // The old response with a new login's RelayState: it answers another AuthnRequest.
    let fresh = browser.saml_authorize(&app, &idp, "alice").await;
    let replay = SamlPost {
        relay_state: fresh.relay_state.clone(),
        ..first.clone()
    };
    refused(&browser.saml_post(&replay).await);
    assert_eq!(last_refusal(&app).await, "unsolicited_response");

    // Tampered: the signed assertion now names someone else.
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let xml = post.xml();
    assert!(xml.contains("alice@acme.example"));
    let tampered = post.with_xml(&xml.replace("alice@acme.example", "mallory@acme.example"));
    refused(&browser.saml_post(&tampered).await);
    assert_eq!(last_refusal(&app).await, "bad_signature");

    // Signature wrapping: an unsigned assertion for mallory beside the signed one.
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let xml = post.xml();
    let start = xml.find("<saml:Assertion").unwrap();
    let end = xml.find("</saml:Assertion>").unwrap() + "</saml:Assertion>".len();
    let signed = &xml[start..end];
    let sig_start = signed.find("<ds:Signature").unwrap();
    let sig_end = signed.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
    let evil = format!("{}{}", &signed[..sig_start], &signed[sig_end..])
        .replace("alice@acme.example", "mallory@acme.example")
        .replacen("ID=\"_", "ID=\"_evil", 1);
    let wrapped = format!("{}{evil}{}", &xml[..start], &xml[start..]);
    refused(&browser.saml_post(&post.with_xml(&wrapped)).await);
    assert_eq!(last_refusal(&app).await, "unacceptable_structure");
    // …and the signed one tucked inside the evil one.
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let xml = post.xml();
    let signed = xml
        [xml.find("<saml:Assertion").unwrap()..xml.find("</saml:Assertion>").unwrap() + 17]
        .to_owned();
    let inner = evil.replacen("</saml:Issuer>", &format!("</saml:Issuer>{signed}"), 1);
    let nested = xml.replace(&signed, &inner);
    refused(&browser.saml_post(&post.with_xml(&nested)).await);
    assert_eq!(last_refusal(&app).await, "unacceptable_structure");

    // Stripped of its signature.
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let xml = post.xml();
    let stripped = format!(
        "{}{}",
        &xml[..xml.find("<ds:Signature").unwrap()],
        &xml[xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len()..]
    );
    refused(&browser.saml_post(&post.with_xml(&stripped)).await);
    assert_eq!(last_refusal(&app).await, "bad_signature");

    // A signature whose reference leaves the document (xmlsec would read the file, or fetch
    // the URL, before checking anything) never reaches xmlsec.
    for target in [
        "file:///dev/zero",
        "http://169.254.169.254/latest/meta-data",
    ] {
        let post = browser.saml_authorize(&app, &idp, "alice").await;
        let xml = post.xml();
        let at = xml.find("<ds:Reference URI=\"").unwrap() + "<ds:Reference URI=\"".len();
        let end = at + xml[at..].find('"').unwrap();
        let external = format!("{}{target}{}", &xml[..at], &xml[end..]);
        refused(&browser.saml_post(&post.with_xml(&external)).await);
        assert_eq!(
            last_refusal(&app).await,
            "unacceptable_structure",
            "{target}"
        );
    }
    // Comment injection into a signed value (alice@acme.example<!---->.evil.example) and a
    // document libxml2 would decode differently from the screen (UTF-7).
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let commented = post
        .xml()
        .replace("alice@acme.example", "alice@acme.example<!---->.evil");
    refused(&browser.saml_post(&post.with_xml(&commented)).await);
    assert_eq!(last_refusal(&app).await, "unacceptable_structure");
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let utf7 = format!("<?xml version=\"1.0\" encoding=\"UTF-7\"?>{}", post.xml());
    refused(&browser.saml_post(&post.with_xml(&utf7)).await);
    assert_eq!(last_refusal(&app).await, "unacceptable_structure");

    // A DTD (an entity-expansion bomb) never reaches a parser.
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let bomb = format!(
        "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;\">]>{}",
        post.xml()
    );
    refused(&browser.saml_post(&post.with_xml(&bomb)).await);
    assert_eq!(last_refusal(&app).await, "unacceptable_structure");

    // Garbage and an oversized body are refused the same way, and nothing else was signed in.
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let garbage = SamlPost {
        response: "not base64 at all!".into(),
        ..post.clone()
    };
    refused(&browser.saml_post(&garbage).await);
    let post = browser.saml_authorize(&app, &idp, "alice").await;
    let huge = SamlPost {
        response: "A".repeat(500 * 1024),
        ..post
    };
    refused(&browser.saml_post(&huge).await);
    assert_eq!(last_refusal(&app).await, "unacceptable_structure");
    let (_, users) = app.get("/users", &app.admin_key).await;
    assert!(!users.to_string().contains("mallory"), "{users}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_for_another_browser_or_service_is_refused() {
    let app = spawn_app(Db::Sqlite).await;
    let (idp, _peer, _) = provider(&app, &SpOptions::default()).await;

    // Login CSRF / fixation: a response posted by a browser that did not begin the login.
    let victim = Browser::new(&app);
    let post = Browser::new(&app).saml_authorize(&app, &idp, "alice").await;
    refused(&victim.saml_post(&post).await);
    assert_eq!(last_refusal(&app).await, "foreign_browser");

    // A response the IdP addressed to another service's ACS.
    let (other, peer, view) = provider_named(&app, "Elsewhere").await;
    peer.add_sp(
        &view,
        &SpOptions {
            acs_override: Some("https://elsewhere.example/acs".into()),
            ..SpOptions::default()
        },
    );
    let browser = Browser::new(&app);
    let mut post = browser.saml_authorize(&app, &other, "alice").await;
    post.acs = view["acs_url"].as_str().unwrap().to_owned();
    refused(&browser.saml_post(&post).await);
    assert_eq!(last_refusal(&app).await, "wrong_recipient");

    // A response of one provider posted to another provider's ACS.
    let browser = Browser::new(&app);
    let mut post = browser.saml_authorize(&app, &idp, "alice").await;
    post.acs = view["acs_url"].as_str().unwrap().to_owned();
    refused(&browser.saml_post(&post).await);
}

async fn provider_named(app: &TestApp, name: &str) -> (String, SamlPeer, Value) {
    let peer = SamlPeer::start();
    let (status, view) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({"name": name, "kind": "saml", "metadata_url": peer.metadata_url}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    (view["id"].as_str().unwrap().to_owned(), peer, view)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_providers_are_checked_when_configured() {
    let app = spawn_app(Db::Sqlite).await;
    let app = &app;
    let create = |body: Value| async move {
        let (status, problem) = app.post("/identity-providers", &app.admin_key, body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        create(json!({"name": "x", "kind": "saml"})).await,
        ["metadata_xml"]
    );
    assert_eq!(
        create(json!({"name": "x", "kind": "saml", "metadata_xml": "<x/>", "client_secret": "s", "issuer": "https://a.example"})).await,
        ["issuer", "client_secret"]
    );
    let no_cert = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example.com"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#;
    assert_eq!(
        create(json!({"name": "x", "kind": "saml", "metadata_xml": no_cert})).await,
        ["metadata_xml"]
    );
    let bomb = format!("<!DOCTYPE x [<!ENTITY a \"a\">]>{no_cert}");
    assert_eq!(
        create(json!({"name": "x", "kind": "saml", "metadata_xml": bomb})).await,
        ["metadata_xml"]
    );
    assert_eq!(
        create(
            json!({"name": "x", "kind": "saml", "metadata_url": "http://169.254.169.254/latest"})
        )
        .await,
        ["metadata_url"]
    );
    assert_eq!(
        create(json!({"name": "x", "kind": "saml", "metadata_url": "http://127.0.0.1:9/metadata"}))
            .await,
        ["metadata_url"]
    );

    // A SAML provider takes SAML changes only, and fetches its metadata again on request.
    let (id, peer, _) = provider(app, &SpOptions::default()).await;
    let (status, problem) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{id}"),
            &app.admin_key,
            Some(json!({"client_id": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    let (status, view) = app
        .call(
            Method::PATCH,
            &format!("/identity-providers/{id}"),
            &app.admin_key,
            Some(json!({"metadata_url": peer.metadata_url, "email_attribute": "mail"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert_eq!(view["email_attribute"], "mail");
    // An OIDC provider's login route does not serve a SAML provider.
    let response = app
        .client
        .get(app.url(&format!("/t/{}/auth/oidc/{id}/login", app.tenant)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

/// SAML metadata of a provider at `entity` signing with a new self-signed certificate.
fn metadata(entity: &str) -> String {
    let signing = rcgen::generate_simple_self_signed(vec!["idp.example.com".to_owned()]).unwrap();
    let der_base64: String = signing
        .cert
        .pem()
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity}"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:KeyDescriptor use="signing"><ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{der_base64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.com/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

/// A change checked against the provider as it was is refused (409) once another change has
/// been saved meanwhile: here a re-fetch of the metadata that takes its time, while another
/// admin changes the email attribute, would otherwise have put the old attribute back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_change_does_not_overwrite_one_saved_meanwhile() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = spawn_app(Db::Sqlite).await;
    let xml = metadata("https://idp.example.com");
    let (status, view) = app
        .post(
            "/identity-providers",
            &app.admin_key,
            json!({"name": "Slow", "kind": "saml", "metadata_xml": xml}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{view}");
    let path = format!("/identity-providers/{}", view["id"].as_str().unwrap());

    // A metadata server that answers only when told to.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metadata_url = format!("http://{}/metadata", listener.local_addr().unwrap());
    let (arrived, asked) = tokio::sync::oneshot::channel::<()>();
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 4096];
        let _ = stream.read(&mut request).await.unwrap();
        arrived.send(()).unwrap();
        released.await.unwrap();
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/samlmetadata+xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
    });
    let slow = {
        let (client, url, key) = (
            app.client.clone(),
            app.tenant_url(&path),
            app.admin_key.clone(),
        );
        tokio::spawn(async move {
            let response = client
                .patch(url)
                .bearer_auth(key)
                .json(&json!({"metadata_url": metadata_url}))
                .send()
                .await
                .unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        })
    };
    asked.await.unwrap();
    let (status, body) = app
        .call(
            Method::PATCH,
            &path,
            &app.admin_key,
            Some(json!({"email_attribute": "mail"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    release.send(()).unwrap();
    let (status, body) = slow.await.unwrap();
    assert_problem(status, &body, StatusCode::CONFLICT, "conflict");
    server.await.unwrap();
    let (_, stored) = app.get(&path, &app.admin_key).await;
    assert_eq!(
        stored["email_attribute"], "mail",
        "the change saved meanwhile stands: {stored}"
    );
    assert!(stored["metadata_url"].is_null(), "{stored}");
}
