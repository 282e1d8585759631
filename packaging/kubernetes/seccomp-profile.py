#!/usr/bin/env python3
"""Write seccomp-stallprobe.json: allow syscalls-observed.txt + syscalls-extra.txt, refuse
everything else with EPERM. Run it after changing either list (tests/packaging/daemonset.rs checks that the
profile and the lists agree)."""
import json
import os

here = os.path.dirname(os.path.abspath(__file__))


def names(name):
    with open(os.path.join(here, name)) as f:
        return {w for line in f for w in line.split("#", 1)[0].split()}


allowed = sorted(names("syscalls-observed.txt") | names("syscalls-extra.txt"))
profile = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
}
with open(os.path.join(here, "seccomp-stallprobe.json"), "w") as f:
    f.write(json.dumps(profile, indent=2) + "\n")
print(f"seccomp-stallprobe.json: {len(allowed)} system calls")
