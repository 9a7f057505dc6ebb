"""Prints what a schemathesis run sent, per operation: requests and the statuses they got.

Usage: python3 summary.py RUN.ndjson   (schemathesis --report ndjson)
"""

import collections
import json
import sys


def main(path):
    requests = collections.Counter()
    statuses = collections.defaultdict(collections.Counter)
    probes = collections.Counter()
    for line in open(path, encoding="utf-8"):
        event = json.loads(line)
        finished = event.get("ScenarioFinished")
        if not finished:
            continue
        recorder = finished.get("recorder", {})
        cases = recorder.get("cases", {})
        for case_id, interaction in recorder.get("interactions", {}).items():
            case = cases.get(case_id, {}).get("value", {})
            response = interaction.get("response") or {}
            status = response.get("status_code", "no answer")
            scenario = ((case.get("meta") or {}).get("phase") or {}).get("data") or {}
            if scenario.get("scenario") == "unspecified_http_method":
                probes[status] += 1  # a method the document does not list for that path
                continue
            label = f"{case.get('method', '?')} {case.get('path', '?')}"
            requests[label] += 1
            statuses[label][status] += 1
    total = sum(requests.values())
    print(f"{len(requests)} operations, {total} requests; {sum(probes.values())} more with undocumented methods "
          f"({', '.join(f'{code}: {count}' for code, count in sorted(probes.items(), key=lambda item: str(item[0])))})")
    for label in sorted(requests, key=lambda item: item.split(" ", 1)[::-1]):
        codes = ", ".join(f"{code}: {count}" for code, count in sorted(statuses[label].items(), key=lambda item: str(item[0])))
        print(f"  {requests[label]:5d}  {label}  ({codes})")


if __name__ == "__main__":
    main(sys.argv[1])
