"""phash: the perceptual hash of each checked photo's frame (biometrics.phash), for reused-photo findings

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("face_verdicts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phash", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("face_verdicts", schema=None) as batch_op:
        batch_op.drop_column("phash")
