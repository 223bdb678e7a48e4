"""The per-patient eligibility report: one self-contained, printable HTML page.

`report_page(evaluation)` is a pure function from a `PatientEvaluation` to the page's text,
built from the same explanation as `--explain`, the DetectedIssue narrative and the CDS
cards (`engine.report.explanation`): the status, the as-of date and the newest data date
(with a warning when the data is older than the screening window), what a screening
coordinator must still do (the data to add, the questions to answer), then every criterion
with its protocol text, outcome and evidence. No script, no external asset: styles are
inline, and a print style sheet keeps each criterion on one page where it fits.
"""

from __future__ import annotations

import html

from engine import __version__
from engine.evaluate import CriterionVerdict, PatientEvaluation, SubjectStatus
from engine.report.explanation import (
    TRUTH_TEXT,
    CriterionExplanation,
    PatientExplanation,
    Step,
    explain,
    not_needed_text,
    stale_data_warning,
)

_STATUS_CLASS = {
    SubjectStatus.INELIGIBLE: "ineligible",
    SubjectStatus.POTENTIAL_CANDIDATE: "missing",
    SubjectStatus.CANDIDATE: "manual",
    SubjectStatus.ELIGIBLE: "eligible",
}
_VERDICT_CLASS = {
    CriterionVerdict.CLEAR: "clear",
    CriterionVerdict.FAILS: "fails",
    CriterionVerdict.MISSING_DATA: "missing",
    CriterionVerdict.MANUAL_REVIEW: "manual",
}
_STYLE = """
:root{--ink:#1d2430;--muted:#5b6575;--line:#d5dae1;--clear:#1e7a3c;--fails:#b3261e;
--missing:#9a6700;--manual:#2f5f9e;--eligible:#1e7a3c;--ineligible:#b3261e}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);margin:0 auto;max-width:1100px;padding:24px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:24px 0 8px;
border-bottom:2px solid var(--line);padding-bottom:4px}
.muted{color:var(--muted)}.small{font-size:12px}
.status{display:inline-block;padding:3px 10px;border-radius:12px;color:#fff;font-weight:600}
.status.ineligible{background:var(--ineligible)}.status.eligible{background:var(--eligible)}
.status.missing{background:var(--missing)}.status.manual{background:var(--manual)}
.facts{display:grid;grid-template-columns:max-content auto;gap:2px 16px;margin:12px 0}
.facts dt{color:var(--muted)}.facts dd{margin:0}
.warning{border-left:4px solid var(--missing);background:#fff7e0;padding:8px 12px;margin:12px 0}
ol.todo li{margin:4px 0}
table{border-collapse:collapse;width:100%}
th,td{border-top:1px solid var(--line);padding:8px 6px;vertical-align:top;text-align:left}
th{font-size:12px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
td.number{font-weight:700;white-space:nowrap}
.verdict{font-weight:700;white-space:nowrap}
.verdict.clear{color:var(--clear)}.verdict.fails{color:var(--fails)}
.verdict.missing{color:var(--missing)}.verdict.manual{color:var(--manual)}
.verdict.not-evaluated{color:var(--muted)}
.protocol{color:var(--muted);font-size:12px;margin-top:4px}
ul.tree{list-style:none;margin:6px 0 0;padding-left:0}
ul.tree ul{list-style:none;padding-left:14px;margin:2px 0}
.mark{display:inline-block;min-width:64px;margin-right:4px;font-size:10px;font-weight:700;
text-transform:uppercase}
.mark.yes,.mark.no,.mark.moot{color:var(--muted)}.mark.unknown{color:var(--missing)}
.finding{color:var(--ink)}.ref{color:var(--muted);font-size:11px;word-break:break-all}
.detail{color:var(--muted);font-size:12px;padding-left:68px}
ul.tree ul .detail{padding-left:68px}
col.number{width:4%}col.criterion{width:27%}col.outcome{width:12%}col.why{width:57%}
tr.criterion{page-break-inside:avoid;break-inside:avoid}
@media print{body{padding:0;font-size:11px;max-width:none}.status{border:1px solid #000;
color:#000;background:none!important}a{color:inherit;text-decoration:none}}
"""


def report_page(evaluation: PatientEvaluation) -> str:
    """The report page of one evaluation (a complete HTML document)."""
    return render_page(explain(evaluation), stale_data_warning(evaluation))


def render_page(explanation: PatientExplanation, warning: str | None = None) -> str:
    """The page of an explanation; `warning` is shown under the dates when given."""
    escape = html.escape
    status_class = _STATUS_CLASS[explanation.status]
    newest = explanation.newest_data.isoformat() if explanation.newest_data else "no dated data"
    counts = _counts(explanation)
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(explanation.trial_id)} eligibility: "
        f"{escape(explanation.patient_reference)}</title>"
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{escape(explanation.trial_id)}: {escape(explanation.trial_title)}</h1>",
        f'<p class="muted">Eligibility screening report for '
        f"<strong>{escape(explanation.patient_reference)}</strong></p>",
        f'<p><span class="status {status_class}">{escape(explanation.status.value)}</span> '
        f"{escape(explanation.status_text)}</p>",
        '<dl class="facts">'
        f"<dt>As of</dt><dd>{explanation.as_of.isoformat()}</dd>"
        f"<dt>Newest data in the record</dt><dd>{escape(newest)}</dd>"
        f"<dt>Criteria</dt><dd>{escape(counts)}</dd></dl>",
    ]
    if warning:
        parts.append(f'<p class="warning" role="note">{escape(warning)}</p>')
    parts.append(_open_items(explanation))
    parts.append(_criteria_table(explanation))
    if explanation.data_problems:
        items = "".join(f"<li>{escape(problem)}</li>" for problem in explanation.data_problems)
        parts.append(f"<h2>Data problems in the record</h2><ul>{items}</ul>")
    parts.append(
        f'<p class="muted small">Generated by trialsieve {escape(__version__)} from the '
        f"patient's FHIR record as of {explanation.as_of.isoformat()}. A criterion is "
        "<em>clear</em> when it does not stand in the way: an inclusion met, an exclusion "
        "not present.</p></body></html>\n"
    )
    return "".join(parts)


