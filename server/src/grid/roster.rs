//! The connections of this instance as the others see them: instances sharing PostgreSQL each
//! hold their own sockets, and each lists every instance's workers (`GET /api/workers`) from
//! what the others publish. Published once a second with the rest of the instance's news,
//! never on a connection's own path: a new or departed connection at once, a changed tab or
//! battery state at once, a new speed figure at most every [`SPEED_EVERY`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::db::{self, Listed};
use crate::sync::LockExt;

use super::registry::Connection;
use super::Grid;

/// How often a connection's changing speed figure is published again.
const SPEED_EVERY: Duration = Duration::from_secs(30);

/// What this instance last published of each of its connections, and when.
pub type Published = HashMap<String, (Listed, Instant)>;

impl Grid {
    /// Publishes what changed among this instance's connections since the last call.
    pub async fn publish_roster(&self) -> Result<(), sqlx::Error> {
        if db::engine() == db::Engine::Sqlite {
            return Ok(());
        }
        let current = self.workers.map(listed);
        let now = Instant::now();
        let (changed, gone) = changes(&self.roster.lock_or_recover(), current, now);
        db::publish_connections(&self.db, &changed, &gone).await?;
        let mut roster = self.roster.lock_or_recover();
        for id in &gone {
            roster.remove(id);
        }
        for c in changed {
            roster.insert(c.id.clone(), (c, now));
        }
        Ok(())
    }
}

fn listed(c: &Connection) -> Listed {
    Listed {
        id: c.id.as_str().to_owned(),
        worker_id: c.worker_id.clone(),
        name: c.name.clone(),
        threads: i64::from(c.threads),
        user_agent: c.user_agent.clone(),
        connected_at: c.connected_at.clone(),
        gflops: c.gflops,
        visible: i64::from(c.visible),
        on_battery: i64::from(c.on_battery),
    }
}

/// The connections to write (new ones; those whose tab or battery state changed; those whose
/// speed changed, once its last publication is [`SPEED_EVERY`] old) and those to remove.
fn changes(
    published: &Published,
    current: Vec<Listed>,
    now: Instant,
) -> (Vec<Listed>, Vec<String>) {
    let present: std::collections::HashSet<&str> = current.iter().map(|c| c.id.as_str()).collect();
    let gone = published
        .keys()
        .filter(|id| !present.contains(id.as_str()))
        .cloned()
        .collect();
    let changed = current
        .into_iter()
        .filter(|c| match published.get(&c.id) {
            None => true,
            Some((p, at)) => {
                (p.visible, p.on_battery) != (c.visible, c.on_battery)
                    || (p.gflops != c.gflops && now.duration_since(*at) >= SPEED_EVERY)
            }
        })
        .collect();
    (changed, gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: &str, gflops: f64, visible: i64) -> Listed {
        Listed {
            id: id.into(),
            worker_id: format!("w-{id}"),
            name: String::new(),
            threads: 1,
            user_agent: String::new(),
            connected_at: String::new(),
            gflops,
            visible,
            on_battery: 0,
        }
    }

    #[test]
    fn new_and_gone_connections_and_state_changes_go_out_at_once_speeds_every_thirty_seconds() {
        let t0 = Instant::now();
        let published: Published = [
            ("kept".to_owned(), (conn("kept", 1.0, 1), t0)),
            ("hidden".to_owned(), (conn("hidden", 1.0, 1), t0)),
            ("faster".to_owned(), (conn("faster", 1.0, 1), t0)),
            ("left".to_owned(), (conn("left", 1.0, 1), t0)),
        ]
        .into_iter()
        .collect();
        let now = [
            conn("kept", 1.0, 1),
            conn("hidden", 1.0, 0),
            conn("faster", 2.0, 1),
            conn("new", 0.0, 1),
        ];
        let ids = |v: &[Listed]| v.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        let (changed, gone) = changes(&published, now.to_vec(), t0 + Duration::from_secs(1));
        assert_eq!(ids(&changed), ["hidden", "new"]);
        assert_eq!(gone, ["left"]);
        let (changed, _) = changes(&published, now.to_vec(), t0 + SPEED_EVERY);
        assert_eq!(ids(&changed), ["hidden", "faster", "new"]);
    }
}
