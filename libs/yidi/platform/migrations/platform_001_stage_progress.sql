-- Where each stage's and feed's batches began, per partition, recorded by the batches' own
-- transactions (yidi.platform.progress): every record before applied_below is in this database.
-- After a restore, python -m yidi.platform.recover moves the service's consumer groups back here.
CREATE TABLE IF NOT EXISTS stage_progress (
    consumer_group  text        NOT NULL,
    topic           text        NOT NULL,
    kafka_partition integer     NOT NULL,
    applied_below   bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer_group, topic, kafka_partition)
);
