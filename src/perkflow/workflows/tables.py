"""Tables for workflows, their versions, their runs, date-trigger occurrences and campaign budgets."""

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from perkflow.core.schema import JsonDocument, UTCDateTime, metadata

BigId = BigInteger().with_variant(Integer, "sqlite")

workflows = Table(
    "workflows",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("kind", String(16), nullable=False),  # general | campaign
    Column("status", String(16), nullable=False),  # inactive | active | archived
    Column("program_id", String(64), ForeignKey("programs.id", ondelete="SET NULL"), nullable=True),
    Column("latest_version", Integer, nullable=False),
    # The version new runs use; None until the workflow is first activated.
    Column("active_version", Integer, nullable=True),
    Column("starts_at", UTCDateTime, nullable=True),  # campaigns only
    Column("ends_at", UTCDateTime, nullable=True),
    Column("bonus_cap", Integer, nullable=True),  # campaigns: most bonus points one member can get
    Column("template", String(64), nullable=True),  # the template it was installed from
    # Workflows on the same trigger run in ascending priority, then by id.
    Column("priority", Integer, nullable=False, server_default="0"),
    # When it was last activated: date triggers catch up on occurrences after this moment only.
    Column("activated_at", UTCDateTime, nullable=True),
    # Which runs are stored: "acted" (those that did something; a run that ends at a failed filter is
    # not, so a workflow listening to a busy event does not write a row per event it ignores) or "all".
    Column("run_log", String(16), nullable=False, server_default="acted"),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

workflow_versions = Table(
    "workflow_versions",
    metadata,
    Column("workflow_id", String(64), ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("graph", JsonDocument, nullable=False),
    Column("trigger_type", String(32), nullable=False),  # event | date | segment_entered | segment_left
    Column("trigger_key", String(255), nullable=True),  # activity type, segment id
    Column("created_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("workflow_id", "version"),
)

workflow_runs = Table(
    "workflow_runs",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("workflow_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("trigger", JsonDocument, nullable=False),  # what started it: activity, date occurrence, segment
    # completed | filtered | failed | waiting | interrupted | cancelled
    Column("status", String(16), nullable=False),
    Column("path", JsonDocument, nullable=False),  # node ids in the order they ran
    Column("results", JsonDocument, nullable=False),  # per action node: its result or error
    Column("context", JsonDocument, nullable=False),  # what a resumed run needs: event, reward, coupon
    Column("resume_at", UTCDateTime, nullable=True),  # waiting runs: when to continue
    Column("resume_node", String(64), nullable=True),
    Column("claimed_by", String(64), nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_workflow_runs_workflow_id_id", "workflow_id", "id"),
    Index("ix_workflow_runs_member_id_id", "member_id", "id"),
    # Only waiting runs are looked up by resume time; the partial index costs nothing for the others.
    Index(
        "ix_workflow_runs_waiting",
        "resume_at",
        sqlite_where=text("status = 'waiting'"),
        postgresql_where=text("status = 'waiting'"),
    ),
)

# One row per date-trigger occurrence: the primary key is what makes an occurrence run only once,
# however many schedulers race for it.
workflow_occurrences = Table(
    "workflow_occurrences",
    metadata,
    Column("workflow_id", String(64), ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    Column("occurs_at", UTCDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    Column("status", String(16), nullable=False),  # running | done
    Column("members_done", Integer, nullable=False),
    Column("last_member", String(128), nullable=True),  # resume point if a scheduler died mid-way
    Column("claimed_by", String(64), nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    PrimaryKeyConstraint("workflow_id", "occurs_at"),
)

campaign_budgets = Table(
    "campaign_budgets",
    metadata,
    Column("workflow_id", String(64), ForeignKey("workflows.id", ondelete="CASCADE"), nullable=False),
    Column("member_id", String(128), nullable=False),
    Column("bonus_points", Integer, nullable=False),
    UniqueConstraint("workflow_id", "member_id"),
)
