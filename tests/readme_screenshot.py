"""The README's screenshot (docs/report.png): the top of a real report.html as headless Chromium shows it.

Run by scripts/readme-screenshot after a run of the suite on the local cluster. The PNG carries a tEXt chunk
(`runnerconf-report`) that names the run it shows (run id, cluster, verdict, counts), so a test can tell a
picture of a real run, made by this script, from one made by hand.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from scripts/readme-screenshot
    sys.path.insert(0, str(ROOT))

from tests.browser import Browser  # noqa: E402

CHUNK_KEY = "runnerconf-report"
MADE_BY = "scripts/readme-screenshot"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = 1280, 900


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, data) of every chunk of a PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG file")
    found, at = [], len(PNG_SIGNATURE)
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind = png[at + 4 : at + 8]
        found.append((kind, png[at + 8 : at + 8 + length]))
        at += 12 + length
    return found


def with_text(png: bytes, key: str, text: str) -> bytes:
    """PNG with a tEXt chunk KEY=TEXT (Latin-1) placed right after its IHDR chunk."""
    data = key.encode("latin-1") + b"\0" + text.encode("latin-1")
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    (length,) = struct.unpack(">I", png[8:12])
    end_of_ihdr = 8 + 12 + length
    return png[:end_of_ihdr] + chunk + png[end_of_ihdr:]


def provenance(png: bytes) -> dict[str, Any] | None:
    """What the screenshot's tEXt chunk says about the run it shows; None when it has none."""
    for kind, data in chunks(png):
        if kind == b"tEXt":
            key, _, text = data.partition(b"\0")
            if key.decode("latin-1") == CHUNK_KEY:
                found: dict[str, Any] = json.loads(text.decode("latin-1"))
                return found
    return None


def screenshot(report_dir: Path, out: Path, browser: Browser | None = None) -> dict[str, Any]:
    """Screenshot the header and the run picture of REPORT_DIR/report.html into OUT; returns what it stamped."""
    doc = json.loads((report_dir / "report.json").read_text(encoding="utf-8"))
    evidence = json.loads((Path(doc["evidence"]) / "evidence.json").read_text(encoding="utf-8"))
    stamp = {
        "made_by": MADE_BY,
        "run_id": evidence.get("run_id"),
        "cluster": doc.get("cluster"),
        "verdict": doc.get("verdict"),
        "counts": doc.get("counts"),
        "jobs": doc.get("jobs"),
        "results": len(doc.get("results") or []),
        "generated_at": doc.get("generated_at"),
    }
    own = browser is None
    opened = Browser(width=WIDTH, height=HEIGHT) if own else browser
    assert opened is not None
    try:
        if own:
            opened.__enter__()
        seen = opened.load((report_dir / "report.html").resolve().as_uri())
        if seen.problems:
            raise RuntimeError(f"report.html did not load cleanly: {seen.problems}")
        # The header and the run picture: what a reader sees first, as wide as the window.
        bottom = opened.evaluate(
            "(() => { const r = document.getElementById('run') || document.getElementById('header');"
            " return Math.ceil(r.getBoundingClientRect().bottom + window.scrollY + 8); })()"
        )
        data = opened.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": WIDTH, "height": min(int(bottom), 2400), "scale": 1},
        )["data"]
    finally:
        if own:
            opened.__exit__(None, None, None)
    import base64

    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(with_text(base64.b64decode(data), CHUNK_KEY, json.dumps(stamp, sort_keys=True)))
    return stamp


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python tests/readme_screenshot.py REPORT_DIR OUT.png", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(screenshot(Path(sys.argv[1]), Path(sys.argv[2])), sort_keys=True))
