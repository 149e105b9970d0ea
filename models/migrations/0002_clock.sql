-- The clock (SPEC 2, 4, 8): leader epochs and the record of every job run.

-- Fencing epoch: each acquisition of the scheduler's leader lock draws the next value. It lives
-- here and not in Redis, so a Redis flush or restart can never hand out an epoch twice.
CREATE SEQUENCE scheduler_epoch;

-- One row per (job, slot), slot = floor(database time in ms / job interval). Inserting the row
-- is how a leader claims a run: the primary key makes two leaders that overlap (a paused one
-- waking up, a split brain) run a slot once, and the row tells health and operators when each
-- job last ran, on which epoch, and what it did.
CREATE TABLE job_run (
    job          text NOT NULL,
    slot         bigint NOT NULL,
    epoch        bigint NOT NULL,
    holder       text NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz,
    ok           boolean,
    result       jsonb,
    PRIMARY KEY (job, slot)
);
-- The newest epoch that ran anything: an older leader may no longer claim slots.
CREATE INDEX job_run_epoch ON job_run (epoch);
