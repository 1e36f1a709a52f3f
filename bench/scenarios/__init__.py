"""One module per scenario; bench/run.py runs them in order:

 (1) http_ceiling     a plain aiohttp client, signing each body, POSTing to the bench receiver
 (1b) client_ceiling  reminderd's CallbackClient alone, without the database
 (2) delivery         reminderd delivering due rows (and (6) its peak RSS)
 (3) timer            timer precision of an idle daemon
 (4) burst            many rows due at one instant
 (5) claim_cost       EXPLAIN of the claim with 0 and a large backlog of future rows
 (7) soak             3 daemons, 10 minutes, 300 callbacks/s, a kill -9 a minute, 5 % failing answers
 profile              py-spy and pg_stat_statements during one more delivery run (--profile)
"""
