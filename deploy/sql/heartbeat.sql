-- The heartbeat table that the connector's heartbeat.action.query writes at every heartbeat, as
-- the demo, the tests and docker-compose create it. Configuration only: the producer's code never
-- reads or writes it. It must be in the connector's publication, and its role needs INSERT and
-- UPDATE on it: the row change travels through the slot, so Debezium confirms a newer position
-- and the slot stops retaining the WAL of other busy tables while the captured ones are idle.
-- psql: psql -v table=ecst_heartbeat -f deploy/sql/heartbeat.sql
CREATE TABLE IF NOT EXISTS :"table" (
    id  integer PRIMARY KEY,
    ts  timestamptz NOT NULL
);
