//! What unit tests of storage share: a temporary database beside a temporary store.

use std::path::PathBuf;
use std::sync::Arc;

use crate::db::{self, Pool};
use crate::jobs::{Dtype, Plan};
use crate::store::Store;

/// A fresh folder holding a database (`brain.db`) and a store (`jobs/`); the caller removes
/// the folder when done.
pub async fn database_and_store(name: &str) -> (PathBuf, Pool, Arc<Store>) {
    let dir = std::env::temp_dir().join(format!("brain-{name}-{}", uuid::Uuid::new_v4()));
    let pool = db::connect(&dir.join("brain.db"))
        .await
        .expect("a database");
    let store = Arc::new(Store::open(&dir.join("jobs")).expect("a store"));
    (dir, pool, store)
}

/// An f32 job's plan.
pub fn f32_plan(m: usize, k: usize, n: usize, tile: usize) -> Plan {
    Plan {
        dtype: Dtype::F32,
        m,
        k,
        n,
        tile,
        split: 1,
    }
}
