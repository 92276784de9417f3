"""Drive the real ComfyUI frontend in headless Chromium (Playwright). Runs under the browser's own
Python (BROWSER_PYTHON), not the test's: it reads a JSON job on stdin and prints a JSON answer.

Job: {"url", "chromium", "workflows": {name: workflow json}, "screenshot": optional {"workflow", "path",
"width", "height"}: a PNG of that workflow alone, framed, in a window of that size}.
Answer: {"frontend_version", "workflows": {name: {"nodes", "prompt", "errors"}}}, where each node is
what the frontend holds after app.loadGraphData: type, whether that type is registered, its widgets
(name, type, value), its bounding box on the canvas; "prompt" is app.graphToPrompt()'s API prompt,
what the frontend would queue; "errors" are the page's uncaught errors while loading.
"""
import json
import sys

from playwright.sync_api import TimeoutError as PlaywrightTimeout
from playwright.sync_api import sync_playwright

READ_GRAPH = """async () => {
  const nodes = window.app.graph._nodes.map(n => ({
    id: n.id, type: n.type, registered: !!window.LiteGraph.registered_node_types[n.type],
    widgets: (n.widgets || []).map(w => ({name: w.name, type: w.type, value: w.value === undefined ? null : w.value})),
    bounding: Array.from(n.getBounding ? n.getBounding() : n.boundingRect)}));
  const prompt = (await window.app.graphToPrompt()).output;
  return {nodes, prompt};
}"""

IMAGES_LOADED = """() => window.app.graph._nodes.every(n => !(n.widgets || []).some(w => w.name === 'upload')
  || (n.imgs && n.imgs.length && n.imgs.every(i => i.complete)))"""

# Fit the whole graph into the canvas element, `margin` screen pixels around it; returns the clip rectangle.
FRAME = """(margin) => {
  const canvas = window.app.canvas, nodes = window.app.graph._nodes;
  const box = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of nodes) {
    const [x, y, w, h] = n.getBounding ? n.getBounding() : n.boundingRect;
    box[0] = Math.min(box[0], x); box[1] = Math.min(box[1], y);
    box[2] = Math.max(box[2], x + w); box[3] = Math.max(box[3], y + h);
  }
  const rect = canvas.canvas.getBoundingClientRect(), bw = box[2] - box[0], bh = box[3] - box[1];
  const scale = Math.min(1, (rect.width - 2 * margin) / bw, (rect.height - 2 * margin) / bh);
  canvas.show_info = false;
  canvas.low_quality_zoom_threshold = 0.2;  // newer frontends draw no text below 0.6 unless told
  canvas.ds.scale = scale;
  canvas.ds.offset[0] = margin / scale - box[0];
  canvas.ds.offset[1] = margin / scale - box[1];
  canvas.setDirty(true, true);
  return {x: rect.left, y: rect.top, width: Math.ceil(bw * scale + 2 * margin), height: Math.ceil(bh * scale + 2 * margin)};
}"""
# Only the graph: the canvas and the widgets the frontend lays over it (text boxes), no menus or panels.
GRAPH_ONLY = ("body * { visibility: hidden !important; } "
              "#graph-canvas, .dom-widget, .dom-widget * { visibility: visible !important; }")


def open_frontend(browser, url, width, height):
    page = browser.new_page(viewport={"width": width, "height": height})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    # The node definitions come from /object_info after the page loads; KSampler is always among them.
    page.wait_for_function("() => !!(window.app && window.app.graph && window.LiteGraph "
                           "&& window.LiteGraph.registered_node_types['KSampler'])", timeout=180_000)
    page.wait_for_timeout(1000)  # extensions finish their setup after the types are registered
    return page, errors


def load(page, errors, workflow):
    del errors[:]
    page.evaluate("async (wf) => { await window.app.loadGraphData(wf); }", workflow)
    # Image inputs load their picture afterwards, and frontend 1.49 then grows the node to show it.
    try:
        page.wait_for_function(IMAGES_LOADED, timeout=15_000)
    except PlaywrightTimeout:
        pass  # a version that keeps no node.imgs: the pause below still lets most pictures arrive
    page.wait_for_timeout(500)
    answer = page.evaluate(READ_GRAPH)
    answer["errors"] = list(errors)
    return answer


def main():
    job = json.load(sys.stdin)
    out = {"workflows": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=job["chromium"], args=["--no-sandbox", "--disable-gpu"])
        try:
            page, errors = open_frontend(browser, job["url"], 1600, 1000)
            out["frontend_version"] = page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ || null")
            for name, workflow in job["workflows"].items():
                out["workflows"][name] = load(page, errors, workflow)
            shot = job.get("screenshot")
            if shot:
                page.close()
                page, errors = open_frontend(browser, job["url"], shot["width"], shot["height"])
                load(page, errors, job["workflows"][shot["workflow"]])
                page.add_style_tag(content=GRAPH_ONLY)
                clip = page.evaluate(FRAME, shot.get("margin", 24))
                page.wait_for_timeout(800)
                page.screenshot(path=shot["path"], clip=clip)
        finally:
            browser.close()
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
