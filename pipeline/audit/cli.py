"""`audit`: the advisory gate over built images."""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from pipeline.audit import online, waivers
from pipeline.audit.audit import Finding, database, failing, findings, read_sboms
from pipeline.core import log, options
from pipeline.core.osv import Severity
from pipeline.core.resources import advisories_dir

THRESHOLDS = [str(s) for s in Severity if s is not Severity.UNKNOWN]


def feed(args: argparse.Namespace) -> Path:
    return args.advisories if args.advisories is not None else advisories_dir()


def _status(f: Finding, bad: list[Finding]) -> str:
    if f in bad:
        return f"FAIL (waiver expired {f.waiver.expires})" if f.waiver else "FAIL"
    if f.waiver:
        return f"waived until {f.waiver.expires}: {f.waiver.reason}"
    return "below threshold"


def cmd_audit(args: argparse.Namespace) -> int:
    images = read_sboms(args.directories)
    advisory_feed = feed(args)
    accepted = waivers.load(advisory_feed / "waivers.yaml")
    verdicts = (
        online.query([p for i in images for p in i.packages], args.osv_api) if args.online else {}
    )
    db = database(images, advisory_feed, args.db, verdicts)
    found = findings(images, db, accepted, verdicts)
    today = datetime.datetime.now(datetime.UTC).date()
    bad, expired = failing(found, accepted, Severity(args.fail_on), today)
    if args.json:
        print(
            json.dumps(
                {
                    "images": [i.image for i in images],
                    "fail_on": args.fail_on,
                    "findings": [f.to_json() | {"fails": f in bad} for f in found],
                    "expired_waivers": [
                        {"where": w.where, "id": list(w.ids), "expires": w.expires.isoformat()}
                        for w in expired
                    ],
                    "passed": not bad and not expired,
                },
                indent=2,
            )
        )
    else:
        rows = [("IMAGE", "ADVISORY", "PACKAGE", "FIXED IN", "SEVERITY", "STATUS")]
        rows += [
            (
                f.image,
                " ".join(f.ids),
                f"{f.package.name.rsplit('/', 1)[-1]}@{f.package.version}",
                ", ".join(f.advisory.fixed_in(f.package)) or "-",
                str(f.advisory.severity),
                _status(f, bad),
            )
            for f in found
        ]
        if found:
            print(log.table(rows), end="")
        waived = sum(1 for f in found if f.waiver and f not in bad)
        print(
            f"{len(images)} image(s), {db.records} record(s) read, {len(found)} finding(s): "
            f"{len(bad)} at or above {args.fail_on} unwaived, {waived} waived"
        )
    for w in expired:
        print(
            f"{w.where}: waiver for {', '.join(w.ids)} expired on {w.expires}: fix, or decide "
            "again",
            file=sys.stderr,
        )
    return 1 if bad or expired else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="match images' SBOMs against OSV advisories (exit 1 on an unwaived finding)",
        description="Read each image's SPDX SBOM (the runtime, every embedded engine and "
        "module, by purl) and match it against OSV advisories: the project's feed "
        "(advisories/), each --db, and with --online osv.dev. Waivers come from "
        "advisories/waivers.yaml; an expired waiver fails the audit.",
    )
    p.add_argument(
        "directories",
        nargs="*",
        type=Path,
        default=[Path("out")],
        metavar="DIR",
        help="directories of built images and their SBOMs (default: out)",
    )
    options.add_advisories(p)
    p.add_argument("--online", action="store_true", help="also ask osv.dev (the release gate)")
    p.add_argument("--osv-api", default=online.OSV_API, metavar="URL", help=argparse.SUPPRESS)
    p.add_argument(
        "--fail-on",
        choices=THRESHOLDS,
        default=str(Severity.MEDIUM),
        help="lowest severity that fails the audit (default: %(default)s; a record without "
        "a severity always counts)",
    )
    options.add_output(p)
    p.set_defaults(func=cmd_audit)
