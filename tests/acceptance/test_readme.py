"""The README works verbatim: every ```sh and ```sql block of it is run in order, as a newcomer would
run it after `make install` (one shell session from the repository's root; the SQL in psql, against
the dev database the README starts), and each command's exit status and key output are checked.

A block that is illustrative only (the Quick start, a production URL) is marked, on the line before
its fence, with `<!-- readme-walkthrough: skip (why) -->`. Every command of the other blocks must
have its expectation below: a README change that adds one fails here until it is given one.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from reminderd.migrate import head_revision

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SKIP = re.compile(r"^<!-- readme-walkthrough: skip \((?P<why>[^)]+)\) -->$")
FENCE = re.compile(r"^```(?P<kind>\w*)$")
ID = r"^\d+\n$"


@dataclass(frozen=True)
class Expect:
    """What a command does: its exit status, and patterns its stdout and stderr must match."""

    status: int = 0
    out: str | None = None
    err: str | None = None


# The shell commands, by their text (without the trailing "   # comment").
SHELL = {
    ". .venv/bin/activate": Expect(out="^$"),
    'eval "$(reminderd dev-db start --export)"': Expect(
        out="^$", err=rf"applied 0001, .*\(head {head_revision()}\)\n"),
    "reminderd dev-db status": Expect(out=r"^running on 127\.0\.0\.1:\d+ \(cluster in .+\)\n$"),
    "psql \"$REMINDERD_DATABASE_URL\" -c 'SELECT version_num FROM reminderd.alembic_version'": Expect(
        out=rf"\b{head_revision()}\b"),
    "reminderd migrate": Expect(out=rf"^reminderd: already at head {head_revision()}\n$"),
    "reminderd tenant add globex --callback-url https://globex.example/hooks/reminders": Expect(
        out=r"^tenant globex created\. Signing secret \(shown once, keep it safe\):\nwhsec_[A-Za-z0-9+/=]{44}\n$"),
    "reminderd schedule globex booking:b7d2:24h --at 2037-12-24T09:00:00+05:30 --payload "
    "'{\"to\": \"+919876543210\"}'": Expect(out=ID, err="^$"),
    'reminderd schedule globex booking:b7d2:1h --at "2037-12-24 08:00" --tz Asia/Kolkata': Expect(out=ID),
    "reminderd schedule globex cart:991:nudge --in 2h": Expect(out=ID),
    'reminderd schedule globex renewal:42 --cron "0 9 1 * *" --tz Asia/Kolkata --max-runs 12': Expect(
        out=ID, err=r'^cron "0 9 1 \* \*": At 09:00, on day 1 of the month \(Asia/Kolkata\); first \w{3} '
                    r"\d{4}-\d\d-01 09:00:00 IST \(\d{4}-\d\d-01T03:30:00Z\)\n$"),
    'reminderd schedule globex digest --every "weekdays at 9am" --tz Europe/London --category marketing': Expect(
        out=ID, err=r'^"weekdays at 9am" = cron "0 9 \* \* 1-5": .*\(Europe/London\); first '),
    'reminderd schedule globex payday --rrule "FREQ=MONTHLY;BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1;BYHOUR=17"': Expect(
        out=ID, err=r"\(UTC\); first "),
    "reminderd tenant set globex --calendar GB --quiet 21:00-09:00": Expect(
        out=r"^tenant globex: calendar GB, holidays skip, quiet hours 21:00-09:00 \(exempt: transactional\)\n$"),
    'reminderd tenant holiday add globex 2037-12-31 "Company day"': Expect(
        out=r"^tenant globex: 2037-12-31 is a holiday \(Company day\)\n$"),
    'reminderd preview --every "weekdays at 9am" --tz Europe/London --calendar GB -n 5': Expect(
        out=r'^"weekdays at 9am" = cron "0 9 \* \* 1-5": .*\nnext 5 fires after .*\n(  \w{3} .*\n){5,}$'),
    "reminderd schedule globex order:77 --in 90m --payload @examples/payloads/order.json": Expect(out=ID),
    "reminderd cancel globex cart:991:nudge": Expect(out="^1\n$"),
    "reminderd send-now globex renewal:42": Expect(
        out=ID, err=r"^an extra occurrence of message \d+ (goes out now|is held: .+)\n$"),
    "reminderd status": Expect(
        out=r"^TENANT +STATUS +MESSAGES +NEXT DUE \(UTC\)\nacme +cancelled +2 +\nacme +pending +4 +\d{4}-.*\n"
            r"globex +cancelled +1 +\nglobex +pending +7 +\d{4}-\d\d-\d\dT[\d:]{8}\+00:00\n"
            r"\nno daemons running\n$"),
    "reminderd tenant list": Expect(
        out=r"^TENANT +CALLBACK URL .*\nacme +https://acme\.example/hooks/reminders +- +- +active +4 +0 +0 +0\n"
            r"globex +https://globex\.example/hooks/reminders +GB \(skip\) +21:00-09:00 +active +7 +0 +0 +0\n$"),
    'reminderd schedule globex late --at 2020-01-01T09:00:00Z || echo "refused, status $?"': Expect(
        out=r"^refused, status 2\n$", err=r"^reminderd: error: --at '2020-01-01T09:00:00Z' was .* ago: too late to "
                                          r"send, nothing older than the lookback \(1d\) is ever sent"),
    "reminderd tenant set acme --approval-threshold 2": Expect(
        out=r"^tenant acme: .*, timezone Europe/London, approval above 2\n$"),
    "reminderd contacts import acme examples/contacts/customers.csv": Expect(
        out=r"^4 contacts imported into acme \(4 new or changed\) in "),
    "reminderd audience add acme vip cust_7c cust_5d": Expect(out=r"^audience vip: 2 contacts added \(0 were in it\)\n$"),
    "reminderd broadcast acme newyear --at 2038-01-01T10:00 --audience vip --dry-run": Expect(
        out=r"^broadcast newyear to audience vip, .*: 4 contacts in 4 zones\nsends per UTC hour:\n"
            r"  2038-01-01T01:00Z +1  Asia/Tokyo\n.*nothing was staged \(--dry-run\)\n$"),
    "reminderd broadcast acme newyear --at 2038-01-01T10:00 --audience vip --as alice": Expect(
        out=r"^4\n$", err=r"^broadcast 4: 4 messages staged, first wave 2038-01-01T01:00Z, last 2038-01-01T16:00Z; "
                          r"waiting for approval by someone other than alice\n$"),
    "reminderd broadcasts approve acme 4 --as bob": Expect(),  # 3 went to the dry run's rolled-back call
    "reminderd cadence acme renewal_43 --anchor 2038-01-15T00:00Z --at-local 10:00 --contact cust_9a": Expect(
        out=r"^REF .*\nrenewal_43:-30d +\d+ +2037-12-16T04:30Z  Wed 2037-12-16 10:00\n.*renewal_43:-1d .*\n$"),
    "reminderd contact show acme cust_8f": Expect(
        out=r"^contact cust_8f of acme\n  timezone    America/Chicago \(from its phone \+13125550100\)\n.*"
            r"messages: 6 live, .*\n\d+ +newyear:cust_8f +pending +2038-01-01T16:00Z .* broadcast 4 approved by bob\n.*$"),
    "reminderd dev-db stop": Expect(err=r"^reminderd dev-db: stopped\n$"),
}
# The SQL statements (psql -At: values one per line, or the command tag), by their first line.
SQL = {
    "INSERT INTO reminderd.tenants (id, callback_url)": Expect(out=r"^whsec_[A-Za-z0-9+/=]{44}\nINSERT 0 1\n$"),
    "UPDATE reminderd.config SET value = '20 years' WHERE key = 'horizon'": Expect(out="^UPDATE 1\n$"),
    "INSERT INTO reminderd.scheduled_messages (tenant_id, ref_id, fire_at, payload)": Expect(out="^INSERT 0 1\n$"),
    "SELECT reminderd.schedule('acme', 'cart:991:nudge', now() + interval '2 hours'": Expect(out=ID),
    "SELECT reminderd.schedule('acme', 'xmas:77', local_time => '2037-12-24 09:00'": Expect(out=ID),
    "SELECT reminderd.schedule_cron('acme', 'renewal:42', '0 9 1 * *'": Expect(out=ID),
    "SELECT reminderd.schedule_rrule('acme', 'payday',": Expect(out=ID),
    "SELECT reminderd.cancel('acme', 'cart:991:nudge')": Expect(out="^1\n$"),
    "SELECT reminderd.schedule('acme', 'cart:991:nudge', fire_in => interval '2 hours'": Expect(out=ID),
    "SELECT reminderd.cancel_matching('acme', 'booking:b7d2:%')": Expect(out="^1\n$"),
    "SELECT reminderd.pause('acme', 'renewal:42')": Expect(out="^1\n$"),
    "SELECT reminderd.resume('acme', 'renewal:42')": Expect(out="^1\n$"),
    "SELECT reminderd.pause_tenant('acme')": Expect(out="^4\n$"),
    "SELECT reminderd.resume_tenant('acme')": Expect(out="^4\n$"),
    "SELECT reminderd.reschedule('acme', 'booking:b7d2:24h', '2037-12-25 09:00+05:30')": Expect(out="^0\n$"),
    "SELECT reminderd.requeue(id) FROM reminderd.dead_letters WHERE tenant_id = 'acme' AND ref_id = 'cart:991:nudge'": Expect(out="^$"),
    "SELECT reminderd.requeue_dead('acme', now() - interval '1 day')": Expect(out="^0\n$"),
    "UPDATE reminderd.tenants SET timezone = 'Europe/London' WHERE id = 'acme'": Expect(out="^UPDATE 1\n$"),
    "SELECT reminderd.upsert_contacts('acme',": Expect(out="^2\n$"),
    "SELECT reminderd.add_to_audience('acme', 'vip',": Expect(out="^2\n$"),
    "SELECT reminderd.schedule('acme', 'renewal:8f', local_time => '2037-12-24 09:00', contact_id": Expect(out=ID),
    "SELECT reminderd.broadcast('acme', 'christmas',": Expect(out="^1\n$"),
    "SELECT reminderd.broadcast('acme', 'weekly',": Expect(out="^2\n$"),
    "SELECT ref_id, local_time FROM reminderd.schedule_cadence(": Expect(
        out=r"^renewal_42:-30d\|2037-12-15 10:00:00\nrenewal_42:-7d\|2038-01-07 10:00:00\n"
            r"renewal_42:-1d\|2038-01-13 10:00:00\n$"),
    "SELECT id, ref_prefix, staged, waiting, done FROM reminderd.broadcasts": Expect(
        out=r"^1\|christmas\|2\|2\|f\n2\|weekly\|0\|0\|f\n$"),
    "SELECT ref_id, status, timezone, timezone_source FROM reminderd.contact_messages(": Expect(
        out=r"(?m)\Arenewal_42:-30d\|pending\|America/Chicago\|phone\n(?=.*^renewal:8f\|pending\|America/Chicago\|phone$)"
            r"(?=.*^christmas:cust_8f\|pending\|America/Chicago\|phone$).*^renewal_42:-1d\|pending\|.*\n$"),
    "SELECT at, event, status, fire_at, reason, actor, attempt, status_code FROM reminderd.trail": Expect(
        out=r"\|created\|pending\|2037-12-24 03:30:00\+00\|\|reminderd\|\|\n.*\|cancelled\|cancelled\|.*"
            r"\|cancelled by pattern booking:b7d2:%\|reminderd\|\|\n$"),
}


@dataclass
class Step:
    kind: str  # "sh" | "sql"
    text: str  # as written in the README
    key: str  # what the expectations above are keyed by
    outputs: tuple[str, str, int] = ("", "", -1)


@dataclass
class Block:
    kind: str
    lines: list[str] = field(default_factory=list)
    skipped: str | None = None


def blocks(text: str) -> Iterator[Block]:
    """The README's ```sh and ```sql blocks, in order, each marked skipped or not."""
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence and fence["kind"]:
            marker = SKIP.match(lines[index - 1]) if index else None
            block = Block(fence["kind"], skipped=marker["why"] if marker else None)
            index += 1
            while not lines[index].startswith("```"):
                block.lines.append(lines[index])
                index += 1
            if block.kind in ("sh", "sql"):
                yield block
        index += 1


