//! How instances reach one another's sockets: through Redis (`REDIS_URL`), or not at all.
//!
//! Several instances sharing one PostgreSQL each hold their own sockets. socketioxide's Redis
//! adapter carries broadcasts (dashboards' progress) between them. The server has one socket
//! type whether `REDIS_URL` is set or not: the adapter is always the Redis one, over a
//! [`Bus`] that is either a Redis connection or [`Bus::Alone`], which publishes nothing and
//! counts one server, so that a single instance pays nothing for the seam.
//!
//! What the adapter does not carry: socket state, and the grid's own bookkeeping. Whatever
//! another instance must know lives in the database (`instances`, leases, jobs).

use socketioxide_redis::drivers::redis::{RedisDriver, RedisError};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

/// The Socket.io adapter of every socket the server holds.
pub type Adapter = CustomRedisAdapter<socketioxide::adapter::Emitter, Bus>;

/// The channel prefix of the grid's messages in Redis, so that another application on the same
/// Redis does not hear them.
const PREFIX: &str = "brain";

#[derive(Clone)]
pub enum Bus {
    /// One instance: broadcasts stay local.
    Alone,
    Redis(RedisDriver),
}

impl Bus {
    /// Connects to Redis at `url` (redis:// or rediss://), in RESP3, which the adapter's pub/sub
    /// needs (Redis ≥ 7 or Valkey).
    pub async fn connect(url: &str) -> Result<Bus, redis::RedisError> {
        let client = redis::Client::open(resp3(url))?;
        Ok(Bus::Redis(RedisDriver::new(&client).await?))
    }

    /// The adapter's constructor state for `SocketIo::builder().with_adapter`.
    pub fn adapter(self) -> RedisAdapterCtr<Bus> {
        RedisAdapterCtr::new_with_driver(self, RedisAdapterConfig::new().with_prefix(PREFIX))
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Bus::Redis(_))
    }
}

/// `url` asking for RESP3, unless it already names a protocol.
fn resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

impl Driver for Bus {
    type Error = RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), RedisError> {
        match self {
            Bus::Alone => Ok(()),
            Bus::Redis(redis) => redis.publish(chan, val).await,
        }
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, RedisError> {
        match self {
            Bus::Alone => Ok(MessageStream::new_empty()),
            Bus::Redis(redis) => redis.subscribe(chan, size).await,
        }
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), RedisError> {
        match self {
            Bus::Alone => Ok(()),
            Bus::Redis(redis) => redis.unsubscribe(chan).await,
        }
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, RedisError> {
        match self {
            // Itself: no other server to wait for.
            Bus::Alone => Ok(1),
            Bus::Redis(redis) => redis.num_serv(chan).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_ask_for_resp3_unless_they_name_a_protocol() {
        assert_eq!(resp3("redis://h:6379"), "redis://h:6379?protocol=resp3");
        assert_eq!(
            resp3("rediss://u:p@h/0?x=1"),
            "rediss://u:p@h/0?x=1&protocol=resp3"
        );
        assert_eq!(
            resp3("redis://h?protocol=resp3"),
            "redis://h?protocol=resp3"
        );
    }
}
