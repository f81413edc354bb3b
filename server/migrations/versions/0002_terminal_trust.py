"""terminal trust: enrolment tokens, certificates, key history, revocation, closed chains

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 14:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revoke_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("chains", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed_after_seq", sa.Integer(), nullable=True))

    op.create_table(
        "terminal_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("key_id", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("from_chain", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("vouch", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["terminal_id"], ["terminals.id"], name=op.f("fk_terminal_keys_terminal_id_terminals")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terminal_keys")),
        sa.UniqueConstraint("terminal_id", "key_id", name="uq_terminal_keys_terminal_key"),
    )
    with op.batch_alter_table("terminal_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminal_keys_terminal_id"), ["terminal_id"], unique=False)
    # Terminals registered before this revision: their one key signs from chain 1.
    op.execute(
        "INSERT INTO terminal_keys (terminal_id, key_id, public_key, from_chain, added_at)"
        " SELECT id, key_id, public_key, 1, registered_at FROM terminals"
    )

    op.create_table(
        "terminal_certificates",
        sa.Column("serial", sa.String(length=40), nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["terminal_id"], ["terminals.id"], name=op.f("fk_terminal_certificates_terminal_id_terminals")
        ),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_terminal_certificates")),
    )
    with op.batch_alter_table("terminal_certificates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_terminal_certificates_terminal_id"), ["terminal_id"], unique=False)

    op.create_table(
        "enrolment_tokens",
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("terminal_id", sa.String(length=16), nullable=False),
        sa.Column("car_plate", sa.String(length=32), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("used_key_id", sa.String(length=16), nullable=True),
        sa.Column("certificate_serial", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_enrolment_tokens_school_id_schools")),
        sa.PrimaryKeyConstraint("token_sha256", name=op.f("pk_enrolment_tokens")),
    )
    with op.batch_alter_table("enrolment_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrolment_tokens_terminal_id"), ["terminal_id"], unique=False)


def downgrade() -> None:
    op.drop_table("enrolment_tokens")
    op.drop_table("terminal_certificates")
    op.drop_table("terminal_keys")
    with op.batch_alter_table("chains", schema=None) as batch_op:
        batch_op.drop_column("closed_after_seq")
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.drop_column("revoke_reason")
        batch_op.drop_column("revoked_at")