def shell_steps(block: Block) -> list[Step]:
    steps = []
    for line in block.lines:
        if line.strip() and not line.lstrip().startswith("#"):
            steps.append(Step("sh", line, re.split(r"\s{2,}# ", line)[0].rstrip()))
    return steps


def sql_steps(block: Block) -> list[Step]:
    """Statements: split at each ; outside quotes, `--` comments left out."""
    text = "\n".join(block.lines) + "\n"
    steps, current, quoted, index = [], "", False, 0
    while index < len(text):
        char = text[index]
        if not quoted and text.startswith("--", index):
            index = text.index("\n", index)
            continue
        current += char
        if char == "'":
            quoted = not quoted
        elif char == ";" and not quoted:
            statement = " ".join(current.split())
            steps.append(Step("sql", statement, _sql_key(statement)))
            current = ""
        index += 1
    assert not current.strip(), f"unterminated SQL in the README: {current!r}"
    return steps


def _sql_key(statement: str) -> str:
    for key in SQL:
        if statement.startswith(key):
            return key
    return statement


def walkthrough() -> list[Step]:
    steps: list[Step] = []
    for block in blocks(README.read_text(encoding="utf-8")):
        if block.skipped is None:
            steps += shell_steps(block) if block.kind == "sh" else sql_steps(block)
    return steps


