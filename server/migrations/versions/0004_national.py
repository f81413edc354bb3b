"""national terminals: the gateway's registered JT/T 808 terminals and their stored training envelopes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "national_terminals",
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("phone", sa.String(length=16), nullable=False),
        sa.Column("certificate", sa.Text(), nullable=True),
        sa.Column("key_origin", sa.String(length=16), nullable=False),
        sa.Column("last_auth_timestamp", sa.Integer(), nullable=True),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name=op.f("fk_national_terminals_terminal_id_terminals")
        ),
        sa.PrimaryKeyConstraint("terminal_id", name=op.f("pk_national_terminals")),
        sa.UniqueConstraint("phone", name=op.f("uq_national_terminals_phone")),
    )
    op.create_table(
        "national_envelopes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("raw_record_id", sa.Integer(), nullable=False),
        sa.Column("msg_id", sa.Integer(), nullable=False),
        sa.Column("counter", sa.Integer(), nullable=False),
        sa.Column("backfill", sa.Boolean(), nullable=False),
        sa.Column("record_no", sa.String(length=26), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name=op.f("fk_national_envelopes_terminal_id_terminals")
        ),
        sa.ForeignKeyConstraint(
            ["raw_record_id"], ["raw_records.id"], name=op.f("fk_national_envelopes_raw_record_id_raw_records")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_national_envelopes")),
        sa.UniqueConstraint("terminal_id", "sha256", name="uq_national_envelopes_terminal_sha256"),
    )
    with op.batch_alter_table("national_envelopes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_national_envelopes_raw_record_id"), ["raw_record_id"], unique=False)


def downgrade() -> None:
    op.drop_table("national_envelopes")
    op.drop_table("national_terminals")
