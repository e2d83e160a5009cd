"""The page's inline stylesheet (no external resources: the Content-Security-Policy forbids them)."""

CSS = """
:root{--fg:#1f2430;--muted:#667085;--line:#e4e7ec;--bg:#f6f7f9;--card:#fff;--accent:#2f6fde;
--ok:#127a3e;--ok-bg:#e3f5ea;--bad:#b42318;--bad-bg:#fde8e6;--warn:#8a5a00;--warn-bg:#fff3d6;
--est:#2f6fde;--meas:#e07b24;--weights:#5b6ee1;--act:#4fb3bf;--float:#98a2b3;--int8:#2f6fde}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 28px 40px}
header{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:18px 22px;margin-bottom:14px}
.kicker{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.06em}
h1{margin:2px 0 10px;font-size:24px;overflow-wrap:anywhere}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:12px;margin:0 0 6px;color:var(--muted);text-transform:uppercase;letter-spacing:.05em}
.groups{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:12px 28px}
dl.facts{margin:0;display:grid;grid-template-columns:max-content 1fr;gap:2px 12px}
dl.facts div{display:contents}
dt{color:var(--muted)}
dd{margin:0;overflow-wrap:anywhere}
code{font:12.5px/1.3 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f1f3f6;padding:1px 4px;
border-radius:4px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px;margin-bottom:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:10px 14px}
.card .label{color:var(--muted);font-size:12px}
.card .value{font-size:20px;font-weight:600;font-variant-numeric:tabular-nums}
.card .sub{color:var(--muted);font-size:12px;overflow-wrap:anywhere}
nav{display:flex;flex-wrap:wrap;gap:6px;margin:0 0 14px}
nav a{color:var(--accent);text-decoration:none;background:var(--card);border:1px solid var(--line);
border-radius:999px;padding:3px 12px;font-size:13px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 20px;margin-bottom:14px}
section.warnings{border-color:#f3d48a;background:#fffbf0}
.table-wrap{overflow-x:auto;margin:0 0 12px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:10px 0 6px}
th{text-align:left;font-size:12px;color:var(--muted);font-weight:600;border-bottom:1px solid var(--line);
padding:6px 7px;white-space:nowrap}
td{padding:6px 7px;border-bottom:1px solid #f0f2f5;vertical-align:top}
th.num,td.num{text-align:right;white-space:nowrap}
td.wrap{word-break:break-word;min-width:140px}
td.span{padding-top:0}
tr.row-ref td{color:var(--muted)}
tr.row-chosen td{background:#eef4ff}
tr.row-bad td{background:var(--bad-bg)}
tr.row-total td{border-top:1px solid var(--line);font-weight:600}
tr.row-notes td{border-bottom:1px solid var(--line)}
.sub-notes{color:var(--muted);font-size:12.5px;padding-left:10px;border-left:2px solid var(--line)}
.badge{display:inline-block;font-size:12px;font-weight:600;padding:1px 8px;border-radius:999px;white-space:nowrap}
.badge.ok{color:var(--ok);background:var(--ok-bg)}
.badge.bad{color:var(--bad);background:var(--bad-bg)}
.badge.warn{color:var(--warn);background:var(--warn-bg)}
.badge.muted{color:var(--muted);background:#eef0f3}
.muted{color:var(--muted)}
.small{font-size:12px}
.error{color:var(--bad)}
.warn-text{color:var(--warn);font-size:12.5px}
p.verdict{margin:0 0 10px}
.reason{color:var(--fg)}
ul.notes{margin:6px 0 0;padding-left:18px}
ul.notes.warn li{color:var(--warn)}
figure.chart{margin:6px 0 16px;overflow-x:auto}
figure.chart svg{max-width:100%;height:auto}
figcaption{font-weight:600;margin-bottom:4px}
svg text{font:12px system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;fill:var(--fg)}
svg text.value{font-variant-numeric:tabular-nums}
svg text.note,svg text.legend{fill:var(--muted)}
svg line.axis{stroke:#c9ced6}
svg .c-est{fill:var(--est)} svg .c-meas{fill:var(--meas)} svg .c-weights{fill:var(--weights)}
svg .c-act{fill:var(--act)} svg .c-float{fill:var(--float)} svg .c-int8{fill:var(--int8)}
svg .point.front,svg .point.feasible{fill:var(--int8)} svg .point.infeasible{fill:#fff;stroke:var(--bad);stroke-width:1.5}
svg .point.front{stroke:#1b2430;stroke-width:1} svg polyline.front{fill:none;stroke:var(--int8);stroke-width:1.5}
svg circle.winner{fill:none;stroke:#1b2430;stroke-width:2}
tr.highlight td{background:#eef6ee}
.pair{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,600px);gap:24px;align-items:start}
footer{color:var(--fg);font-size:12.5px;padding:8px 4px;display:grid;gap:4px;word-break:break-word}
@media (max-width:900px){.pair{grid-template-columns:1fr}}
@media print{body{background:#fff}section,header,.card{break-inside:avoid}}
"""