def _counts(explanation: PatientExplanation) -> str:
    words = (
        (CriterionVerdict.CLEAR, "clear"),
        (CriterionVerdict.FAILS, "failing"),
        (CriterionVerdict.MISSING_DATA, "missing data"),
        (CriterionVerdict.MANUAL_REVIEW, "manual review"),
    )
    shown = [
        f"{len(explanation.with_verdict(verdict))} {word}"
        for verdict, word in words
        if explanation.with_verdict(verdict)
    ]
    skipped = sum(1 for c in explanation.criteria if c.verdict is None)
    if skipped:
        shown.append(f"{skipped} not evaluated")
    return ", ".join(shown)


def _open_items(explanation: PatientExplanation) -> str:
    escape = html.escape
    failing = explanation.with_verdict(CriterionVerdict.FAILS)
    sections = []
    if failing:
        items = "".join(
            f"<li><strong>{escape(c.number)} {escape(c.label)}</strong>: {escape(c.summary)}</li>"
            for c in failing
        )
        sections.append(f"<h2>What excludes the patient</h2><ol class='todo'>{items}</ol>")
    missing = explanation.missing_data
    if missing:
        items = "".join(
            f"<li><strong>{escape(c.number)}</strong> {escape(item)}</li>" for c, item in missing
        )
        sections.append(f"<h2>Data to add</h2><ol class='todo'>{items}</ol>")
    questions = explanation.open_questions
    if questions:
        items = "".join(
            f"<li><strong>{escape(c.number)}</strong> {escape(question)}</li>"
            for c, question in questions
        )
        sections.append(
            f"<h2>Open questions for the investigator</h2><ol class='todo'>{items}</ol>"
        )
    return "".join(sections)


def _criteria_table(explanation: PatientExplanation) -> str:
    rows = "".join(_criterion_row(criterion) for criterion in explanation.criteria)
    return (
        "<h2>Every criterion</h2><table><colgroup><col class='number'><col class='criterion'>"
        "<col class='outcome'><col class='why'></colgroup><thead><tr><th>#</th><th>Criterion</th>"
        f"<th>Outcome</th><th>Why</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _criterion_row(criterion: CriterionExplanation) -> str:
    escape = html.escape
    verdict_class = (
        _VERDICT_CLASS[criterion.verdict] if criterion.verdict is not None else "not-evaluated"
    )
    why = (
        f"<ul class='tree'>{_step_item(criterion.step)}</ul>"
        if criterion.step is not None
        else f"<p>{escape(criterion.summary)}</p>"
    )
    return (
        f'<tr class="criterion" id="{escape(criterion.id)}">'
        f'<td class="number">{escape(criterion.number)}</td>'
        f"<td><strong>{escape(criterion.label)}</strong>"
        f'<div class="protocol">{escape(criterion.kind.value.capitalize())}: '
        f"{escape(criterion.protocol_text)}</div></td>"
        f'<td class="verdict {verdict_class}">{escape(criterion.outcome_text)}</td>'
        f"<td>{why}</td></tr>"
    )


def _step_item(step: Step) -> str:
    escape = html.escape
    if not step.needed:
        mark = "not applicable" if step.moot else "not needed"
        return f"<li><span class='mark moot'>{mark}</span>{escape(not_needed_text(step))}</li>"
    mark = TRUTH_TEXT[step.truth]
    if step.children:
        title = step.label or {"all of": "All of", "any of": "Any of", "not": "Not"}.get(
            step.combination, ""
        )
        combination = (
            f" <span class='muted small'>({step.combination})</span>" if step.label else ""
        )
        children = "".join(_step_item(child) for child in step.children)
        return (
            f"<li><span class='mark {mark}'>{mark}</span>{escape(title)}{combination}"
            f"<ul>{children}</ul></li>"
        )
    if step.findings:
        head = escape(step.label) + (f": {escape(step.relation)}" if step.relation else "")
    else:
        head = escape(f"{step.label}: {step.says}" if step.label else step.says)
    details = []
    for finding in step.findings:
        reference = (
            f" <span class='ref'>{escape(finding.reference)}</span>"
            if finding.text != finding.reference
            else ""
        )
        details.append(f"<div class='detail finding'>{escape(finding.text)}{reference}</div>")
    if step.looked_for and (not step.findings or step.truth.value == "unknown"):
        details.append(f"<div class='detail'>Looked for: {escape(step.looked_for)}</div>")
    details.extend(f"<div class='detail'>{escape(item)}</div>" for item in step.filters)
    if not step.question:
        details.extend(
            f"<div class='detail'>To settle: {escape(item)}</div>" for item in step.to_settle
        )
    return f"<li><span class='mark {mark}'>{mark}</span>{head}{''.join(details)}</li>"
