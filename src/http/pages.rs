//! Flowgate's own HTML pages: the login page. No external assets: its one script (the WebAuthn
//! ceremonies, [`LOGIN_SCRIPT`]) is served from this server, every value shown is HTML-escaped,
//! and the page forbids inline script, framing, and loading or sending anything elsewhere.

use std::fmt::Write as _;

use actix_web::HttpResponse;
use actix_web::http::header;

use crate::tenancy::Slug;

/// What the page allows: its own inline style, its one script (by its exact URL, not any script
/// of this origin) and requests to this server, forms back to this server, nothing else.
fn csp(script: &str) -> String {
    format!(
        "default-src 'none'; script-src {script}; connect-src 'self'; style-src 'unsafe-inline'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// The login page's script: the passkey ceremonies and `flowgate.call` (step-up).
pub const LOGIN_SCRIPT: &str = include_str!("login.js");

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem;color:#1b1b1f}\
h1{font-size:1.4rem}form,ul{margin:1.5rem 0}input{padding:.5rem;width:16rem}button{padding:.5rem 1rem}\
.error{color:#a4001d}.note{color:#17603a}li{margin:.4rem 0}";

/// An identity provider as the login page offers it.
pub struct Choice {
    pub name: String,
    /// Where a browser begins signing in with it (a path on this server).
    pub login_path: String,
    pub email_domains: Vec<String>,
}

/// The login page of tenant `slug`, served at `public_url`.
pub fn login(
    public_url: &str,
    slug: &Slug,
    providers: &[Choice],
    error: Option<&str>,
    note: Option<&str>,
) -> HttpResponse {
    let script = format!(
        "{}/t/{}/auth/login.js",
        public_url.trim_end_matches('/'),
        slug.as_str()
    );
    let slug = escape(slug.as_str());
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>Sign in to {slug}</title><style>{STYLE}</style></head><body>\
         <h1>Sign in to {slug}</h1>"
    );
    if let Some(error) = error {
        let _ = write!(
            html,
            "<p class=\"error\" role=\"alert\">{}</p>",
            escape(error)
        );
    }
    if let Some(note) = note {
        let _ = write!(html, "<p class=\"note\">{}</p>", escape(note));
    }
    let _ = write!(
        html,
        "<form method=\"get\" action=\"/t/{slug}/auth/login\">\
         <label for=\"email\">Work email</label><br>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"username\" required> \
         <button type=\"submit\">Continue</button></form>"
    );
    if !providers.is_empty() {
        html.push_str("<p>Or choose your organisation's sign-in:</p><ul>");
        for choice in providers {
            let _ = write!(
                html,
                "<li><a href=\"{}\">{}</a></li>",
                escape(&choice.login_path),
                escape(&choice.name)
            );
        }
        html.push_str("</ul>");
    }
    let _ = write!(
        html,
        "<section id=\"passkeys\" data-tenant=\"{slug}\" hidden>\
         <p id=\"passkey-status\" class=\"note\"></p>\
         <button id=\"passkey-assert\" hidden>Use your passkey</button> \
         <button id=\"passkey-enroll\" hidden>Add a passkey</button>\
         <form method=\"post\" action=\"/t/{slug}/auth/logout\">\
         <button id=\"sign-out\">Sign out</button></form></section>\
         <details><summary>Emergency access</summary>\
         <p><label for=\"break-glass-token\">Enrollment token</label><br>\
         <input id=\"break-glass-token\" autocomplete=\"off\"> \
         <button id=\"break-glass-enroll\">Enroll</button></p>\
         <p><label for=\"break-glass-email\">Emergency account</label><br>\
         <input id=\"break-glass-email\" type=\"email\" autocomplete=\"username webauthn\"> \
         <button id=\"break-glass-sign-in\">Sign in with a passkey</button></p></details>\
         <dialog id=\"step-up\"><p>Confirm with your passkey.</p><p id=\"step-up-reason\"></p>\
         <button id=\"step-up-confirm\">Confirm with your passkey</button> \
         <button id=\"step-up-cancel\">Cancel</button></dialog>\
         <script src=\"/t/{slug}/auth/login.js\" defer></script>"
    );
    html.push_str("</body></html>");
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CONTENT_SECURITY_POLICY, csp(&script)))
        // Its forms post back here: browsers send `Origin: null` from a `no-referrer` page,
        // which the session's origin check refuses.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(html)
}

/// `text` with the five characters that mean something in HTML escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_names_is_shown_not_run() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }
}
