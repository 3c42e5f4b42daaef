//! Who may open a Socket.io connection: the per-address budget of Engine.IO sessions, taken
//! at the HTTP handshake before socketioxide creates anything, and the reasons a Socket.io
//! connection is refused at its CONNECT (origin, connections per address), which the client
//! receives in words as `connect_error`.
//!
//! Refusals that a client should understand are made at the Socket.io CONNECT, not at the
//! HTTP handshake: a refused handshake reaches a page only as an opaque "websocket error"
//! (browsers show scripts neither the status nor the body of a failed upgrade), while
//! `connect_error` carries a message. The handshake gate refuses only what an honest client
//! never does: more sessions from one address than it may hold connections, with headroom.

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::address;
use crate::config::AllowedOrigins;
use crate::error::Error;
use crate::peer::Peer;
use crate::state::AppState;

/// Where Socket.io is served; set on the Socket.io layer and matched by the gate, so the two
/// cannot drift apart.
pub const SOCKET_IO_PATH: &str = "/socket.io";

/// Engine.IO sessions an address may hold per Socket.io connection it may hold. A session
/// exists from the handshake on and connects a moment later; the headroom lets the
/// connection past the limit still get its session and be told in words why it is refused
/// (`connect_error`), while a client that opens sessions and never connects is held to a
/// small multiple of the limit.
pub const SESSIONS_PER_CONNECTION: usize = 2;

/// Largest Engine.IO session count for one address group.
pub fn sessions_per_address(max_connections_per_ip: usize) -> usize {
    max_connections_per_ip.saturating_mul(SESSIONS_PER_CONNECTION)
}

/// Why a Socket.io connection was refused at its CONNECT; the client gets the message as
/// `connect_error`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("origin {0} is not allowed")]
    Origin(String),
    #[error("more than {0} connections from one address")]
    TooManyConnections(usize),
}

/// Longest origin quoted back in a refusal: the header is the client's, the log is ours.
const MAX_QUOTED_ORIGIN: usize = 100;

/// Refuses a browser page from an origin outside `ALLOWED_ORIGINS`. A browser always sends
/// `Origin` on a websocket upgrade and on cross-origin requests, and a page cannot change it:
/// that is what stops a hostile page from enlisting its visitors. A request without `Origin`
/// is not from a page, but from a program (the CLI, a Node or Python worker), and is allowed:
/// such a client can write any `Origin` it likes, so refusing the header's absence would stop
/// no attacker and only break the honest tools.
pub fn check_origin(allowed: &AllowedOrigins, headers: &HeaderMap) -> Result<(), Refused> {
    let AllowedOrigins::List(list) = allowed else {
        return Ok(());
    };
    for origin in headers.get_all(header::ORIGIN) {
        let listed = origin
            .to_str()
            .is_ok_and(|o| list.iter().any(|a| a.eq_ignore_ascii_case(o)));
        if !listed {
            return Err(Refused::Origin(quoted(origin)));
        }
    }
    Ok(())
}

fn quoted(origin: &HeaderValue) -> String {
    let text = String::from_utf8_lossy(origin.as_bytes());
    if text.chars().count() <= MAX_QUOTED_ORIGIN {
        text.into_owned()
    } else {
        text.chars().take(MAX_QUOTED_ORIGIN).chain(['…']).collect()
    }
}

