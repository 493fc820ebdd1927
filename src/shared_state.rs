//! Redis, where replicas keep state together when `FLOWGATE_REDIS_URL` is set: the rate limits'
//! buckets ([`crate::http::pipeline::rate_limit`]) and the signals' counts
//! ([`crate::signals`]). Each answers for itself when Redis does not.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret as _, SecretString};

/// A connection to the Redis at `url`, made at first use and remade after a failure; connecting
/// and each answer wait at most `budget`, with one retry.
pub fn lazy_connection(
    url: &SecretString,
    budget: Duration,
) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url.expose_secret())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(budget))
        .set_response_timeout(Some(budget))
        .set_number_of_retries(1);
    ConnectionManager::new_lazy_with_config(client, config)
}
