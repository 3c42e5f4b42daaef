-- A dispatch round asks which of its waiting workers were refused on some task (those claim
-- one by one, past the tasks they may not take; the others claim together).
CREATE INDEX task_exclusions_worker ON task_exclusions (worker_id);
