//! Calls from Flowgate to identity providers (discovery, JWKS, token endpoints, SAML metadata):
//! the HTTP client that `openidconnect` is given.
//!
//! Invariants:
//! - Redirects are never followed (a provider's answer comes from the URL it was configured or
//!   discovered with), every call has a deadline, and a body larger than [`MAX_BODY`] is refused
//!   before it is parsed: a provider cannot make Flowgate wait forever or parse without bound.
//! - Errors name the host and the failure, never a request body (which may hold a code or a
//!   client secret).

use std::time::Duration;

use futures_util::future::BoxFuture;

/// The longest answer read from a provider (discovery documents and key sets are a few KiB).
pub const MAX_BODY: usize = 1024 * 1024;
/// Longest wait for one call.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call to a provider failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("could not reach {host}: {reason}")]
    Unreachable { host: String, reason: String },
    #[error("the answer of {host} exceeds {MAX_BODY} bytes")]
    TooLarge { host: String },
    #[error("the request could not be built: {0}")]
    Request(String),
}

/// One exchange with a provider, as `openidconnect` awaits it.
type Exchange = BoxFuture<'static, Result<http::Response<Vec<u8>>, OutboundError>>;

/// The HTTP client for identity providers.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
}

impl Outbound {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Outbound { client })
    }

    /// Sends `request` and reads at most [`MAX_BODY`] bytes of the answer.
    pub async fn send(
        &self,
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, OutboundError> {
        let (parts, body) = request.into_parts();
        let host = parts.uri.host().unwrap_or_default().to_owned();
        let unreachable = |e: reqwest::Error| OutboundError::Unreachable {
            host: host.clone(),
            reason: e.without_url().to_string(),
        };
        let mut response = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(OutboundError::TooLarge { host });
        }
        let mut answer = http::Response::builder().status(response.status());
        if let Some(headers) = answer.headers_mut() {
            *headers = response.headers().clone();
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(OutboundError::TooLarge { host });
            }
            body.extend_from_slice(&chunk);
        }
        answer
            .body(body)
            .map_err(|e| OutboundError::Request(e.to_string()))
    }

    /// GETs `url` and parses its JSON answer, which must be `200 OK`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, anyhow::Error> {
        let request = http::Request::get(url)
            .header(http::header::ACCEPT, "application/json")
            .body(Vec::new())?;
        let response = self.send(request).await?;
        if response.status() != http::StatusCode::OK {
            anyhow::bail!("{url} answered {}", response.status());
        }
        Ok(serde_json::from_slice(response.body())?)
    }

    /// GETs the XML document at `url`, which must answer `200 OK` with UTF-8 text.
    pub async fn get_xml(&self, url: &str) -> Result<String, anyhow::Error> {
        let request = http::Request::get(url)
            .header(
                http::header::ACCEPT,
                "application/samlmetadata+xml, application/xml, text/xml",
            )
            .body(Vec::new())?;
        let response = self.send(request).await?;
        if response.status() != http::StatusCode::OK {
            anyhow::bail!("{url} answered {}", response.status());
        }
        Ok(String::from_utf8(response.into_body())?)
    }

    /// The client in the shape `openidconnect` calls.
    pub fn for_oidc(&self) -> impl Fn(http::Request<Vec<u8>>) -> Exchange {
        let this = self.clone();
        move |request| {
            let this = this.clone();
            Box::pin(async move { this.send(request).await })
        }
    }
}
