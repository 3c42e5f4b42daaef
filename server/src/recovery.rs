//! After an unclean stop, finds the done tiles whose bytes never reached the disk and puts
//! them back in the queue. Results are committed once written to the page cache, not once
//! synced (see `commit`): a crash of the process loses nothing, since the kernel still holds
//! the pages, but a crash of the machine can lose a tile the database calls done. Each done
//! tile's CRC-32 is in the database; a tile that reads back with another is computed again.
//! A clean stop syncs every result and leaves a mark (`Store::mark_clean`), so this runs only
//! when the mark is missing, and only over jobs still running: a job's result is synced
//! before the job is marked done.
//!
//! Not on PostgreSQL: there a tile's bytes are committed with the task they complete (see
//! `commit`), so nothing the database calls done can be missing.

use std::sync::Arc;

use crate::db::{self, Pool, WrittenTile};
use crate::store::Store;

/// Checks the written tiles of every running job; returns how many were lost and re-queued.
pub async fn requeue_lost_tiles(db: &Pool, store: &Arc<Store>) -> Result<usize, String> {
    if db::engine() == db::Engine::Postgres {
        return Ok(0);
    }
    let tiles = db::written_tiles(db).await.map_err(|e| e.to_string())?;
    let mut lost = 0;
    for job in tiles.chunk_by(|a, b| a.job_id == b.job_id) {
        let job_id = job[0].job_id.clone();
        let Some(row) = db::get_job(db, &job_id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let plan = row.plan()?;
        let store = store.clone();
        let check: Vec<(i64, i64, i64)> = job
            .iter()
            .map(|t| (t.tile_row, t.tile_col, t.result_crc))
            .collect();
        // A job whose files are gone is failed by dispatch; here every tile would read as lost.
        let bad = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<usize>> {
            let mut bad = Vec::new();
            for (i, (row, col, crc)) in check.into_iter().enumerate() {
                let tile = plan.tile(row as usize, col as usize);
                let bytes = store.read_tile(&job_id, &plan, &tile)?;
                if i64::from(crc32fast::hash(&bytes)) != crc {
                    bad.push(i);
                }
            }
            Ok(bad)
        })
        .await
        .map_err(|e| e.to_string())?;
        let bad = match bad {
            Ok(bad) => bad,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("checking job {}: {e}", job[0].job_id)),
        };
        let lost_here: Vec<&WrittenTile> = bad.iter().map(|&i| &job[i]).collect();
        if !lost_here.is_empty() {
            db::requeue_lost(db, &lost_here)
                .await
                .map_err(|e| e.to_string())?;
            tracing::warn!(
                job_id = %job[0].job_id,
                tiles = lost_here.len(),
                "tiles lost in an unclean stop go back to the queue"
            );
        }
        lost += lost_here.len();
    }
    Ok(lost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::{Committer, Verified};
    use crate::store::Part;

    #[tokio::test]
    async fn a_done_tile_that_did_not_reach_the_disk_is_queued_again_and_the_others_stay_done() {
        let (dir, pool, store) = crate::testing::database_and_store("recovery").await;
        // A 2×1·1×2 f32 job in tiles of 1: four tasks.
        let plan = crate::testing::f32_plan(2, 1, 2, 1);
        db::insert_job(&pool, "job", "crash", &plan)
            .await
            .expect("a job");
        let upload = store.begin("job").expect("an upload");
        let ones = 1f32.to_le_bytes().repeat(2);
        upload
            .write_matrix(Part::A, plan.dtype, (2, 1), &ones)
            .expect("A");
        upload
            .write_matrix(Part::B, plan.dtype, (1, 2), &ones)
            .expect("B");
        upload.finish(&plan).expect("finished");
        // Three of the four tiles are stored through the committer, as results are.
        let committer = Committer::start(pool.clone(), store.clone());
        let tiles = db::job_tiles(&pool, "job").await.expect("tiles");
        for t in &tiles[..3] {
            let bytes = 1f32.to_le_bytes().to_vec();
            let task = db::ToComplete {
                task_id: t.task_id,
                connection: "c".into(),
                worker_id: "w".into(),
                compute_ms: None,
                duplicate: true,
                result_crc: crc32fast::hash(&bytes),
                flops: 2,
            };
            let tile = plan.tile(t.row as usize, t.col as usize);
            let verified = Verified {
                task,
                job_id: "job".into(),
                plan,
                tile,
                bytes: bytes.into(),
            };
            committer.complete(verified).await.expect("committed");
        }
        assert_eq!(
            requeue_lost_tiles(&pool, &store).await,
            Ok(0),
            "nothing lost"
        );
        // The machine crashed before tile (0, 1) was written back: its bytes read as zeros.
        let c = std::fs::OpenOptions::new()
            .write(true)
            .open(store.path("job", Part::C).expect("path"))
            .expect("c.npy");
        use std::os::unix::fs::FileExt;
        c.write_all_at(&[0; 4], crate::store::DATA_OFFSET + 4)
            .expect("lost");
        assert_eq!(requeue_lost_tiles(&pool, &store).await, Ok(1));
        let states: Vec<_> = db::job_tiles(&pool, "job")
            .await
            .expect("tiles")
            .into_iter()
            .map(|t| (t.row, t.col, t.state))
            .collect();
        assert_eq!(
            states,
            [
                (0, 0, "done"),
                (0, 1, "queued"),
                (1, 0, "done"),
                (1, 1, "queued")
            ]
            .map(|(r, c, s)| (r, c, s.to_owned()))
        );
        let job = db::get_job(&pool, "job").await.expect("read").expect("job");
        assert_eq!(job.tasks_done, 2);
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_clean_stop_leaves_a_mark_that_the_next_start_takes() {
        let dir = std::env::temp_dir().join(format!("brain-clean-{}", uuid::Uuid::new_v4()));
        let store = Store::open(&dir).expect("a store");
        assert!(
            !store.take_clean_mark().expect("read"),
            "a new root was not stopped cleanly"
        );
        store.mark_clean().expect("marked");
        assert!(store.take_clean_mark().expect("read"));
        assert!(!store.take_clean_mark().expect("read"), "taken once");
        let _ = std::fs::remove_dir_all(dir);
    }
}
