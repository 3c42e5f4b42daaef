//! The group committer: verified results are stored by one task, many per transaction.
//!
//! A result handler hands its verified result here and waits for the outcome; the committer
//! takes whatever has queued up (at least one, at most [`MAX_BATCH`]) and stores it in one
//! transaction. Under load one commit serves many results; alone, a result waits for no one.
//! Every `result_ack` is still sent only after its result is committed.

use tokio::sync::{mpsc, oneshot};

use crate::db::{self, Completion, Pool, ToComplete};

/// Most results stored by one transaction.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Completion, String>>;

/// The handle result handlers use.
#[derive(Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<(ToComplete, Reply)>,
}

impl Committer {
    /// Starts the committer on the current runtime.
    pub fn start(pool: Pool) -> Self {
        let (queue, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, rx));
        Committer { queue }
    }

    /// Stores one verified result; resolves once it is committed (or refused).
    pub async fn complete(&self, item: ToComplete) -> Result<Completion, String> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((item, reply))
            .map_err(|_| "the committer has stopped".to_owned())?;
        answer
            .await
            .map_err(|_| "the committer has stopped".to_owned())?
    }
}

async fn run(pool: Pool, mut rx: mpsc::UnboundedReceiver<(ToComplete, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        match db::complete_tasks(&pool, &items).await {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, results = items.len(), "storing results failed");
                for reply in replies {
                    let _ = reply.send(Err(e.to_string()));
                }
            }
        }
    }
}
