"""One module per scenario; bench/run.py runs them in order:

 (1) http_ceiling     the daemon's HTTP client alone (reminderd.http1), signing each body
 (1b) client_ceiling  reminderd's CallbackClient alone, without the database
 (2) delivery         reminderd delivering due rows (and (6) its peak RSS)
 (3) timer            timer precision of an idle daemon
 (4) burst            many rows due at one instant
 (5) claim_cost       EXPLAIN of the claim with 0 and a large backlog of future rows
 (7) api              the HTTP API against the real reminderd serve, beside the SQL path: POST /v1/messages
                      one by one and in batches
 (8) soak             3 daemons, 10 minutes, 300 callbacks/s, a kill -9 a minute, 5 % failing answers
 (9) startup          spawn of `reminderd run` to its first claim
 (10) write_path      PostgreSQL CPU per callback of claim + record, before and after ANALYZE
 (11) scaling         1, 2 and 3 daemons on one database, the same due rows
 (12) dashboard       pages: the dashboard's pages on 1,000,000 messages and 5,000,000 deliveries
 (13) dashboard       feed: the daemon's lateness without and with 50 live-feed streams open
 (13b) dashboard      trigger_cost: a burst drained with and without the dashboard's counting triggers
 (14) audiences       contacts import; (15) a broadcast staged over 14 zones; (16) its waves delivered
 profile              py-spy and pg_stat_statements during one more delivery run (--profile)
"""
