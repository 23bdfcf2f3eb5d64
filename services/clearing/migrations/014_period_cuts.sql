-- A month's cut: where the settlement stage (yidi-clearing-priced) stood on each partition when
-- the month closed (stage_progress.reached under the periods lock): a settlement record below its
-- partition's cut was entered before the close, one at or past it after. Landing by the cut
-- (repository.batch_reads), a settlement handled again after a restore lands in the period it
-- landed in first, whichever of the two stages reaches its record first; yidi-recover writes the
-- cuts of the months closed after the backup (from clearing.periods, the topic) before the redo.
-- A month closed before this migration has no cut: closed for every record.
CREATE TABLE IF NOT EXISTS period_cuts (
    setlym          text    NOT NULL,
    topic           text    NOT NULL,
    kafka_partition integer NOT NULL,
    cut             bigint  NOT NULL,
    PRIMARY KEY (setlym, topic, kafka_partition)
);
CREATE INDEX IF NOT EXISTS period_cuts_by_partition ON period_cuts (topic, kafka_partition, cut);
