//! How much each client address may hold open and send: Engine.IO sessions and Socket.io
//! connections per address group (see `address::group`), and each connection's event budget.
//! The handshake gate (`gate`) and the connect middleware (`socket::admit`) take places here;
//! the places go back however a session or connection ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::sync::LockExt;

/// Engine.IO sessions and Socket.io connections open at once per client address group (see
/// `address::group`).
#[derive(Default)]
pub struct ClientLimits {
    per_ip: Mutex<HashMap<IpAddr, Open>>,
}

/// What one address group holds open.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Open {
    /// Engine.IO sessions, from the handshake until the session is gone, whether or not it
    /// ever connected to Socket.io.
    sessions: usize,
    /// Socket.io connections admitted by the connect middleware.
    connections: usize,
}

impl ClientLimits {
    /// Counts a new connection from `ip`, or refuses it (`None`) when that would pass `max`.
    pub fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        max: usize,
        events_per_sec: u32,
    ) -> Option<Admission> {
        let mut per_ip = self.per_ip.lock_or_recover();
        let open = per_ip.entry(ip).or_default();
        if open.connections >= max {
            return None;
        }
        open.connections += 1;
        let per_sec = f64::from(events_per_sec);
        Some(Admission {
            limits: self.clone(),
            ip,
            per_sec,
            bucket: Mutex::new((2.0 * per_sec, Instant::now())),
            earned: Default::default(),
            closed: Default::default(),
        })
    }

    /// Counts a new Engine.IO session from `ip`, or refuses it (`None`) when that would pass
    /// `max`. The place is given back when the last clone of the returned [`Session`] is
    /// dropped.
    pub fn open_session(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<Session> {
        let mut per_ip = self.per_ip.lock_or_recover();
        let open = per_ip.entry(ip).or_default();
        if open.sessions >= max {
            if *open == Open::default() {
                per_ip.remove(&ip);
            }
            return None;
        }
        open.sessions += 1;
        Some(Session {
            _place: Arc::new(SessionPlace {
                limits: self.clone(),
                ip,
            }),
        })
    }

    /// Connections counted for `ip` now.
    #[cfg(test)]
    pub fn open(&self, ip: IpAddr) -> usize {
        self.counts(ip).connections
    }

    /// Engine.IO sessions counted for `ip` now.
    #[cfg(test)]
    pub fn sessions(&self, ip: IpAddr) -> usize {
        self.counts(ip).sessions
    }

    #[cfg(test)]
    fn counts(&self, ip: IpAddr) -> Open {
        let per_ip = self.per_ip.lock_or_recover();
        per_ip.get(&ip).copied().unwrap_or_default()
    }

    fn release(&self, ip: IpAddr, what: impl FnOnce(&mut Open)) {
        let mut per_ip = self.per_ip.lock_or_recover();
        if let Some(open) = per_ip.get_mut(&ip) {
            what(open);
            if *open == Open::default() {
                per_ip.remove(&ip);
            }
        }
    }
}

/// One Engine.IO session's place in its address's budget. The handshake gate puts it in the
/// handshake request's extensions, which engineioxide keeps with the session for the
/// session's whole life (`SocketRef::req_parts`): the place is taken before the session
/// exists and given back when the session is dropped, however it ends (closed by the client,
/// a ping timeout, the connect timeout, or a failed upgrade), with no hook to forget.
#[derive(Clone)]
pub struct Session {
    /// Held, never read: its drop is what gives the place back.
    _place: Arc<SessionPlace>,
}

struct SessionPlace {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
}

impl Drop for SessionPlace {
    fn drop(&mut self) {
        self.limits.release(self.ip, |open| {
            open.sessions = open.sessions.saturating_sub(1)
        });
    }
}

/// One admitted connection: its share of its address's limit, its event budget, and whether
/// it has ended. Every handler of the connection holds it, so it lives exactly as long as the
/// socket. Its share goes back once: when the disconnect handler closes it, or when it is
/// dropped; socketioxide drops a socket without calling its disconnect handler when the client
/// leaves while its connect is still in flight, and those shares used to stay counted until
/// the address was refused for good.
pub struct Admission {
    limits: Arc<ClientLimits>,
    ip: IpAddr,
    per_sec: f64,
    /// Tokens left and when they were counted.
    bucket: Mutex<(f64, Instant)>,
    /// Requests earned by answering tasks (see [`Admission::earn_request`]).
    earned: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
}

