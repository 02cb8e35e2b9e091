#!/usr/bin/env python3
"""Breaks resident memory down by mapping from a copy of /proc/PID/smaps.
usage: smaps.py SMAPS_FILE BINARY_NAME
Prints Markdown table rows (| mapping | Rss KiB | private dirty KiB |):
the binary, each shared library (all its segments), [heap], [stack], and
anonymous mappings (other threads' stacks, malloc arenas)."""
import collections
import re
import sys

path, binary = sys.argv[1], sys.argv[2]
header = re.compile(r"^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$")
groups = collections.defaultdict(lambda: [0, 0])
kinds = {}
current = None
for line in open(path):
    m = header.match(line)
    if m:
        name = m.group(1).strip()
        if not name:
            current, kind = "anonymous (thread stacks, malloc arenas)", "anon"
        elif name.startswith("["):
            current, kind = name, "anon" if name == "[heap]" else "other"
        elif name.rsplit("/", 1)[-1] == binary:
            current, kind = f"{binary} (the binary: text, data, relocations)", "binary"
        else:
            current = name.rsplit("/", 1)[-1]
            kind = "lib" if ".so" in current else "other"
        kinds[current] = kind
        continue
    key, _, value = line.partition(":")
    if key == "Rss":
        groups[current][0] += int(value.split()[0])
    elif key == "Private_Dirty":
        groups[current][1] += int(value.split()[0])

total = sum(v[0] for v in groups.values())
libs = [k for k in groups if kinds[k] == "lib"]
lib_rss = sum(groups[k][0] for k in libs)
lib_dirty = sum(groups[k][1] for k in libs)
rows = sorted(groups.items(), key=lambda kv: -kv[1][0])
print(f"| total (VmRSS) | {total} | {sum(v[1] for v in groups.values())} |")
for name, (rss, dirty) in rows:
    if kinds[name] != "lib" and rss > 0:
        print(f"| {name} | {rss} | {dirty} |")
print(f"| {len(libs)} shared libraries | {lib_rss} | {lib_dirty} |")
# vmrd's own needs; with libvirt.so mapped (vmrd-libvirt), every other
# library comes with it (ldd). vmrd itself maps no libvirt.
base = ("libc.so", "libm.so", "libgcc_s.so", "ld-linux", "libnss_")
if any(k.startswith("libvirt.so") for k in libs):
    virt = [k for k in libs if not k.startswith(base)]
    print(f"| &nbsp;&nbsp;libvirt.so and the {len(virt) - 1} libraries it needs | "
          f"{sum(groups[k][0] for k in virt)} | {sum(groups[k][1] for k in virt)} |")
for name, (rss, dirty) in rows:
    if kinds[name] == "lib" and rss >= 256:
        print(f"| &nbsp;&nbsp;{name} | {rss} | {dirty} |")
rest = [k for k in libs if groups[k][0] < 256]
if rest:
    print(f"| &nbsp;&nbsp;{len(rest)} others under 256 KiB each | "
          f"{sum(groups[k][0] for k in rest)} | {sum(groups[k][1] for k in rest)} |")
