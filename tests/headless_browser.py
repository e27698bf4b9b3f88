"""A headless Chromium for the tests: render an HTML file with its JavaScript and read what it
shows (Debian's `chromium`, installed by scripts/setup_env.sh where root and apt-get are there)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
_DUMP_ID = "dnd-browser-dump"


def chromium() -> str | None:
    """The headless browser's executable, or None where none is installed."""
    return next((p for p in map(shutil.which, CHROMIUM) if p), None)


def _clicker(labels: list[str], wait_ms: int) -> str:
    """A script that, after the page's own scripts ran, clicks the first element whose text is
    each of `labels` in turn (waiting `wait_ms` after each) and writes the page's visible text
    after every click into <pre id=_DUMP_ID> (JSON: label -> text)."""
    return f"""<script>
window.addEventListener("load", () => {{
  const labels = {json.dumps(labels)}, seen = {{}};
  // the innermost element with that text (a click bubbles up to its handler)
  const find = (t) => [...document.querySelectorAll("a, button, span, li, td, div")]
      .filter((e) => e.textContent.trim() === t).pop();
  const step = (i) => {{
    if (i === labels.length) {{
      const pre = document.createElement("pre"); pre.id = "{_DUMP_ID}";
      pre.textContent = JSON.stringify(seen); document.body.appendChild(pre); return;
    }}
    const el = find(labels[i]);
    if (el) el.click();
    setTimeout(() => {{ seen[labels[i]] = el ? document.body.innerText : null; step(i + 1); }}, {wait_ms});
  }};
  setTimeout(() => step(0), {wait_ms});
}});
</script>"""


def render(html: Path, clicks: list[str] = (), budget_ms: int = 20000, wait_ms: int = 500,
           timeout_s: int = 120) -> dict[str, str | None]:
    """Open `html` in headless Chromium with a virtual-time budget, click each of `clicks` (by its
    text) in turn and return {"dom": the rendered DOM, label: the visible text after that click
    (None: nothing with that text)}. A copy of the file gets the clicking script; the original is
    left alone."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH (scripts/setup_env.sh installs Debian's `chromium`)")
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        text = Path(html).read_text()
        i = text.rfind("</body>")
        script = _clicker(list(clicks), wait_ms)
        page.write_text(text[:i] + script + text[i:] if i >= 0 else text + script)
        res = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                              f"--user-data-dir={tmp}/profile", f"--virtual-time-budget={budget_ms}",
                              "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=timeout_s)
    if res.returncode != 0:
        raise RuntimeError(f"chromium exited {res.returncode}: {res.stderr.strip().splitlines()[-1:]}")
    out: dict[str, str | None] = {"dom": res.stdout}
    start = res.stdout.find(f'<pre id="{_DUMP_ID}">')
    if start >= 0:
        import html as _html

        body = res.stdout[start + len(f'<pre id="{_DUMP_ID}">'): res.stdout.find("</pre>", start)]
        out.update(json.loads(_html.unescape(body)))
    return out


_DATA_LINK = re.compile(r'href="data:[^;"]*;charset=[^;"]*;filename=([^;"]+);base64,([A-Za-z0-9+/=]*)"')


def data_links(dom: str) -> dict[str, bytes]:
    """The files a rendered page links as data URIs (a Snakemake report's "view" buttons), by
    their file name, decoded; the page's scripts are left out (only what it rendered counts)."""
    shown = re.sub(r"<script.*?</script>", "", dom, flags=re.S)
    return {name: base64.b64decode(data) for name, data in _DATA_LINK.findall(shown)}
