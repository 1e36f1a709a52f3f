"""One module per scenario; bench/run.py runs them in order:

 (1) http_ceiling     the daemon's HTTP client alone (reminderd.http1), signing each body
 (1b) client_ceiling  reminderd's CallbackClient alone, without the database
 (2) delivery         reminderd delivering due rows (and (6) its peak RSS)
 (3) timer            timer precision of an idle daemon
 (4) burst            many rows due at one instant
 (5) claim_cost       EXPLAIN of the claim with 0 and a large backlog of future rows
 (7) startup          spawn of `reminderd run` to its first claim
 (8) write_path       PostgreSQL CPU per callback of claim + record, before and after ANALYZE
 (9) scaling          1, 2 and 3 daemons on one database, the same due rows
 profile              py-spy and pg_stat_statements during one more delivery run (--profile)
"""
