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

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::redis::RedisError;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::mpsc;

/// The Socket.io adapter of every socket the server holds.
pub type Adapter = CustomRedisAdapter<socketioxide::adapter::Emitter, Bus>;

/// The channel prefix of the grid's messages in Redis, so that another application on the same
/// Redis does not hear them.
const PREFIX: &str = "brain";

#[derive(Clone)]
pub enum Bus {
    /// One instance: broadcasts stay local.
    Alone,
    Redis(RedisBus),
}

/// socketioxide-redis's own driver, on a connection that comes back by itself: the crate's
/// `RedisDriver` holds one connection, and a Redis restart would cut the instances apart
/// until they restarted too. Redis's `ConnectionManager` reconnects with backoff and
/// subscribes again to every channel; what was published while Redis was away is lost, as
/// pub/sub messages are.
#[derive(Clone)]
pub struct RedisBus {
    /// Where each subscribed channel's messages go.
    channels: Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>,
    conn: ConnectionManager,
}

/// How long a publication may wait for Redis: broadcasts are progress reports, and one lost
/// while Redis is unreachable is better than a dispatcher or a ticker stuck behind it.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl Bus {
    /// Connects to Redis at `url` (redis:// or rediss://), in RESP3, which the adapter's pub/sub
    /// needs (Redis ≥ 7 or Valkey).
    pub async fn connect(url: &str) -> Result<Bus, redis::RedisError> {
        let client = redis::Client::open(resp3(url))?;
        let channels: Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>> = Default::default();
        let route = channels.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_max_delay(Duration::from_secs(5))
            .set_automatic_resubscription()
            .set_push_sender(move |push: PushInfo| {
                deliver(&route, push);
                Ok::<(), std::convert::Infallible>(())
            });
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Bus::Redis(RedisBus { channels, conn }))
    }

    /// The adapter's constructor state for `SocketIo::builder().with_adapter`.
    pub fn adapter(self) -> RedisAdapterCtr<Bus> {
        RedisAdapterCtr::new_with_driver(self, RedisAdapterConfig::new().with_prefix(PREFIX))
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Bus::Redis(_))
    }
}

/// Hands a message from a subscribed channel to the adapter's stream for it.
fn deliver(channels: &RwLock<HashMap<String, mpsc::Sender<ChanItem>>>, push: PushInfo) {
    if !matches!(push.kind, PushKind::Message) || push.data.len() < 2 {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(chan), Some(message)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(chan), Ok(message)) = (
        String::from_redis_value(chan),
        Vec::<u8>::from_redis_value(message),
    ) else {
        return tracing::warn!("an unreadable message from Redis");
    };
    let channels = channels.read().unwrap_or_else(|e| e.into_inner());
    if let Some(tx) = channels.get(&chan) {
        if tx.try_send((chan, message)).is_err() {
            tracing::warn!("a message between instances dropped: the adapter is behind");
        }
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
            Bus::Redis(bus) => Ok(bus.conn.clone().publish::<_, _, ()>(chan, val).await?),
        }
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, RedisError> {
        match self {
            Bus::Alone => Ok(MessageStream::new_empty()),
            Bus::Redis(bus) => {
                let (tx, rx) = mpsc::channel(size);
                bus.channels
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(chan.clone(), tx);
                bus.conn.clone().subscribe(chan).await?;
                Ok(MessageStream::new(rx))
            }
        }
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), RedisError> {
        match self {
            Bus::Alone => Ok(()),
            Bus::Redis(bus) => {
                bus.channels
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&chan);
                Ok(bus.conn.clone().unsubscribe(chan).await?)
            }
        }
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, RedisError> {
        match self {
            // Itself: no other server to wait for.
            Bus::Alone => Ok(1),
            Bus::Redis(bus) => {
                let (_, count): (String, u16) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(chan)
                    .query_async(&mut bus.conn.clone())
                    .await?;
                Ok(count)
            }
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
