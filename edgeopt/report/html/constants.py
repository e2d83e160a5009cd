"""The report documents' versions and fixed sizes the page is drawn with."""

from edgeopt.report.schema import READABLE_VERSIONS, SCHEMA_VERSION

# The versions of the documents this renderer reads. The profile report's schema lives in
# edgeopt.commands.profile (a higher layer, not imported here); a test keeps the two in step.
CONVERT_SCHEMA_VERSION = SCHEMA_VERSION
PROFILE_SCHEMA_VERSION = 1
REPORT_KINDS = {"convert": READABLE_VERSIONS, "profile": (PROFILE_SCHEMA_VERSION,)}  # versions read
GATE_STATUSES = ("pass", "fail", "error", "skip")
TOP_NODES = 10
