"""dbquota's quantity parser against apimachinery's own, text for text.

Builds a ten-line Go program around ``resource.ParseQuantity`` of k8s.io/apimachinery at
the version the control plane is built from (cached, keyed by that version, under
``~/.cache/dbquota/bin/quantity-oracle-<version>/``, from the Go module proxy like the
control plane), feeds it 60,000 texts generated from a fixed seed (random strings over
the quantity alphabet, and well-formed numbers with every suffix and sign), and checks
that :func:`dbquota.domain.quantities.parse` gives the same exact value and format for
each, or refuses each one Go refuses. The only texts allowed to differ are those over the
parser's documented limit (10^1000 or more, or over 1,000 digits), which Go keeps.
"""

from __future__ import annotations

import os
import random
import subprocess
from fractions import Fraction
from pathlib import Path

import pytest

from dbquota.domain import quantities
from e2e import controlplane

APIMACHINERY = f"v0.{controlplane.K8S_VERSION.removeprefix('v1.')}"  # v1.36.3 -> v0.36.3

ORACLE = """package main

import (
	"bufio"
	"fmt"
	"os"

	"k8s.io/apimachinery/pkg/api/resource"
)

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		q, err := resource.ParseQuantity(in.Text())
		if err != nil {
			fmt.Fprintln(out, "ERR")
			continue
		}
		d := q.AsDec()
		fmt.Fprintln(out, d.UnscaledBig().String(), int64(d.Scale()), q.Format)
	}
}
"""


def oracle() -> Path:
    """The Go program, built once per apimachinery version."""
    out = controlplane.cache_dir() / "bin" / f"quantity-oracle-{APIMACHINERY}" / "quantity-oracle"
    if out.is_file():
        return out
    work = controlplane.cache_dir() / "src" / f"quantity-oracle-{APIMACHINERY}"
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    (work / "go.mod").write_text(
        f"module dbquota.local/quantity-oracle\n\ngo 1.26\n\n"
        f"require k8s.io/apimachinery {APIMACHINERY}\n"
    )
    (work / "main.go").write_text(ORACLE)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    for argv in (["go", "mod", "tidy"], ["go", "build", "-o", str(out) + ".tmp", "."]):
        result = subprocess.run(
            argv, cwd=work, env=env, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            pytest.fail(f"{' '.join(argv)} failed in {work}:\n{result.stderr}")
    Path(str(out) + ".tmp").rename(out)
    return out


def texts(seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    pieces = [*".+-0123456789eEinumkKMGTP", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "e-", "e+", "00"]
    found = {"".join(rng.choice(pieces) for _ in range(rng.randint(1, 9))) for _ in range(40_000)}
    suffixes = ["", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"]
    for _ in range(20_000):
        whole = str(rng.randint(0, 10 ** rng.randint(0, 22))) if rng.random() < 0.8 else ""
        fraction = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 14)))
        point = "." if fraction or rng.random() < 0.3 else ""
        suffix = rng.choice([*suffixes, f"e{rng.randint(-30, 30)}", f"E+{rng.randint(0, 30)}"])
        found.add(f"{rng.choice(['', '-', '+'])}{whole}{point}{fraction}{suffix}")
    return sorted(found)


def test_parse_agrees_with_apimachinery() -> None:
    inputs = texts()
    answers = subprocess.run(
        [str(oracle())],
        input="\n".join(inputs) + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert len(answers) == len(inputs)
    differences: list[str] = []
    over_limit = refused = 0
    for text, answer in zip(inputs, answers, strict=True):
        try:
            parsed = quantities.parse(text)
            mine: object = (parsed.value, parsed.format)
        except ValueError as exc:
            if "beyond any resource" in str(exc) or "digits" in str(exc):
                over_limit += 1
                continue
            mine = "ERR"
        if answer == "ERR":
            refused += 1
            go: object = "ERR"
        else:
            unscaled, scale, fmt = answer.split()
            go = (Fraction(int(unscaled)) / Fraction(10) ** int(scale), fmt)
        if mine != go:
            differences.append(f"{text!r}: dbquota {mine}, apimachinery {go}")
    assert differences == [], "\n".join(differences[:20])
    assert refused > 10_000  # the generated texts exercise refusals …
    assert len(inputs) - refused - over_limit > 10_000  # … and values
    assert over_limit < 200
