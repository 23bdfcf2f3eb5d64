-- A running stage or feed checks, in the statement that records a batch's progress, that each of
-- its partitions' rows still holds what its earlier batches recorded there (yidi.platform.progress).
-- A row below that, or gone, is a database that went back under the running service: a failover to
-- a replica that was behind, a restore while it ran. The check calls this, which raises (SQLSTATE
-- YB001, yidi.platform.errors.DatabaseWentBack): the batch's transaction is rolled back, and the
-- service stops before it handles anything on the database.
CREATE OR REPLACE FUNCTION stage_progress_went_back(
    consumer_group text, topic text, kafka_partition integer, holds bigint, recorded bigint
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the database went back under the running service: % %[%]: it holds %; the service had seen it hold every record before %',
        consumer_group, topic, kafka_partition,
        CASE WHEN holds IS NULL THEN 'no row of it' ELSE 'only the records before ' || holds END, recorded
        USING ERRCODE = 'YB001';
END
$$;
