"""The README's five-minute tour, run as written against a real `heartleaf serve`.

The tour's ```sh blocks are read from README.md; every `curl` command (with its
continuation lines) runs in order with bash, in the environment a fresh `heartleaf demo`
prints (keys, account ids, ``HEARTLEAF``). Each answer must have the status the README
implies (a problem's ``"status"``, otherwise 2xx) and every ``"key":value`` pair the
README's ``# …`` lines show with a concrete value (``…`` elides; a string ending in ``…``
is a prefix). ``export NAME=prefix…`` lines take the previous answer's ``id``. The only
liberty taken: the long poll's ``wait`` is shortened, and its ``<next_cursor>`` is the
previous answer's. So the README cannot drift from the product.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
ROOT = README.parent
HEARTLEAF = [sys.executable, "-m", "api.cli"]
SECTION = "## A five-minute tour"
ELLIPSIS = "…"

# A "key":value pair with a concrete value: a string, a number, a literal or a flat array.
PAIR = re.compile(
    r'"([A-Za-z_][A-Za-z0-9_]*)":\s*'
    r'("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?![\d.])|true|false|null|\[[^\[\]{}…]*\])'
)
EXPORT = re.compile(r"^export (\w+)=(\S*)…")
STATUS = re.compile(r'"status":(\d{3})\b')

pytestmark = pytest.mark.xdist_group("readme_tour")


@dataclass
class Step:
    command: str
    shown: str  # the README's comment lines after the command, joined
    exports: list[tuple[str, str]] = field(default_factory=list)  # name, prefix of the id


def tour_section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end >= 0 else len(text)]


def sh_blocks(section: str) -> list[str]:
    return re.findall(r"^```sh\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)


def tour_steps(text: str) -> list[Step]:
    """Every curl command of the tour, in order, with what the README shows after it."""
    steps: list[Step] = []
    for block in sh_blocks(tour_section(text)):
        lines = block.splitlines()
        index = 0
        while index < len(lines):
            line = lines[index]
            if line.startswith("curl "):
                command = [line]
                while command[-1].endswith("\\") or _unclosed("\n".join(command)):
                    index += 1
                    command.append(lines[index])
                shown = []
                while index + 1 < len(lines) and lines[index + 1].startswith("#"):
                    index += 1
                    shown.append(lines[index].lstrip("#").strip())
                steps.append(Step("\n".join(command), " ".join(shown)))
            elif (export := EXPORT.match(line)) and steps:
                steps[-1].exports.append((export.group(1), export.group(2)))
            index += 1
    return steps


def _unclosed(text: str) -> bool:
    """Whether a shell command's text ends inside a quoted string (it goes on)."""
    quote = None
    escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote is None and char in "'\"":
            quote = char
        elif char == quote:
            quote = None
    return quote is not None


def shown_pairs(shown: str) -> list[tuple[str, Any]]:
    pairs = []
    for key, raw in PAIR.findall(shown):
        if raw.startswith('"') and ELLIPSIS in raw:
            prefix = json.loads(raw).split(ELLIPSIS)[0]
            if prefix:
                pairs.append((key, Prefix(prefix)))
            continue
        pairs.append((key, json.loads(raw)))
    return pairs


@dataclass(frozen=True)
class Prefix:
    text: str


