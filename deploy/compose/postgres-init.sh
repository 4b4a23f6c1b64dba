#!/bin/bash
# docker-compose only: what the local stack and `ecst demo` set up in the producer database.
# The connector gets a least-privilege role (REPLICATION, SELECT on the captured table), and
# the table owner creates the publication (the connector has publication.autocreate.mode=disabled).
set -euo pipefail
psql() { command psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"; }
psql -v table=users -f /ecst-sql/users.sql
psql -v table=ecst_signal -f /ecst-sql/signal.sql
psql -v table=ecst_heartbeat -f /ecst-sql/heartbeat.sql
psql -v pw="$ECST_CONNECTOR_PASSWORD" <<'SQL'
CREATE ROLE ecst_connector WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
INSERT INTO users (email, full_name, country, balance, birth_date, last_login)
SELECT 'user' || g || '@example.com', 'User ' || g, (ARRAY['DE','FR','US','JP','BR'])[1 + g % 5],
       round((random() * 10000)::numeric, 2), date '1960-01-01' + (g * 37 % 15000),
       timestamp '2024-01-01' + g * interval '17 minutes'
FROM generate_series(1, 5000) AS g;
CREATE PUBLICATION ecst_users FOR TABLE users, ecst_signal, ecst_heartbeat;
GRANT USAGE ON SCHEMA public TO ecst_connector;
GRANT SELECT ON users TO ecst_connector;
GRANT SELECT, INSERT ON ecst_signal TO ecst_connector;
GRANT SELECT, INSERT, UPDATE ON ecst_heartbeat TO ecst_connector;
SQL
