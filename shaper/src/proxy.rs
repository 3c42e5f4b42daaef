//! The proxy itself: accepts connections, forwards each to the upstream through two shaped
//! directions, resets it when the policy says, and counts what passed. Decisions come from
//! `policy`; this module only reads, waits and writes.

use std::future::{self, Future};
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tracing::{debug, info, warn};

use crate::config::{Config, Profile};
use crate::error::Error;
use crate::policy::{draw_reset, stream_seed, Link, LinkShape, Moment};

/// The most read at once: one chunk of the delay line, and the unit the bucket charges.
const CHUNK: usize = 16 * 1024;

/// How long the upstream may take to accept before the client's connection is reset.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the shaper has done, as it prints on stderr when it stops.
#[derive(Debug, Default)]
struct Counters {
    /// Connections accepted and forwarded (refused ones not included).
    connections: AtomicU64,
    /// Connections refused because --max-connections were open.
    refused: AtomicU64,
    /// Connections the upstream did not accept.
    upstream_failures: AtomicU64,
    /// Connections reset by the profile's reset policy.
    resets: AtomicU64,
    /// Bytes written to the upstream (client → upstream).
    bytes_up: AtomicU64,
    /// Bytes written to clients (upstream → client).
    bytes_down: AtomicU64,
}

/// The one-line report printed on stderr at exit, for tests and benchmarks.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// The profile named on the command line (its fields may have been overridden).
    pub profile: Profile,
    /// How long the shaper ran.
    pub seconds: f64,
    /// Connections accepted and forwarded.
    pub connections: u64,
    /// Connections refused at --max-connections.
    pub refused: u64,
    /// Connections the upstream did not accept.
    pub upstream_failures: u64,
    /// Connections reset by the profile.
    pub resets: u64,
    /// Bytes written to the upstream.
    pub bytes_up: u64,
    /// Bytes written to clients.
    pub bytes_down: u64,
}

