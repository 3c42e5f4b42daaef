//! Moves what servers before the store kept in the database (inputs and results as blobs,
//! see `db::legacy`) into the store, once, at start-up: jobs submitted before an upgrade
//! carry on, and their results stay downloadable. One job at a time, so memory holds at most
//! one old job's blobs, as the old server did.

use crate::db::{self, legacy, Pool};
use crate::store::{Part, Store};

/// Moves every job that still has blobs; returns how many were moved.
pub async fn move_blobs(db: &Pool, store: &std::sync::Arc<Store>) -> Result<usize, String> {
    let jobs = legacy::jobs_with_blobs(db)
        .await
        .map_err(|e| e.to_string())?;
    for job_id in &jobs {
        let Some(job) = db::get_job(db, job_id).await.map_err(|e| e.to_string())? else {
            continue;
        };
        let plan = job.plan()?;
        let inputs = legacy::inputs(db, job_id)
            .await
            .map_err(|e| e.to_string())?;
        let results = legacy::results(db, job_id)
            .await
            .map_err(|e| e.to_string())?;
        let (store, id) = (store.clone(), job_id.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            // A job without inputs (done, inputs gone) still gets A and B files: empty of data
            // they cost nothing, and the folder has one shape for every job.
            let (a, b) = match inputs {
                Some((a, b_panels)) => (a, plan.unpanelize_b(&b_panels)),
                None => (
                    vec![0; plan.m * plan.k * plan.dtype.size()],
                    vec![0; plan.k * plan.n * plan.dtype.size()],
                ),
            };
            store.remove(&id)?;
            let upload = store.begin(&id)?;
            let inputs = [
                (Part::A, &a, (plan.m, plan.k)),
                (Part::B, &b, (plan.k, plan.n)),
            ];
            for (part, data, shape) in inputs {
                upload
                    .write_matrix(part, plan.dtype, shape, data)
                    .map_err(std::io::Error::other)?;
            }
            upload.finish(&plan)?;
            let tiles: Vec<_> = results
                .iter()
                .map(|(row, col, bytes)| (plan.tile(*row as usize, *col as usize), bytes))
                .collect();
            store.write_tiles(
                tiles
                    .iter()
                    .map(|(t, bytes)| (id.as_str(), &plan, t, &bytes[..])),
            )?;
            store.sync_result(&id)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("moving job {job_id}: {e}"))?;
        legacy::clear(db, job_id).await.map_err(|e| e.to_string())?;
        tracing::info!(%job_id, "moved a job's matrices from the database to DATA_DIR");
    }
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_stored_as_blobs_is_moved_to_the_store_with_its_done_tiles() {
        let (dir, pool, store) = crate::testing::database_and_store("upgrade").await;
        // A 2×2·2×3 f32 job in tiles of 2: B's panels are columns 0–1 and column 2.
        let plan = crate::testing::f32_plan(2, 2, 3, 2);
        let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let a = f32s(&[1.0, 2.0, 3.0, 4.0]);
        let b = f32s(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        db::insert_job(&pool, "job", "old", &plan)
            .await
            .expect("a job");
        let done = vec![(0, 1, f32s(&[15.0, 33.0]))]; // column 2 of C
        legacy::store_as_before(&pool, "job", &a, &plan.panelize_b(&b), &done)
            .await
            .expect("blobs");
        assert_eq!(move_blobs(&pool, &store).await, Ok(1));
        let tile = plan.tile(0, 1);
        assert_eq!(
            store.read_tile("job", &plan, &tile).expect("read"),
            done[0].2
        );
        let (pa, pb) = store.panels("job", &plan, &tile).expect("panels");
        assert_eq!((pa, pb), (a, f32s(&[3.0, 6.0])), "B back in rows");
        assert_eq!(move_blobs(&pool, &store).await, Ok(0), "once");
        pool.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
