//! The TCP connections the server accepts. Each request learns its connection's peer address
//! ([`Peer`], as `ConnectInfo`), and a connection can hold the per-address places of the
//! Engine.IO sessions that live exactly as long as it does.
//!
//! That is what a websocket session is: after the upgrade, the session ends when its
//! connection closes, and the connection closes when the session ends. Tying its place to
//! the connection gives the place back the moment the client goes. Tying it to the session
//! object instead would keep it for up to socketioxide's connect timeout when the client
//! leaves before its Socket.io CONNECT (socketioxide's timeout task holds the session until
//! then), and a page reloaded while connecting, or a crowd of such clients behind one NAT,
//! would find its address's places taken by sessions already gone.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::admission::Session;
use crate::sync::LockExt;

/// Accepts TCP connections as axum's own listener does, each with room for session places.
pub struct Listener(pub TcpListener);

impl axum::serve::Listener for Listener {
    type Io = Connection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        // Socket.io sends a binary event as two WebSocket frames, a small header then the
        // data, and a worker's requests and acknowledgements are small: with Nagle's algorithm
        // the second of two small writes waits for the peer's (possibly delayed) ACK of the
        // first. Best effort: a socket that refuses it still works, only slower.
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            stream,
            places: Arc::new(Places::default()),
        };
        (connection, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// One accepted connection; dropping it (the connection closed, or its upgraded websocket
/// ended) gives back every place it holds.
pub struct Connection {
    stream: TcpStream,
    places: Arc<Places>,
}

/// Session places held by one connection.
#[derive(Default)]
pub struct Places(Mutex<Vec<Session>>);

/// The connection a request came on: what handlers see as `ConnectInfo<Peer>`.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The TCP peer: the client, or the nearest proxy.
    pub addr: SocketAddr,
    /// Weak, so that a request kept with its session (engineioxide keeps the handshake's
    /// parts) does not keep the connection's places alive.
    places: Weak<Places>,
}

impl Peer {
    /// A peer with no connection behind it, for tests that build requests by hand.
    pub fn detached(addr: SocketAddr) -> Self {
        Peer {
            addr,
            places: Weak::new(),
        }
    }

    /// Makes `session`'s place last as long as this connection. Returns false when the
    /// connection is gone already (the place is then given back at once).
    pub fn hold(&self, session: Session) -> bool {
        match self.places.upgrade() {
            Some(places) => {
                let mut held = places.0.lock_or_recover();
                held.push(session);
                true
            }
            None => false,
        }
    }
}

impl std::fmt::Debug for Places {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map_or(0, |h| h.len());
        f.debug_struct("Places").field("held", &held).finish()
    }
}

impl Connected<IncomingStream<'_, Listener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, Listener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            places: Arc::downgrade(&stream.io().places),
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::ClientLimits;
    use std::net::IpAddr;

    #[test]
    fn a_connection_gives_its_places_back_when_it_is_dropped() {
        let limits = Arc::new(ClientLimits::default());
        let ip = IpAddr::from([10, 0, 0, 1]);
        let places = Arc::new(Places::default());
        let peer = Peer {
            addr: SocketAddr::new(ip, 1),
            places: Arc::downgrade(&places),
        };
        assert!(peer.hold(limits.open_session(ip, 2).expect("a place")));
        assert!(peer
            .clone()
            .hold(limits.open_session(ip, 2).expect("a place")));
        assert_eq!(limits.sessions(ip), 2);
        drop(places); // the connection closed
        assert_eq!(limits.sessions(ip), 0);
        assert!(
            !peer.hold(limits.open_session(ip, 2).expect("a place")),
            "a closed connection holds nothing"
        );
        assert_eq!(limits.sessions(ip), 0);
        assert!(!Peer::detached(SocketAddr::new(ip, 1))
            .hold(limits.open_session(ip, 2).expect("a place")));
    }

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let mut listener = Listener(TcpListener::bind("127.0.0.1:0").await.expect("a port"));
        let addr = axum::serve::Listener::local_addr(&listener).expect("its address");
        let client = TcpStream::connect(addr).await.expect("connected");
        let (connection, _) = axum::serve::Listener::accept(&mut listener).await;
        assert!(
            connection.stream.nodelay().expect("readable"),
            "Nagle is off"
        );
        drop(client);
    }
}
