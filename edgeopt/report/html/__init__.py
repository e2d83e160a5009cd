"""One self-contained HTML page from a convert or profile report (``page``), built from ``blocks`` by the
section modules."""

from edgeopt.report.html.constants import CONVERT_SCHEMA_VERSION, GATE_STATUSES, PROFILE_SCHEMA_VERSION, REPORT_KINDS
from edgeopt.report.html.page import read_gate_json, read_report_json, read_tune_json, render_html

__all__ = ["CONVERT_SCHEMA_VERSION", "GATE_STATUSES", "PROFILE_SCHEMA_VERSION", "REPORT_KINDS", "read_gate_json",
           "read_report_json", "read_tune_json", "render_html"]
