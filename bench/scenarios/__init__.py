"""One module per scenario; bench/run.py runs them in order:

 (1) http_ceiling     a plain aiohttp client, signing each body, POSTing to the bench receiver
 (1b) client_ceiling  reminderd's CallbackClient alone, without the database
 (2) delivery         reminderd delivering due rows (and (6) its peak RSS)
 (3) timer            timer precision of an idle daemon
 (4) burst            many rows due at one instant
 (5) claim_cost       EXPLAIN of the claim with 0 and a large backlog of future rows
 (7) api              the HTTP API against the real reminderd serve, beside the SQL path
 (8) soak             3 daemons, 10 minutes, 300 callbacks/s, a kill -9 a minute, 5 % failing answers
 (9) dashboard        pages: the dashboard's pages on 1,000,000 messages and 5,000,000 deliveries
 (10) dashboard       feed: the daemon's lateness without and with 50 live-feed streams open
 (10b) dashboard      trigger_cost: a burst drained with and without the dashboard's counting triggers
 profile              py-spy and pg_stat_statements during one more delivery run (--profile)
"""
