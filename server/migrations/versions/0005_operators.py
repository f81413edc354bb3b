"""operators: accounts with roles for the operator API and dashboard, and enrolment photos

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "operator_accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("school_id", sa.String(length=16), nullable=True),
        sa.Column("student_id", sa.String(length=16), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["school_id"], ["schools.id"], name=op.f("fk_operator_accounts_school_id_schools")),
        sa.ForeignKeyConstraint(["student_id"], ["students.id"],
                                name=op.f("fk_operator_accounts_student_id_students")),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_accounts")),
        sa.UniqueConstraint("username", name=op.f("uq_operator_accounts_username")),
    )
    with op.batch_alter_table("operator_accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_operator_accounts_school_id"), ["school_id"], unique=False)
    op.create_table(
        "enrolment_photos",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("person_kind", sa.String(length=8), nullable=False),
        sa.Column("person_id", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_type", sa.String(length=32), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("face_box", sa.JSON(), nullable=False),
        sa.Column("consent", sa.Boolean(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enrolment_photos")),
    )
    with op.batch_alter_table("enrolment_photos", schema=None) as batch_op:
        batch_op.create_index("ix_enrolment_photos_person", ["person_kind", "person_id"], unique=False)


def downgrade() -> None:
    op.drop_table("enrolment_photos")
    op.drop_table("operator_accounts")
