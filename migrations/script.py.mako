<%!
    import re
%>\
<% name = up_revision + "_" + "_".join(re.findall(r"\w+", message or "")).lower() %>\
"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from __future__ import annotations

from reminderd.migrations import run_sql_file

revision = "${up_revision}"
down_revision = ${f'"{down_revision}"' if down_revision else None}
branch_labels = None
depends_on = None


def upgrade() -> None:
    # migrations/sql/${name}.sql;
    # make the same change in reminderd/sql/schema.sql (docs/sql.md, "Where the schema lives").
    run_sql_file("${name}")


def downgrade() -> None:
    raise NotImplementedError("${up_revision} is forward-only: restore from a backup to go back")