def answer_pairs(answer: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(answer, dict):
        for key, value in answer.items():
            yield key, value
            yield from answer_pairs(value)
    elif isinstance(answer, list):
        for item in answer:
            yield from answer_pairs(item)


def contains(answer: Any, key: str, expected: Any) -> bool:
    for found_key, value in answer_pairs(answer):
        if found_key != key:
            continue
        if isinstance(expected, Prefix):
            if isinstance(value, str) and value.startswith(expected.text):
                return True
        elif value == expected and type(value) is type(expected):
            return True
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _exports(output: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in output.splitlines():
        line = raw.strip()
        if line.startswith("export "):
            for assignment in line.split("#")[0].split()[1:]:
                name, _, value = assignment.partition("=")
                found[name] = value
    return found


@pytest.fixture(scope="module")
def tour_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    for tool in ("bash", "curl"):  # the tour is run as a reader runs it
        assert shutil.which(tool), f"the README tour needs {tool} on PATH"
    data = tmp_path_factory.mktemp("tour")
    port = _free_port()
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith("HEARTLEAF")
    }
    environment.pop("DATABASE_URL", None)
    environment["HEARTLEAF_DATA_DIR"] = str(data)

    def heartleaf(*arguments: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*HEARTLEAF, *arguments],
            env=environment,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    heartleaf("db", "upgrade")
    demo = heartleaf("demo", "--server", f"http://127.0.0.1:{port}")
    exported = _exports(demo.stdout)
    assert {"HEARTLEAF", "FEDERATION_KEY", "TREASURER_KEY", "ANA", "BO", "CAI"} <= set(exported)
    log = data / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(
            [*HEARTLEAF, "serve", "--port", str(port), "--log-level", "warning", "--no-access-log"],
            env=environment,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{exported['HEARTLEAF']}/healthz", timeout=2):
                    break
            except OSError:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        yield {**environment, **exported, "DEMO_OUTPUT": demo.stdout}
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_readme_tour_is_parsed_whole() -> None:
    """Nothing of the tour is left out by the parsing: every curl line of its blocks is a
    step, every step names the server through $HEARTLEAF, and the steps shown are there."""
    text = README.read_text(encoding="utf-8")
    section = tour_section(text)
    steps = tour_steps(text)
    curl_lines = [
        line for block in sh_blocks(section) for line in block.splitlines() if "curl " in line
    ]
    assert len(steps) == len(curl_lines) >= 18
    for step in steps:
        assert step.command.split()[0] == "curl"
        assert "$HEARTLEAF/" in step.command, step.command
        assert "localhost" not in step.command
        assert "127.0.0.1" not in step.command
    assert all("localhost:" not in line for line in text.splitlines() if "curl " in line)
    assert sum(1 for step in steps if "wait=" in step.command) == 1
    assert [name for step in steps for name, _ in step.exports] == ["QUOTE", "PROPOSAL"]
    assert "heartleaf demo --reissue-keys" in section  # how to get the tour's keys again
    assert "export HEARTLEAF=http://127.0.0.1:8000" in section
    # The parser of shown fragments: concrete values, elisions and prefixes.
    pairs = shown_pairs('{"id":…,"a":1,"b":"x","c":"clr_…","d":null,"e":["p"],"f":[…],"g":-2}')
    assert pairs == [
        ("a", 1),
        ("b", "x"),
        ("c", Prefix("clr_")),
        ("d", None),
        ("e", ["p"]),
        ("g", -2),
    ]


def test_the_readme_tour_runs_as_written(tour_environment: dict[str, str]) -> None:
    environment = dict(tour_environment)
    # What the tour's introduction says of the demo is what it seeded.
    transactions = re.search(r"^  transactions: (\d+)$", environment["DEMO_OUTPUT"], re.MULTILINE)
    assert transactions is not None
    intro = tour_section(README.read_text(encoding="utf-8"))
    assert f"{transactions.group(1)} transactions of care and" in intro
    previous: Any = None
    for number, step in enumerate(tour_steps(README.read_text(encoding="utf-8")), start=1):
        command = step.command
        if "<next_cursor>" in command:
            assert isinstance(previous, dict), previous
            assert previous.get("next_cursor"), previous
            command = command.replace("<next_cursor>", previous["next_cursor"])
        if "wait=" in command:
            command = re.sub(r"wait=\d+", "wait=1", command)
        done = subprocess.run(
            ["bash", "-c", command + " -w '\\n%{http_code}'"],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        where = f"step {number}: {step.command}"
        assert done.returncode == 0, f"{where}\n{done.stderr}"
        body, _, status_text = done.stdout.rpartition("\n")
        status = int(status_text)
        answer = json.loads(body)
        shown_status = STATUS.search(step.shown)
        if shown_status and '"code":' in step.shown:
            assert status == int(shown_status.group(1)), f"{where}\n{body}"
        else:
            assert 200 <= status < 300, f"{where}\n{status} {body}"
        for key, expected in shown_pairs(step.shown):
            assert contains(answer, key, expected), f"{where}\nshown {key}: {expected!r}\n{body}"
        for name, prefix in step.exports:
            assert isinstance(answer, dict), body
            assert answer["id"].startswith(prefix), body
            environment[name] = answer["id"]
        previous = answer
