#!/usr/bin/env bash
# Prepares what a lent GPU machine needs beside the working tree, for scripts/gpu_checks.sh
# (../shared/GPU.md; the device tool's README in the tool library). Everything a device call
# sends counts towards its 64 MiB, the working tree included, so each part is kept small:
#   .whl/        wheels of this project's runtime packages that the device image lacks, resolved
#                by pip for the image's Python (3.12, x86-64); the image's package list is read
#                from the tool library's device/KINDS.md (KINDS=path to use another)
#   .fmnist1/, .fmnist2/  Fashion-MNIST's four raw files as one tar.xz, in two parts: the
#                working tree, the wheels and the data do not fit one call, so they travel in
#                two calls made one right after the other (gpu_checks.sh joins the parts)
#   .gitshallow/ this commit and its trees, without file contents (94 kB instead of ~20 MB): a
#                record's provenance needs the commit and `git status`, which hashes the files
#                and compares, reading no stored content
# They are ignored through .git/info/exclude. Run from the repository root at the commit the
# device should run: `bash scripts/gpu_carry.sh` ends with each call's carry list and size, and
# fails if a call would be over 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-scripts/python}
[ -x "$PY" ] || PY=python3
KINDS=${KINDS:-../.library/device/KINDS.md}
FMNIST=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
PLATFORMS="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
--platform manylinux_2_26_x86_64 --platform manylinux_2_24_x86_64 \
--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
--platform manylinux2010_x86_64 --platform manylinux1_x86_64"

for ignored in /.whl/ /.fmnist1/ /.fmnist2/ /.gitshallow/; do
    grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
done
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "gpu_carry: the checkout has uncommitted changes; commit first (records name the commit)" >&2
    exit 1
fi

# --- wheels: what pip would install for the image's Python, less what the image holds ------
rm -rf .whl && mkdir .whl
report=$(mktemp) log=$(mktemp) target=$(mktemp -d)
# shellcheck disable=SC2086
if ! "$PY" -m pip install --quiet --dry-run --ignore-installed --report "$report" \
        --only-binary=:all: --python-version 3.12 --implementation cp $PLATFORMS \
        --target "$target" . 2> "$log"; then
    cat "$log" >&2; echo "gpu_carry: pip could not resolve this project for Python 3.12" >&2; exit 1
fi
rm -rf "$log" "$target"
"$PY" - "$report" "$KINDS" > .whl/wanted.txt <<'EOF'
import json, re, sys
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as norm
report, kinds = sys.argv[1:]
text = open(kinds, encoding="utf-8").read()
listed = re.search(r"Packages: (.*?)\.\s*$", text, re.MULTILINE)
if listed is None:
    sys.exit(f"gpu_carry: no 'Packages: ...' line in {kinds}")
on_device = {norm(n) for n in listed.group(1).split(", ")}
resolved = {norm(i["metadata"]["name"]): i["metadata"] for i in json.load(open(report))["install"]}


def needs(name):
    """The packages `name` requires that pip chose here (its extras left out)."""
    for text in resolved[name].get("requires_dist", []):
        requirement = Requirement(text)
        if "extra" not in str(requirement.marker or "") and norm(requirement.name) in resolved:
            yield norm(requirement.name)


# from this project down, stopping at what the image holds: what torch needs there is there
todo, carry = list(needs("energy-lib")), set()
while todo:
    name = todo.pop()
    if name not in on_device and name not in carry:
        carry.add(name)
        todo.extend(needs(name))
for name in sorted(carry):
    print(f"{resolved[name]['name']}=={resolved[name]['version']}")
EOF
# shellcheck disable=SC2086
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $PLATFORMS -d .whl -r .whl/wanted.txt
rm -f "$report" .whl/wanted.txt

# --- Fashion-MNIST: the four raw files, one tar.xz (split over the two calls below) -----------
raw=$(mktemp -d)
for name in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte \
            t10k-labels-idx1-ubyte; do
    if [ -f "$FMNIST/$name.gz" ]; then gzip -dc "$FMNIST/$name.gz"; else cat "$FMNIST/$name"; fi \
        > "$raw/$name"
done
tar -C "$raw" -cf - . | xz -9 -T0 > "$raw.tar.xz"
rm -rf "$raw"

# --- this commit without file contents -----------------------------------------------------------
# (.gitshallow is the git folder itself: gpu_checks.sh moves it to .git and reads HEAD's trees
# into the index)
rm -rf .gitshallow && git init -q --bare .gitshallow && git -C .gitshallow config core.bare false
# a copy's permission bits are the copier's business: the code is what must match the commit
git -C .gitshallow config core.fileMode false
commit=$(git rev-parse HEAD)
git rev-list --objects --no-object-names --filter=blob:none --no-walk HEAD \
    | git pack-objects -q --stdout | git --git-dir=.gitshallow index-pack --stdin > /dev/null
git --git-dir=.gitshallow update-ref refs/heads/main "$commit"
git --git-dir=.gitshallow symbolic-ref HEAD refs/heads/main
echo "$commit" > .gitshallow/shallow

# --- two calls, each within 64 MiB ----------------------------------------------------------------
# call 1: the working tree, .whl, .gitshallow and the data's first part (as much as fits);
# call 2: the working tree, .gitshallow and the rest
rm -rf .fmnist1 .fmnist2
"$PY" - "$raw.tar.xz" <<'EOF'
import hashlib, os, subprocess, sys
data = open(sys.argv[1], "rb").read()
os.remove(sys.argv[1])
limit, margin = 64 * 2**20, 4 * 2**20  # the device tool's limit; room for what the call adds
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.decode().split("\0")
tree = sum(os.path.getsize(f) for f in files if f and os.path.isfile(f))
size = lambda p: sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(p) for f in fs)
wheels, git = size(".whl"), size(".gitshallow")
first = max(0, min(len(data), limit - margin - tree - wheels - git))
second = len(data) - first
mib = lambda n: f"{n / 2**20:.1f} MiB"
calls = [tree + wheels + git + first, tree + git + second]
digest = hashlib.sha256(data).hexdigest()
for number, part in ((1, data[:first]), (2, data[first:])):
    os.makedirs(f".fmnist{number}")
    with open(f".fmnist{number}/fmnist.tar.xz.{number}", "wb") as out:
        out.write(part)
    with open(f".fmnist{number}/fmnist.sha256", "w") as out:
        out.write(f"{digest}  fmnist.tar.xz\n")
print(f"working tree {mib(tree)}; .whl {mib(wheels)}; .gitshallow {mib(git)}; "
      f"Fashion-MNIST {mib(len(data))} in two parts ({mib(first)}, {mib(second)})")
print(f'call 1 sends {mib(calls[0])}: carry [".whl", ".gitshallow", ".fmnist1"], '
      "command: bash scripts/gpu_checks.sh stage env selfcheck")
print(f'call 2 sends {mib(calls[1])}: carry [".gitshallow", ".fmnist2"], right after call 1 '
      "(what call 1 unpacked stays in /tmp only while the machine is warm), command e.g. "
      'OUT=$OUT BLOCKS="1:0 2:0" WIDTHS_LIMIT=420 bash scripts/gpu_checks.sh power widths pack '
      "(power <= 90 s + widths <= 420 s + pack: within one call's 600 s)")
if max(calls) > limit:
    raise SystemExit("gpu_carry: a call is over the device tool's 64 MiB")
EOF