impl Admission {
    /// Takes one event from the connection's bucket, which refills at the configured rate and
    /// holds two seconds' worth, so bursts pass and sustained floods do not.
    pub fn allow_event(&self) -> bool {
        let now = Instant::now();
        let mut bucket = self.bucket.lock_or_recover();
        let (tokens, last) = &mut *bucket;
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec)
            .min(2.0 * self.per_sec);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a request for the next task as earned, up to `max`: the worker answered a task
    /// the server gave it. The result and the request after it are the server's own pace, not
    /// the client's, so they cost no budget; without this a fast honest worker on small tiles
    /// (hundreds of tasks a second) was disconnected as a flood. A client cannot earn more
    /// than the tasks it is sent, and `max` (its tasks in flight) keeps it from saving up.
    pub fn earn_request(&self, max: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .earned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some((n + 1).min(max))
            });
    }

    /// Spends an earned request, if there is one.
    pub fn spend_earned(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.earned
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Marks the connection ended and gives its share of the address's limit back (once).
    pub fn close(&self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.limits.release(self.ip, |open| {
                open.connections = open.connections.saturating_sub(1);
            });
        }
    }

    /// Whether the connection has ended. A handler that was still running when it ended
    /// checks this after adding anything per connection, and takes it back.
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admission_gives_its_place_back_once_whether_closed_or_dropped() {
        let limits = Arc::new(ClientLimits::default());
        let ip = IpAddr::from([10, 0, 0, 1]);
        let first = limits.admit(ip, 2, 10).expect("first of two");
        let second = limits.admit(ip, 2, 10).expect("second of two");
        assert!(
            limits.admit(ip, 2, 10).is_none(),
            "a third passes the limit"
        );
        assert_eq!(
            limits.open(IpAddr::from([10, 0, 0, 2])),
            0,
            "other addresses are apart"
        );

        first.close();
        assert!(first.is_closed());
        assert_eq!(limits.open(ip), 1);
        drop(first); // closed already: must not give the place back twice
        assert_eq!(limits.open(ip), 1);

        drop(second); // never closed, as when socketioxide drops a half-connected socket
        assert_eq!(limits.open(ip), 0);
        assert!(limits.admit(ip, 2, 10).is_some());
    }

    #[test]
    fn a_session_holds_its_place_until_its_last_clone_is_dropped() {
        let limits = Arc::new(ClientLimits::default());
        let ip = IpAddr::from([10, 0, 0, 1]);
        let first = limits.open_session(ip, 2).expect("first of two");
        let second = limits.open_session(ip, 2).expect("second of two");
        assert!(
            limits.open_session(ip, 2).is_none(),
            "a third passes the limit"
        );
        assert_eq!(limits.sessions(ip), 2);
        assert_eq!(limits.open(ip), 0, "sessions are not connections");

        // engineioxide clones the handshake's parts (and so the session) for an upgrade.
        let kept_by_the_session = first.clone();
        drop(first);
        assert_eq!(limits.sessions(ip), 2, "a clone still holds the place");
        drop(kept_by_the_session);
        assert_eq!(limits.sessions(ip), 1);

        // Connections are counted apart, and the entry goes once both are back to zero.
        let connection = limits.admit(ip, 1, 10).expect("a connection");
        drop(second);
        assert_eq!((limits.sessions(ip), limits.open(ip)), (0, 1));
        drop(connection);
        assert!(limits.per_ip.lock().expect("not poisoned").is_empty());
        assert!(limits.open_session(ip, 0).is_none(), "a zero limit refuses");
        assert!(
            limits.per_ip.lock().expect("not poisoned").is_empty(),
            "a refusal leaves nothing behind"
        );
    }

    #[test]
    fn answering_tasks_earns_requests_up_to_the_tasks_in_flight_and_no_more() {
        let limits = Arc::new(ClientLimits::default());
        let admission = limits
            .admit(IpAddr::from([10, 0, 0, 1]), 1, 10)
            .expect("the first connection is admitted");
        assert!(!admission.spend_earned(), "nothing earned yet");
        for _ in 0..10 {
            admission.earn_request(4);
        }
        let spent = (0..10).filter(|_| admission.spend_earned()).count();
        assert_eq!(spent, 4, "saved up to the tasks in flight only");
        let allowed = (0..100).filter(|_| admission.allow_event()).count();
        assert!(
            (20..=21).contains(&allowed),
            "the budget is untouched: {allowed}"
        );
    }

    #[test]
    fn the_event_budget_holds_two_seconds_worth() {
        let limits = Arc::new(ClientLimits::default());
        let admission = limits
            .admit(IpAddr::from([10, 0, 0, 1]), 1, 10)
            .expect("the first connection is admitted");
        let allowed = (0..100).filter(|_| admission.allow_event()).count();
        assert!(
            (20..=21).contains(&allowed),
            "allowed {allowed} of a burst of 100"
        );
    }
}
