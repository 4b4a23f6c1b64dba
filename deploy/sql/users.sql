-- The producer's `users` table, as the demo, the tests and docker-compose create it.
-- psql: psql -v table=users -f deploy/sql/users.sql   (ecst.source fills in the table name itself)
CREATE TABLE :"table" (
    id          bigserial PRIMARY KEY,
    email       text NOT NULL UNIQUE,
    full_name   text NOT NULL,
    country     varchar(2),
    balance     numeric(12,2) NOT NULL DEFAULT 0,
    active      boolean NOT NULL DEFAULT true,
    birth_date  date,
    last_login  timestamp,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