/// Whether a request opens an Engine.IO session: a GET on the Socket.io path without a
/// `sid` (the same test engineioxide makes; every other request joins an existing session
/// or is refused by engineioxide).
fn opens_session(method: &Method, uri: &Uri) -> bool {
    let in_path = uri
        .path()
        .strip_prefix(SOCKET_IO_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
    in_path
        && method == Method::GET
        && !uri
            .query()
            .unwrap_or("")
            .split('&')
            .any(|p| p.starts_with("sid="))
}

/// Whether a handshake asks for a websocket (engineioxide reads the first `transport`).
fn over_websocket(uri: &Uri) -> bool {
    uri.query()
        .unwrap_or("")
        .split('&')
        .find(|p| p.starts_with("transport="))
        == Some("transport=websocket")
}

/// Middleware in front of the Socket.io layer: every Engine.IO handshake takes a place in its
/// address's session budget before the session exists, or is refused with 429. The place
/// is given back when the session ends: a websocket session's with its connection (see
/// `peer`), a long-polling session's when the session is dropped (see `admission::Session`).
pub async fn handshake(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    // The server's connect info is `Peer`; code that asks for the plain `SocketAddr`, as
    // axum's default would provide, still finds it.
    if let Some(addr) = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.addr)
    {
        req.extensions_mut().insert(ConnectInfo(addr));
    }
    if !opens_session(req.method(), req.uri()) {
        return next.run(req).await;
    }
    let limits = &state.config.limits;
    let ip = address::client_key(req.headers(), req.extensions(), limits.trust_proxy);
    let max = sessions_per_address(limits.max_connections_per_ip);
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0.clone());
    match (state.limits.open_session(ip, max), peer) {
        (Some(session), Some(peer)) if over_websocket(req.uri()) => {
            // The session will live exactly as long as the upgraded connection: the place
            // goes to the connection (see `peer`). Without an upgrade, no session was made
            // and the place goes back here.
            let response = next.run(req).await;
            if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                peer.hold(session);
            }
            response
        }
        (Some(session), _) => {
            // Long-polling: the session outlives any one request or connection, so its
            // place rides with the session itself.
            req.extensions_mut().insert(session);
            next.run(req).await
        }
        (None, _) => {
            tracing::warn!(%ip, "Engine.IO handshake refused: too many sessions from one address");
            Error::TooManyRequests(format!(
                "more than {max} Socket.io sessions open from one address"
            ))
            .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_origin(origin: &[u8]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append(
            header::ORIGIN,
            HeaderValue::from_bytes(origin).expect("a header value"),
        );
        headers
    }

    #[test]
    fn only_listed_origins_pass_a_list() {
        let list = AllowedOrigins::List(vec![
            "https://brain.example".into(),
            "http://localhost:5173".into(),
        ]);
        assert_eq!(
            check_origin(&list, &with_origin(b"https://brain.example")),
            Ok(())
        );
        assert_eq!(
            check_origin(&list, &with_origin(b"HTTPS://Brain.Example")),
            Ok(()),
            "scheme and host are case-insensitive"
        );
        assert_eq!(
            check_origin(&list, &with_origin(b"http://localhost:5173")),
            Ok(())
        );
        for bad in [
            &b"https://evil.example"[..],
            b"http://brain.example",
            b"https://brain.example.evil.example",
            b"https://brain.example:8443",
            b"null",
            b"",
            b"\xff",
        ] {
            let refused = check_origin(&list, &with_origin(bad)).expect_err("not listed");
            assert!(matches!(refused, Refused::Origin(_)), "{bad:?}");
        }
        assert_eq!(
            check_origin(&list, &with_origin(b"https://evil.example"))
                .expect_err("not listed")
                .to_string(),
            "origin https://evil.example is not allowed"
        );
    }

    #[test]
    fn programs_without_an_origin_and_any_origin_under_a_star_pass() {
        let list = AllowedOrigins::List(vec!["https://brain.example".into()]);
        assert_eq!(check_origin(&list, &HeaderMap::new()), Ok(()));
        assert_eq!(
            check_origin(&AllowedOrigins::Any, &with_origin(b"https://evil.example")),
            Ok(())
        );
    }

    #[test]
    fn a_second_origin_header_cannot_smuggle_a_page_in() {
        let list = AllowedOrigins::List(vec!["https://brain.example".into()]);
        let mut headers = with_origin(b"https://brain.example");
        headers.append(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(check_origin(&list, &headers).is_err());
    }

    #[test]
    fn a_long_origin_is_quoted_short() {
        let list = AllowedOrigins::List(vec!["https://brain.example".into()]);
        let long = format!("https://{}.example", "a".repeat(10_000));
        let refused = check_origin(&list, &with_origin(long.as_bytes())).expect_err("refused");
        assert!(refused.to_string().len() < 200, "{refused}");
    }

    #[test]
    fn only_handshakes_open_sessions() {
        let get = Method::GET;
        let opens = |m: &Method, uri: &str| opens_session(m, &uri.parse().expect("a uri"));
        assert!(opens(&get, "/socket.io/?EIO=4&transport=polling"));
        assert!(opens(&get, "/socket.io/?EIO=4&transport=websocket"));
        assert!(opens(&get, "/socket.io?EIO=4&transport=polling"));
        assert!(opens(&get, "/socket.io/?EIO=4&transport=polling&xsid=1"));
        assert!(!opens(&get, "/socket.io/?EIO=4&transport=polling&sid=abc"));
        assert!(!opens(
            &get,
            "/socket.io/?sid=abc&EIO=4&transport=websocket"
        ));
        assert!(!opens(&Method::POST, "/socket.io/?EIO=4&transport=polling"));
        assert!(!opens(&get, "/socket.iox/?EIO=4&transport=polling"));
        assert!(!opens(&get, "/api/jobs"));
        let ws = |uri: &str| over_websocket(&uri.parse().expect("a uri"));
        assert!(ws("/socket.io/?EIO=4&transport=websocket"));
        assert!(!ws("/socket.io/?EIO=4&transport=polling"));
        assert!(!ws(
            "/socket.io/?EIO=4&transport=polling&transport=websocket"
        ));
    }

    #[test]
    fn the_session_budget_leaves_headroom_over_connections() {
        assert_eq!(sessions_per_address(3), 6);
        assert_eq!(sessions_per_address(usize::MAX), usize::MAX);
    }
}
