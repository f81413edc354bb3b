"""terminal_vin: the VIN of the car a terminal is bound to, and the VIN an enrolment token names (server.car_binding)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vin", sa.String(length=17), nullable=True))
    with op.batch_alter_table("enrolment_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("vin", sa.String(length=17), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("enrolment_tokens", schema=None) as batch_op:
        batch_op.drop_column("vin")
    with op.batch_alter_table("terminals", schema=None) as batch_op:
        batch_op.drop_column("vin")
