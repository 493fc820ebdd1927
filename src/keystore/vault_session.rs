//! Flowgate's Vault token: given (`FLOWGATE_VAULT_TOKEN`) or had by AppRole login
//! (`FLOWGATE_VAULT_ROLE_ID` / `FLOWGATE_VAULT_SECRET_ID`), and kept alive in the background.
//!
//! Invariants:
//! - The token is renewed when half its time-to-live is gone; when it cannot grow any more (its
//!   maximum TTL) or has expired, an AppRole session logs in again. A token that never expires
//!   (a root or dev token) is only looked at once an hour.
//! - Requests always use the newest client; swapping it is one pointer under a lock, never held
//!   across an await.
//! - Neither the token nor the secret id is ever logged; Vault's error texts carry neither.

use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use vaultrs::client::{VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use vaultrs::{auth::approle, token};

use crate::config::VaultAuth;

/// Longest wait for one Vault request.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a token that never expires is looked at.
const IMMORTAL_CHECK: Duration = Duration::from_secs(3600);
/// The wait before retrying after Vault did not answer.
const RETRY: Duration = Duration::from_secs(5);

pub(super) struct Session {
    addr: String,
    auth: VaultAuth,
    client: RwLock<Arc<VaultClient>>,
}

impl Session {
    /// A session with its first token (logging in with AppRole when configured so), renewed in
    /// the background for as long as the session lives.
    pub(super) async fn open(addr: &str, auth: VaultAuth) -> anyhow::Result<Arc<Self>> {
        let first = match &auth {
            VaultAuth::Token(token) => client(addr, token.expose_secret())?,
            VaultAuth::AppRole { .. } => {
                let anonymous = client(addr, "")?;
                let (token, _) = login(&anonymous, &auth)
                    .await
                    .map_err(|e| anyhow::anyhow!("Vault AppRole login failed: {e}"))?;
                client(addr, token.expose_secret())?
            }
        };
        let session = Arc::new(Session {
            addr: addr.to_owned(),
            auth,
            client: RwLock::new(Arc::new(first)),
        });
        tokio::spawn(keep_fresh(Arc::downgrade(&session)));
        Ok(session)
    }

    /// The client with the newest token.
    pub(super) fn client(&self) -> Arc<VaultClient> {
        // One pointer, swapped whole: a poisoned lock still holds a usable client.
        Arc::clone(&self.client.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn replace(&self, token: &SecretString) -> anyhow::Result<()> {
        let fresh = Arc::new(client(&self.addr, token.expose_secret())?);
        *self.client.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    fn app_role(&self) -> bool {
        matches!(self.auth, VaultAuth::AppRole { .. })
    }

    /// Logs in again with AppRole; returns the new token's TTL.
    async fn relogin(&self) -> anyhow::Result<u64> {
        let (token, ttl) = login(&self.client(), &self.auth).await?;
        self.replace(&token)?;
        tracing::info!(ttl_seconds = ttl, "logged in to Vault again with AppRole");
        Ok(ttl)
    }

    /// Renews or replaces the token if half its life is gone; returns when to look again.
    async fn refresh(&self) -> anyhow::Result<Duration> {
        let current = match token::lookup_self(&*self.client()).await {
            Ok(current) => current,
            Err(ClientError::APIError { code: 403, .. }) if self.app_role() => {
                return Ok(half(self.relogin().await?));
            }
            Err(e) => return Err(e.into()),
        };
        if current.ttl == 0 {
            return Ok(IMMORTAL_CHECK);
        }
        let full = current.creation_ttl.max(current.ttl);
        if current.ttl * 2 > full {
            return Ok(Duration::from_secs((current.ttl - full / 2).max(1)));
        }
        let renewed = if current.renewable.unwrap_or(false) {
            token::renew_self(&*self.client(), None)
                .await
                .ok()
                .map(|auth| auth.lease_duration)
        } else {
            None
        };
        match renewed {
            Some(lease) if lease * 2 > full => Ok(half(lease)),
            _ if self.app_role() => Ok(half(self.relogin().await?)),
            Some(lease) => {
                tracing::warn!(
                    ttl_seconds = lease,
                    "the Vault token reached its maximum TTL and cannot be renewed; configure AppRole to log in again"
                );
                Ok(half(lease))
            }
            None => {
                tracing::warn!(
                    ttl_seconds = current.ttl,
                    "the Vault token is not renewable and will expire; configure AppRole to log in again"
                );
                Ok(half(current.ttl))
            }
        }
    }
}

fn half(ttl: u64) -> Duration {
    Duration::from_secs((ttl / 2).max(1))
}

fn client(addr: &str, token: &str) -> anyhow::Result<VaultClient> {
    let settings = VaultClientSettingsBuilder::default()
        .address(addr)
        .token(token)
        // A Vault that stops answering must become a 503, not a request that never ends.
        .timeout(Some(REQUEST_TIMEOUT))
        .build()?;
    Ok(VaultClient::new(settings)?)
}

/// A token and its TTL from an AppRole login; `auth` must be AppRole.
async fn login(client: &VaultClient, auth: &VaultAuth) -> anyhow::Result<(SecretString, u64)> {
    let VaultAuth::AppRole {
        mount,
        role_id,
        secret_id,
    } = auth
    else {
        anyhow::bail!("not an AppRole session");
    };
    let info = approle::login(client, mount, role_id, secret_id.expose_secret()).await?;
    Ok((SecretString::from(info.client_token), info.lease_duration))
}

/// Refreshes the session's token until the session is dropped.
async fn keep_fresh(session: Weak<Session>) {
    loop {
        let Some(live) = session.upgrade() else {
            return;
        };
        let wait = match live.refresh().await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, "could not renew the Vault token; retrying");
                RETRY
            }
        };
        drop(live);
        tokio::time::sleep(wait).await;
    }
}
