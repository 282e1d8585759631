#!/usr/bin/python3
"""Reads stallprobe's exports with the parsers their consumers use and prints what they saw as
JSON, for tests/exports.rs to assert on. Run with Debian's /usr/bin/python3, which has the
Debian package python3-junitparser (`cargo xtask setup` installs it).

  check_exports.py junit FILE   parse with junitparser (and xml.etree), recount the statistics
  check_exports.py svg FILE     parse as XML, list the frame titles
"""

import json
import sys
import xml.etree.ElementTree as ET


def junit(path):
    from junitparser import Error, Failure, JUnitXml, Skipped

    # Well-formed XML first (junitparser may sit on lxml or ElementTree).
    root = ET.parse(path).getroot()
    xml = JUnitXml.fromfile(path)
    suites = []
    for suite in xml:
        declared = {
            "tests": suite.tests,
            "failures": suite.failures,
            "errors": suite.errors,
            "skipped": suite.skipped,
        }
        cases = []
        for case in suite:
            results = case.result
            if not isinstance(results, list):  # junitparser 1.x: one result or None
                results = [results] if results is not None else []
            cases.append(
                {
                    "classname": case.classname,
                    "name": case.name,
                    "time": case.time,
                    "results": [
                        {
                            "kind": (
                                "failure"
                                if isinstance(r, Failure)
                                else "error"
                                if isinstance(r, Error)
                                else "skipped"
                                if isinstance(r, Skipped)
                                else type(r).__name__
                            ),
                            "type": r.type,
                            "message": r.message,
                            "text": r.text,
                        }
                        for r in results
                    ],
                }
            )
        # Recount from the test cases: the declared numbers must agree.
        suite.update_statistics()
        counted = {
            "tests": suite.tests,
            "failures": suite.failures,
            "errors": suite.errors,
            "skipped": suite.skipped,
        }
        suites.append(
            {
                "name": suite.name,
                "declared": declared,
                "counted": counted,
                "properties": {p.name: p.value for p in suite.properties()},
                "cases": cases,
            }
        )
    return {"root": root.tag, "suites": suites}


def svg(path):
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    return {
        "root": root.tag,
        "titles": [t.text or "" for t in root.iter(ns + "title")],
        "texts": ["".join(t.itertext()) for t in root.iter(ns + "text")],
    }


def main():
    kind, path = sys.argv[1], sys.argv[2]
    out = {"junit": junit, "svg": svg}[kind](path)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