impl Summary {
    /// One line of JSON.
    pub fn to_json(&self) -> String {
        // A struct of numbers and a unit enum always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Forwards connections from `listener` to the upstream until `shutdown` completes, then drops
/// every connection still open and reports what was done.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Summary {
    let started = Instant::now();
    let config = Arc::new(config);
    let counters = Arc::new(Counters::default());
    let mut live = JoinSet::new();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = live.join_next(), if !live.is_empty() => {}
            accepted = listener.accept() => match accepted {
                // Connections that ended but were not yet reaped do not count.
                Ok((client, peer)) if reap(&mut live) >= config.max_connections => {
                    counters.refused.fetch_add(1, Ordering::Relaxed);
                    warn!(%peer, max = config.max_connections, "refused: too many connections");
                    reset(&client);
                }
                Ok((client, peer)) => {
                    let id = next_id;
                    next_id += 1;
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    debug!(connection = id, %peer, "accepted");
                    live.spawn(connection(id, client, config.clone(), counters.clone()));
                }
                Err(e) => {
                    // Out of descriptors, most likely: give connections time to close
                    // rather than spin on the error.
                    warn!("accept: {e}");
                    sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    live.shutdown().await;
    let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
    Summary {
        profile: config.profile,
        seconds: started.elapsed().as_secs_f64(),
        connections: count(&counters.connections),
        refused: count(&counters.refused),
        upstream_failures: count(&counters.upstream_failures),
        resets: count(&counters.resets),
        bytes_up: count(&counters.bytes_up),
        bytes_down: count(&counters.bytes_down),
    }
}

/// Forgets the connections that have ended; returns how many are open.
fn reap(live: &mut JoinSet<()>) -> usize {
    while live.try_join_next().is_some() {}
    live.len()
}

/// How a connection ended.
enum Ended {
    /// Both directions forwarded their EOF: a clean close on both sides.
    Closed,
    /// The reset policy's time came.
    Reset,
    /// A peer reset or failed; the other is reset too, as a router's loss of state would.
    Broke(io::Error),
}

/// One client's connection: the upstream's, two shaped directions, and its reset time.
async fn connection(id: u64, client: TcpStream, config: Arc<Config>, counters: Arc<Counters>) {
    let upstream = match timeout(CONNECT_TIMEOUT, TcpStream::connect(&config.upstream)).await {
        Ok(Ok(upstream)) => upstream,
        outcome => {
            let source = match outcome {
                Ok(Err(e)) => e,
                _ => io::ErrorKind::TimedOut.into(),
            };
            counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            warn!(
                connection = id,
                "{}",
                Error::Connect {
                    upstream: config.upstream.clone(),
                    source
                }
            );
            reset(&client);
            return;
        }
    };
    // Each chunk is timed by the shaper; Nagle's algorithm would add its own delays.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let (client, upstream) = (Arc::new(client), Arc::new(upstream));
    let origin = Instant::now();
    let shape = &config.shape;
    let mut draws = StdRng::seed_from_u64(stream_seed(config.seed, id, 0));
    let reset_after = draw_reset(shape.reset_every, &mut draws);

    let up = forward(
        &client,
        &upstream,
        shape.up_link(),
        stream_seed(config.seed, id, 1),
        origin,
        &counters.bytes_up,
    );
    let down = forward(
        &upstream,
        &client,
        shape.down_link(),
        stream_seed(config.seed, id, 2),
        origin,
        &counters.bytes_down,
    );
    let reset_time = async {
        match reset_after {
            Some(after) => sleep_until(origin + after).await,
            None => future::pending().await,
        }
    };
    // Whichever ends first drops the other, and with it every task's hold on the sockets.
    let ended = tokio::select! {
        forwarded = async { tokio::try_join!(up, down) } => match forwarded {
            Ok(_) => Ended::Closed,
            Err(e) => Ended::Broke(e),
        },
        () = reset_time => Ended::Reset,
    };
    match ended {
        Ended::Closed => debug!(connection = id, "closed"),
        Ended::Reset => {
            counters.resets.fetch_add(1, Ordering::Relaxed);
            info!(
                connection = id,
                after_s = origin.elapsed().as_secs_f64(),
                "reset"
            );
            reset(&client);
            reset(&upstream);
        }
        Ended::Broke(e) => {
            debug!(connection = id, "broke: {e}");
            reset(&client);
            reset(&upstream);
        }
    }
}

/// Makes the socket's close send a reset (SO_LINGER 0) rather than a FIN: the peer sees
/// ECONNRESET, as after a radio drop-out or a NAT losing its state. Takes effect when the
/// last reference to the socket is dropped.
fn reset(socket: &TcpStream) {
    if let Err(e) = socket.set_zero_linger() {
        debug!("SO_LINGER 0: {e}");
    }
}

/// A chunk on its way through one direction.
enum Chunk {
    /// Bytes to write at `at`; `_room` gives their place in the queue back when dropped.
    Data {
        at: Moment,
        bytes: Vec<u8>,
        _room: OwnedSemaphorePermit,
    },
    /// The reader saw EOF: half-close the other side once everything before has gone.
    End,
}

/// Forwards `from` to `to` through a shaped link until EOF (forwarded as a half-close) or an
/// error. The reader stops while the queue holds `queue_bound` bytes, so a fast sender meets
/// back-pressure and memory stays bounded.
async fn forward(
    from: &TcpStream,
    to: &TcpStream,
    shape: LinkShape,
    seed: u64,
    origin: Instant,
    passed: &AtomicU64,
) -> io::Result<()> {
    let room = Arc::new(Semaphore::new(shape.queue_bound()));
    let mut link = Link::new(shape, seed);
    let (queue, mut queued) = mpsc::unbounded_channel();
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            from.readable().await?;
            let n = match from.try_read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                let _ = queue.send(Chunk::End);
                return Ok(());
            }
            // `n` ≤ CHUNK ≤ the bound (at least 64 KiB), so the permits always exist.
            let place = room
                .clone()
                .acquire_many_owned(n as u32)
                .await
                .map_err(io::Error::other)?;
            let at = link.schedule(origin.elapsed(), n);
            let chunk = Chunk::Data {
                at,
                bytes: buf[..n].to_vec(),
                _room: place,
            };
            if queue.send(chunk).is_err() {
                // The writer failed, and `try_join` reports its error.
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some(chunk) = queued.recv().await {
            match chunk {
                Chunk::Data { at, bytes, _room } => {
                    sleep_until(origin + at).await;
                    write_all(to, &bytes).await?;
                    passed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                Chunk::End => return socket2::SockRef::from(to).shutdown(Shutdown::Write),
            }
        }
        Ok(())
    };
    tokio::try_join!(read, write).map(|_| ())
}

/// Writes all of `bytes` to a socket shared with the other direction's reader.
async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
