"""The report documents' versions and fixed sizes the page is drawn with."""

from edgeopt.report.profile_schema import PROFILE_SCHEMA_VERSION
from edgeopt.report.schema import READABLE_VERSIONS, SCHEMA_VERSION

CONVERT_SCHEMA_VERSION = SCHEMA_VERSION
REPORT_KINDS = {"convert": READABLE_VERSIONS, "profile": (PROFILE_SCHEMA_VERSION,)}  # versions read
GATE_STATUSES = ("pass", "fail", "error", "skip")
TOP_NODES = 10
