// PM2 process file for reminderd.
//
// stop_exit_codes below needs a PM2 that implements it (it was documented long before it was,
// Unitech/pm2#5330): check once that a bad setting leaves the app stopped, e.g. start it with
// REMINDERD_CONCURRENCY=lots and see `pm2 ls` show it stopped, not restarting.
//
//   python3 -m venv /opt/reminderd/.venv && /opt/reminderd/.venv/bin/pip install /path/to/reminderd
//   /opt/reminderd/.venv/bin/reminderd migrate        # before every start of a new version
//   pm2 startOrReload ecosystem.config.js && pm2 save
//
// Migrations are deliberately not a PM2 app: PM2 does not order apps, and a daemon that starts on
// an unmigrated schema exits 78 (and, per stop_exit_codes below, stays stopped). Run `reminderd
// migrate` in your deploy script first; see docs/operations.md.

const path = require("path");

// Where `pip install` put reminderd. The console script carries its own interpreter (#!.venv/bin/python).
const VENV = "/opt/reminderd/.venv";

module.exports = {
  apps: [
    {
      name: "reminderd",
      // Run the venv's console script directly, not through node: interpreter "none" makes PM2
      // exec the file itself, so the PID PM2 signals is reminderd's own.
      script: path.join(VENV, "bin", "reminderd"),
      args: ["run"],
      interpreter: "none",
      cwd: "/opt/reminderd",
      // fork, one process: cluster mode is for Node.js only. A second copy on the same host would
      // fail to bind REMINDERD_HTTP_PORT and exit 78; raise REMINDERD_CONCURRENCY instead, or run
      // one daemon per host (they share the work through the database).
      exec_mode: "fork",
      instances: 1,

      // Do not inherit REMINDERD_* from the shell that runs `pm2 start`: only what is below counts.
      filter_env: ["REMINDERD_"],
      env: {
        // The password stays out of this file: reminderd reads any NAME_FILE instead of NAME.
        REMINDERD_DATABASE_URL_FILE: "/etc/reminderd/database_url",
        // Or a --config TOML file (environment variables win over it).
        // REMINDERD_CONFIG: "/etc/reminderd/reminderd.toml",
        REMINDERD_POLL_INTERVAL: "2",
        REMINDERD_LOOKBACK: "120",
        REMINDERD_CONCURRENCY: "64",
        REMINDERD_LEASE: "300",
        REMINDERD_CALLBACK_TIMEOUT: "10",
        REMINDERD_MAX_ATTEMPTS: "8",
        // Callbacks get this long to finish after PM2's SIGINT (reminderd drains on SIGINT exactly
        // as on SIGTERM); kill_timeout below must stay above it.
        REMINDERD_SHUTDOWN_TIMEOUT: "30",
        REMINDERD_LOG_LEVEL: "info",
        // /healthz, /readyz, /metrics for Prometheus (examples/prometheus/alerts.yml).
        REMINDERD_HTTP_HOST: "127.0.0.1",
        REMINDERD_HTTP_PORT: "9464",
        // Behind PgBouncer in transaction mode: statement cache off, LISTEN on a direct URL.
        // REMINDERD_PGBOUNCER: "1",
        // REMINDERD_LISTEN_DATABASE_URL_FILE: "/etc/reminderd/listen_database_url",
      },

      // PM2 stops an app with SIGINT, then SIGKILL after kill_timeout ms (default 1.6 s: far too
      // short). reminderd stops claiming, lets in-flight callbacks finish for
      // REMINDERD_SHUTDOWN_TIMEOUT (30 s), records them and hands the rest back: 45 s leaves 15 s
      // for that. Were it killed anyway, nothing is lost: its leases expire and the rows are
      // redelivered with the same webhook-id.
      kill_timeout: 45000,

      // Restart after a crash (a non-zero exit other than the codes below)...
      autorestart: true,
      // ...but not after a clean stop (0) nor a configuration error (78, EX_CONFIG: a bad
      // REMINDERD_* value, a schema that is not migrated, a port in use): restarting would only
      // repeat it. PM2 shows the app as stopped; `pm2 logs reminderd` says why.
      stop_exit_codes: [0, 78],
      // An exit within min_uptime of the start counts as an unstable restart; after max_restarts
      // of those in a row PM2 gives up (status "errored") instead of looping forever. An
      // unreachable database is no reason to exit: reminderd waits for it without restarting.
      min_uptime: "10s",
      max_restarts: 10,
      // Wait 200 ms before the first restart, growing by 1.5x up to PM2's 15 s cap; reset after
      // 30 s of stable running. (Replaces a fixed restart_delay.)
      exp_backoff_restart_delay: 200,

      // Logs: JSON lines on stdout (stdout is not a terminal under PM2). No PM2 timestamp prefix
      // (`time`), so every line stays parseable JSON; reminderd stamps each line itself. Rotate
      // with pm2-logrotate, or set REMINDERD_LOG_FILE and send `pm2 sendSignal SIGHUP reminderd`
      // after rotating (SIGHUP reopens the file and reloads REMINDERD_LOG_LEVEL).
      time: false,
      out_file: "/var/log/reminderd/out.log",
      error_file: "/var/log/reminderd/error.log",

      // Nothing to watch in production, and no memory-based restarts: memory is bounded by
      // REMINDERD_CONCURRENCY + REMINDERD_BATCH_SIZE rows in hand.
      watch: false,
    },
    {
      // The HTTP API (docs/api.md): its own process, stateless. Its database URL is a login role
      // granted reminderd_api (not the daemon's). Cluster mode is for Node.js: for more API
      // processes on one host, add apps with their own REMINDERD_API_PORT behind your proxy.
      name: "reminderd-api",
      script: path.join(VENV, "bin", "reminderd"),
      args: ["serve"],
      interpreter: "none",
      cwd: "/opt/reminderd",
      exec_mode: "fork",
      instances: 1,
      filter_env: ["REMINDERD_"],
      env: {
        REMINDERD_DATABASE_URL_FILE: "/etc/reminderd/api_database_url",
        REMINDERD_API_HOST: "127.0.0.1",
        REMINDERD_API_PORT: "8080",
        REMINDERD_API_RATE_LIMIT: "100",
        REMINDERD_API_KEY_CACHE: "10",
        // Requests in flight get this long after PM2's SIGINT; kill_timeout stays above it.
        REMINDERD_SHUTDOWN_TIMEOUT: "30",
        REMINDERD_LOG_LEVEL: "info",
      },
      kill_timeout: 45000,
      autorestart: true,
      stop_exit_codes: [0, 78],
      min_uptime: "10s",
      max_restarts: 10,
      exp_backoff_restart_delay: 200,
      time: false,
      out_file: "/var/log/reminderd/api-out.log",
      error_file: "/var/log/reminderd/api-error.log",
      watch: false,
    },
  ],
};
