"""Reading the guest's frames into per-image and per-command results, and printing them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from pipeline.smoke.plan import ImageReport, Outcome
from pipeline.vm.qemu import BootResult


@dataclass
class Boot:
    """One VM boot: the images of one arch."""

    arch: str
    accel: str
    seconds: float
    timed_out: bool
    stopped_at: str
    merge_output: str = ""
    sysext_status: str = ""
    first_boot_died: str = ""  # why a first boot was discarded before its script started


@dataclass
class SmokeReport:
    os: str
    passed: bool
    images: list[ImageReport]
    boots: list[Boot] = field(default_factory=list)
    error: str = ""  # why no VM could be booted (a download, a missing tool...)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


# Lines of systemd-sysext's debug log that say why it refused an image, most telling first.
REFUSAL_LINES = (
    "is for architecture",
    "is for OS",
    "carries no extension-release",
    "does not match image policy",
    "signature",
    "Failed to read metadata for image",
)


def refusal_reason(log: str, name: str) -> str:
    """': <why>' from systemd's debug log of a refused image, or '' when it said nothing."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for needle in REFUSAL_LINES:
        line = next((ln for ln in lines if needle in ln), None)
        if line is None:
            continue
        if needle == "Failed to read metadata for image":
            # systemd's words when the image lacks an extension-release file for its name.
            return (
                f": no usr/lib/extension-release.d/extension-release.{name} in the image "
                f"(systemd: {line})"
            )
        return f": {line}"
    return ": " + " | ".join(lines[-6:]) if lines else ""


def apply_frames(reports: list[ImageReport], frames: list[dict[str, object]]) -> tuple[str, str]:
    """Fill `reports` from the guest's frames; returns (merge output, sysext status)."""
    by_name = {r.name: r for r in reports if not r.reason}
    merge_output, status = "", ""
    for frame in frames:
        event = frame.get("event")
        report = by_name.get(str(frame.get("image", "")))
        if event == "merge":
            merge_output += (
                f"[{frame.get('phase')}: exit {frame.get('exit')}]\n{frame.get('output', '')}"
            )
        elif event == "status":
            status = str(frame.get("output", ""))
        elif event == "image" and report is not None:
            report.merged = frame.get("merged") is True
            if not report.merged:
                report.reason = "not merged by systemd-sysext" + refusal_reason(
                    str(frame.get("reason", "")), report.name
                )
        elif event == "step" and report is not None:
            index = frame.get("index")
            if not isinstance(index, int) or not 0 <= index < len(report.steps):
                continue
            step = report.steps[index]
            code = frame.get("exit")
            step.exit = code if isinstance(code, int) else None
            ms = frame.get("ms")
            step.seconds = round(ms / 1000, 2) if isinstance(ms, int) else None
            step.output = str(frame.get("output", ""))
            if step.exit != 0:
                step.status = Outcome.FAILED
                step.reason = "timed out" if step.exit in (124, 137) else f"exit {step.exit}"
                last = [ln for ln in step.output.splitlines() if ln.strip()]
                if last:
                    step.reason += f": {_clip(last[-1].strip())}"
            elif step.expect and step.expect not in step.output:
                step.status, step.reason = Outcome.FAILED, f"output lacks {step.expect!r}"
            else:
                step.status = Outcome.PASSED
    return merge_output, status


def finish(reports: list[ImageReport], result: BootResult) -> None:
    """Final per-image status; steps that never reported say why."""
    done = any(f.get("event") == "done" for f in result.frames)
    for report in reports:
        for step in report.steps:
            if step.status == Outcome.NOT_RUN and report.merged and not step.reason:
                step.reason = (
                    "VM killed at the timeout" if result.timed_out else "no result from the guest"
                ) + f" ({result.stopped_at})"
        if report.reason:
            report.status = Outcome.FAILED
        elif not report.merged:
            report.status = Outcome.FAILED
            report.reason = "no merge result from the guest" + (
                "" if done else f" ({result.stopped_at or 'VM stopped'})"
            )
        else:
            failed = [s for s in report.steps if s.status != Outcome.PASSED]
            report.status = Outcome.FAILED if failed else Outcome.PASSED
            if failed:
                report.reason = f"{len(failed)} of {len(report.steps)} smoke steps failed"


def _excerpt(text: str, limit: int = 60) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def render(report: SmokeReport) -> str:
    out = [
        f"smoke test on {report.os} {b.arch} ({b.accel}, {b.seconds:.1f}s)"
        + (f": TIMED OUT {b.stopped_at}" if b.timed_out else "")
        + (
            f" (booted twice: the first guest died before its script, {b.first_boot_died})"
            if b.first_boot_died
            else ""
        )
        for b in report.boots
    ]
    for r in report.images:
        out.append(
            f"{'PASS' if r.status == 'passed' else 'FAIL'}  {r.image}  "
            f"merged: {'yes' if r.merged else 'no'}" + (f"  ({r.reason})" if r.reason else "")
        )
        for s in r.steps:
            took = f"{s.seconds:.1f}s" if s.seconds is not None else "-"
            code = "-" if s.exit is None else str(s.exit)
            detail = s.reason if s.status != "passed" else _excerpt(s.output)
            out.append(
                f"      {s.status:<7} exit {code:<3} {took:>7}  {s.command}"
                + (f"  → {detail}" if detail else "")
            )
    passed = sum(r.status == "passed" for r in report.images)
    out.append(f"{passed}/{len(report.images)} images passed")
    return "\n".join(out) + "\n"


def _clip(line: str, limit: int = 240) -> str:
    """A long last line kept to `limit`: its start and its end, where tools put the cause."""
    return line if len(line) <= limit else f"{line[:80]} … {line[-(limit - 83) :]}"
