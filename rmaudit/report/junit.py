"""``junit.xml``: one testcase per probe, for CI systems that display test results.

Mapping: ``pass`` -> passed; ``warn`` -> passed with the summary in ``system-out``, or
``<failure>`` when the gate runs with ``fail_on=warn`` (so the JUnit view agrees with the
exit code); ``fail`` -> ``<failure>``; ``error`` -> ``<error>``; ``skip`` -> ``<skipped>``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from rmaudit.atomic import atomic_write_text
from rmaudit.report.json_report import normalized
from rmaudit.report.formatting import checkpoint_name, format_value, reason_text
from rmaudit.results import AuditResult, ProbeResult, Status

# Characters XML 1.0 forbids even when escaped; dataset text can contain them.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: object) -> str:
    return _XML_INVALID.sub("\ufffd", str(text))


def _details(probe: ProbeResult) -> str:
    """Summary, every finding with its number and limit, then metrics and settings."""
    lines = [probe.summary, ""]
    lines += [f"[{f.status.value}] {f.message}" + (f" ({f.crossed})" if f.crossed else "") for f in probe.findings]
    lines += [""] + [f"{k} = {format_value(v)}" for k, v in probe.metrics.items()]
    lines += [f"setting {k} = {format_value(v)}" for k, v in probe.settings.items()]
    return "\n".join(lines)


def _failing(result: AuditResult, probe: ProbeResult) -> bool:
    return probe.status is Status.FAIL or (probe.status is Status.WARN and result.fail_on is Status.WARN)


def _testcase(result: AuditResult, probe: ProbeResult, classname: str) -> ET.Element:
    case = ET.Element("testcase", name=_xml_text(probe.name), classname=classname, time=f"{probe.seconds:.3f}")
    summary = _xml_text(reason_text(probe))
    if probe.status is Status.ERROR:
        ET.SubElement(case, "error", message=summary, type="ProbeError").text = _xml_text(_details(probe))
    elif _failing(result, probe):
        kind = "ProbeFailed" if probe.status is Status.FAIL else "ProbeWarning"
        ET.SubElement(case, "failure", message=summary, type=kind).text = _xml_text(_details(probe))
    elif probe.status is Status.SKIP:
        ET.SubElement(case, "skipped", message=summary)
    else:
        ET.SubElement(case, "system-out").text = _xml_text(f"{probe.status.value.upper()}: {_details(probe)}")
    return case


def junit_xml(result: AuditResult) -> str:
    """The JUnit XML document for ``result`` (a ``<testsuites>`` with one ``<testsuite>``)."""
    result = normalized(result)
    classname = _xml_text(f"rmaudit.{checkpoint_name(result.checkpoint)}")
    cases = [_testcase(result, p, classname) for p in result.probes]
    counts = {
        "failures": sum(c.find("failure") is not None for c in cases),
        "errors": sum(c.find("error") is not None for c in cases),
        "skipped": sum(c.find("skipped") is not None for c in cases),
    }
    total_time = f"{sum(p.seconds for p in result.probes):.3f}"
    attrs = {"tests": str(len(cases)), **{k: str(v) for k, v in counts.items()}, "time": total_time}
    root = ET.Element("testsuites", name="rmaudit", **attrs)
    suite = ET.SubElement(root, "testsuite", name=_xml_text(f"rmaudit {result.checkpoint}"), **attrs)
    if result.created_at:
        suite.set("timestamp", _xml_text(result.created_at))
    props = ET.SubElement(suite, "properties")
    for name, value in (("checkpoint", result.checkpoint), ("gate", result.gate),
                        ("fail_on", result.fail_on.value), ("rmaudit_version", result.rmaudit_version)):
        ET.SubElement(props, "property", name=name, value=_xml_text(value))
    suite.extend(cases)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(result: AuditResult, path: Path) -> Path:
    """Write ``junit.xml`` atomically. Returns ``path``."""
    return atomic_write_text(Path(path), junit_xml(result))