def script(steps: list[Step], work: Path) -> str:
    """One bash session: each shell step in the current shell (so `.` and `eval` last), each SQL
    statement through psql, each with its own stdout, stderr and status files."""
    lines = ["cd " + shlex.quote(str(ROOT))]
    for number, step in enumerate(steps):
        out, err, status = (shlex.quote(str(work / f"{number}.{end}")) for end in ("out", "err", "status"))
        if step.kind == "sh":
            lines.append(f"{{ {step.text}\n}} >{out} 2>{err} </dev/null; echo $? >{status}")
        else:
            sql_file = work / f"{number}.sql"
            sql_file.write_text(step.text + "\n", encoding="utf-8")
            psql = f'psql "$REMINDERD_DATABASE_URL" -X -At -v ON_ERROR_STOP=1 -f {shlex.quote(str(sql_file))}'
            lines.append(f"{psql} >{out} 2>{err} </dev/null; echo $? >{status}")
    return "\n".join(lines) + "\n"


def test_every_command_of_the_readme_has_an_expectation() -> None:
    steps = walkthrough()
    keys = [step.key for step in steps]
    missing = [step.text for step in steps if step.key not in (SHELL if step.kind == "sh" else SQL)]
    assert missing == [], "README commands without an expectation in this test"
    unused = sorted(set(SHELL) - set(keys)) + sorted(set(SQL) - set(keys))
    assert unused == [], "expectations for commands no longer in the README"


