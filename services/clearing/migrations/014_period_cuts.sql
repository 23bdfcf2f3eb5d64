-- A month's cut: where the settlement stage (yidi-clearing-priced) stood on each partition when
-- the month closed (stage_progress.reached under the periods lock): a settlement record below its
-- partition's cut was entered before the close, one at or past it after. Each close records and
-- publishes its own (clearing.periods, the topic). yidi-recover writes the cuts of the months
-- closed after a backup into the restored database (restored): while the settlement stage handles
-- its records again, one below such a cut lands as it did before the close (repository.Cleared),
-- whichever comes first of it and the month's run handled again, and the run totals the month
-- once the stage has passed the cut; then the month's cuts steer nothing more (restored false).
-- A close made in this database covers only records it holds: its cut steers nothing.
CREATE TABLE IF NOT EXISTS period_cuts (
    setlym          text    NOT NULL,
    topic           text    NOT NULL,
    kafka_partition integer NOT NULL,
    cut             bigint  NOT NULL,
    restored        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (setlym, topic, kafka_partition)
);
CREATE INDEX IF NOT EXISTS period_cuts_restored ON period_cuts (topic, kafka_partition, cut) WHERE restored;
