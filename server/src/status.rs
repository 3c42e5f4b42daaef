//! The states a job and a task go through, as stored in the `status` and `state` columns
//! (lowercase text) and shown by the API, the dashboards and `/metrics`.

use serde::Serialize;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Submitted; no task leased yet.
    Queued,
    /// At least one task was leased.
    Running,
    /// Every tile is verified and stored: the result can be downloaded.
    Done,
    /// A task was at fault (see `trust::task_fault`); the error says which.
    Failed,
    /// Cancelled by its submitter.
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Done,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Done => "done",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Still to be computed: it may be cancelled, and its tasks handed out.
    pub fn is_open(self) -> bool {
        matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where one tile task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    /// Waiting for a worker.
    Queued,
    /// Handed to a connection, until its deadline.
    Leased,
    /// Its result is verified and stored.
    Done,
    /// Its job failed.
    Failed,
    /// Its job was cancelled.
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Queued,
        TaskState::Leased,
        TaskState::Done,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Leased => "leased",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Stored as their names (text), through sqlx's `Any` driver, which serves both engines: its
/// derive covers only one database at a time.
macro_rules! stored_as_text {
    ($state:ty) => {
        impl sqlx::Type<sqlx::Any> for $state {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <&str as sqlx::Type<sqlx::Any>>::type_info()
            }
            fn compatible(ty: &sqlx::any::AnyTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Any>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $state {
            fn decode(value: sqlx::any::AnyValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::Any>>::decode(value)?;
                <$state>::ALL
                    .into_iter()
                    .find(|s| s.as_str() == name)
                    .ok_or_else(|| format!("unknown {} {name:?}", stringify!($state)).into())
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $state {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer<'q>,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Any>>::encode(self.as_str(), buf)
            }
        }
    };
}

stored_as_text!(JobStatus);
stored_as_text!(TaskState);

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are stored, sent and shown: they must stay as the schema's CHECK lists them.
    #[test]
    fn names_match_the_schema_and_the_wire() {
        let jobs: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(jobs, ["queued", "running", "done", "failed", "cancelled"]);
        let tasks: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(tasks, ["queued", "leased", "done", "failed", "cancelled"]);
        for s in JobStatus::ALL {
            assert_eq!(
                serde_json::to_value(s).expect("serialises"),
                serde_json::json!(s.as_str())
            );
        }
        assert!(JobStatus::Running.is_open() && !JobStatus::Done.is_open());
    }
}