def test_the_readme_walkthrough_works_verbatim(tmp_path: Path) -> None:
    steps = walkthrough()
    work = tmp_path / "steps"
    work.mkdir()
    data_home = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMINDERD_", "VIRTUAL_ENV"))}
    env.update(XDG_DATA_HOME=str(data_home), PATH=_path_without_the_venv(env.get("PATH", "")))
    try:
        result = subprocess.run(["bash", "-c", script(steps, work)], env=env, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr
        failures = []
        for number, step in enumerate(steps):
            out = (work / f"{number}.out").read_text(encoding="utf-8")
            err = (work / f"{number}.err").read_text(encoding="utf-8")
            status = int((work / f"{number}.status").read_text(encoding="utf-8"))
            expect = (SHELL if step.kind == "sh" else SQL)[step.key]
            if status != expect.status or not _matches(expect.out, out) or not _matches(expect.err, err):
                failures.append(f"{step.text}\n  status {status}, stdout {out!r}, stderr {err!r}")
        assert failures == [], "\n".join(failures)
    finally:
        subprocess.run([*_reminderd(), "dev-db", "delete"], env=env, capture_output=True, timeout=120)


def _matches(pattern: str | None, text: str) -> bool:
    return pattern is None or re.search(pattern, text, re.DOTALL if pattern.endswith("$") else 0) is not None


def _path_without_the_venv(path: str) -> str:
    """A newcomer's PATH: `reminderd` is not on it until `. .venv/bin/activate`."""
    venv_bin = str(ROOT / ".venv" / "bin")
    return os.pathsep.join(part for part in path.split(os.pathsep) if part != venv_bin)


def _reminderd() -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "python"), "-m", "reminderd.cli"]
