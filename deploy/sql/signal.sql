-- Debezium's signal table (signal.data.collection), as the demo, the tests and docker-compose
-- create it. Configuration only: the producer's code never reads or writes it. The connector
-- inserts its incremental-snapshot watermarks here, so its role needs INSERT as well as SELECT,
-- and the table must be in the connector's publication.
-- psql: psql -v table=ecst_signal -f deploy/sql/signal.sql
CREATE TABLE IF NOT EXISTS :"table" (
    id    varchar(42) PRIMARY KEY,
    type  varchar(32) NOT NULL,
    data  varchar(2048)
);
