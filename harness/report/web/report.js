// blkrig report page: reads the inlined JSON blob and draws the run with uPlot.
// When everything is drawn, body[data-state] is "drawn" (an error: "error"),
// and the plot's area in CSS pixels is in body[data-plot-box] for tests.
"use strict";
(function () {
  const COLORS = {
    read: "#2563eb", write: "#16a34a", flush: "#9333ea", discard: "#ea580c",
    other: "#6b7280", faulted: "#dc2626", bios: "#111827", offender: "#db2777",
  };
  const LABELS = {
    read: "read", write: "write", flush: "flush", discard: "discard / write zeroes",
    other: "other", faulted: "faulted (a fault rule fired, or not OK)",
  };
  const BANDS = ["rgba(59, 130, 246, 0.10)", "rgba(234, 179, 8, 0.14)"];

  const body = document.body;
  const fail = (msg) => {
    body.dataset.state = "error";
    body.dataset.error = String(msg);
  };
  window.addEventListener("error", (e) => fail(e.message));

  const D = JSON.parse(document.getElementById("blkrig-data").textContent);
  const app = document.getElementById("app");
  app.textContent = "";

  // Small DOM helpers: text always goes in as text.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k === "style") e.style.cssText = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) if (k != null) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  const fmtInt = (n) => (n == null ? "" : Number(n).toLocaleString("en-US"));
  const fmtMs = (us) => (us == null ? "" : (us / 1000).toFixed(3));
  function fmtBytes(b) {
    if (b >= 1 << 30) return (b / (1 << 30)).toFixed(1) + " GiB";
    if (b >= 1 << 20) return (b / (1 << 20)).toFixed(1) + " MiB";
    if (b >= 1 << 10) return (b / (1 << 10)).toFixed(1) + " KiB";
    return b + " B";
  }
  function table(head, rows) {
    return el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {}, h)))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c)))))));
  }
  const num = (v) => el("td", { class: "num" }, v);

  // Header.
  const R = D.run;
  const oc = R.outcome === "pass" ? "pass" : R.outcome === "fail" ? "fail" : "other";
  app.append(el("h1", {}, "blkrig report: " + R.name, el("span", { class: "badge " + oc }, R.outcome)));
  const span = Math.max(0, ...D.marks.map((m) => (m.t.length ? m.t[m.t.length - 1] : 0)));
  app.append(el("p", { class: "sub" },
    [R.scenario ? "scenario " + R.scenario : null, R.kernel ? "kernel " + R.kernel : null,
      fmtInt(R.requests) + " device requests over " + fmtMs(span) + " ms",
      fmtInt(R.guest_requests) + " guest requests (" + fmtInt(R.matched) + " matched)",
      R.queues + " queue" + (R.queues === 1 ? "" : "s"), "folder " + R.dir].filter(Boolean).join(" · ")));
  if (R.trace_incomplete) app.append(el("p", { class: "note" }, "The device trace is incomplete: " + R.trace_incomplete));
  if (D.problems.length) {
    app.append(el("h2", {}, "Problems"));
    for (const p of D.problems) app.append(el("pre", { class: "finding" }, p));
  }

  // The sector/time plot.
  app.append(el("h2", {}, "Requests: sector against time"));
  const marks = D.marks.filter((m) => m.t.length > 0);
  const legend = el("div", { class: "legend" });
  const controls = el("div", { class: "controls" });
  const bioBox = el("input", { type: "checkbox", id: "show-bios" });
  const bandBox = el("input", { type: "checkbox", id: "show-steps", checked: "" });
  controls.append(legend,
    el("label", {}, bandBox, " step bands"),
    el("label", {}, bioBox, " guest bios (", el("span", { class: "swatch", style: "background:" + COLORS.bios }),
      fmtInt(D.bios.t.length) + ")"),
    el("button", { id: "reset-zoom", type: "button" }, "zoom to the steps"),
    el("button", { id: "whole-trace", type: "button" }, "whole trace"));
  // "#bios" in the address turns the overlay on from the start (for links and tests).
  if (/\bbios\b/.test(location.hash)) bioBox.checked = true;
  app.append(controls);
  app.append(el("p", { class: "sub" }, "Each request is a bar from its first to its last sector at the time the device got it. " +
    "It opens on the steps (requests before them, such as the boot's partition scan, are under \u201cwhole trace\u201d). " +
    "Drag to zoom (both axes), double-click to zoom back to the steps; hover a mark for the request."));
  if (D.thinned.on)
    app.append(el("p", { class: "note" }, "Thinned for drawing: " + fmtInt(D.thinned.shown) + " of " + fmtInt(D.thinned.total) +
      " requests shown, one per mark per cell of a " + D.thinned.cells[0] + "\u00d7" + D.thinned.cells[1] +
      " time\u00d7sector grid; every faulted request and offender is kept. Histograms and tables count every request."));
  const wrap = el("div", { class: "plot-wrap" });
  const tip = el("div", { id: "tooltip" });
  wrap.append(tip);
  app.append(wrap);

  let tMax = 1, sMax = 1;
  for (const m of marks)
    for (let i = 0; i < m.t.length; i++) {
      if (m.t[i] > tMax) tMax = m.t[i];
      if (m.s[i] + m.n[i] > sMax) sMax = m.s[i] + m.n[i];
    }
  for (const st of D.steps) if (st.t_end != null && st.t_end > tMax) tMax = st.t_end;
  tMax = tMax / 1000;
  // The steps' span, with a margin: what the run was about.
  const spans = D.steps.filter((st) => st.t_begin != null && st.t_end != null);
  let view = [0, tMax * 1.02];
  if (spans.length) {
    const a = Math.min(...spans.map((st) => st.t_begin)) / 1000, b = Math.max(...spans.map((st) => st.t_end)) / 1000;
    const pad = Math.max((b - a) * 0.03, 0.05);
    view = [Math.max(0, a - pad), b + pad];
  }

  // Each mark draws its requests straight onto uPlot's canvas as pixel-aligned
  // bars: no per-point objects, so a few hundred thousand draw in one pass.
  function drawBars(u, si) {
    const m = marks[si - 1];
    const ctx = u.ctx, px = devicePixelRatio || 1;
    const sx = u.scales.x, sy = u.scales.y;
    const big = m.name === "faulted";
    const w = Math.max(2, Math.round((big ? 5 : 3) * px)), minH = Math.max(2, Math.round((big ? 5 : 3) * px));
    const left = u.bbox.left, top = u.bbox.top, right = left + u.bbox.width, bottom = top + u.bbox.height;
    ctx.save();
    ctx.beginPath();
    ctx.rect(left, top, u.bbox.width, u.bbox.height);
    ctx.clip();
    ctx.fillStyle = COLORS[m.name];
    for (let i = 0; i < m.t.length; i++) {
      const t = m.t[i] / 1000;
      if (t < sx.min || t > sx.max) continue;
      const s0 = m.s[i], s1 = s0 + m.n[i];
      if (s1 < sy.min || s0 > sy.max) continue;
      const x = Math.round(u.valToPos(t, "x", true)) - (w >> 1);
      let y0 = Math.round(u.valToPos(s1, "y", true)), y1 = Math.round(u.valToPos(s0, "y", true));
      if (y1 - y0 < minH) { const c = (y0 + y1) >> 1; y0 = c - (minH >> 1); y1 = y0 + minH; }
      if (x > right || x + w < left || y1 < top || y0 > bottom) continue;
      ctx.fillRect(x, y0, w, y1 - y0);
    }
    ctx.restore();
    return null;
  }

  function drawBands(u) {
    if (!bandBox.checked) return;
    const ctx = u.ctx, px = devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    D.steps.forEach((st, k) => {
      if (st.t_begin == null || st.t_end == null) return;
      const x0 = u.valToPos(st.t_begin / 1000, "x", true), x1 = u.valToPos(st.t_end / 1000, "x", true);
      ctx.fillStyle = BANDS[k % 2];
      ctx.fillRect(x0, u.bbox.top, Math.max(1, x1 - x0), u.bbox.height);
    });
    ctx.restore();
  }

  function drawOverlays(u) {
    const ctx = u.ctx, px = devicePixelRatio || 1;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, u.bbox.top, u.bbox.width, u.bbox.height);
    ctx.clip();
    if (bandBox.checked) {
      ctx.font = Math.round(11 * px) + "px system-ui, sans-serif";
      ctx.fillStyle = "#1f2937";
      ctx.textBaseline = "top";
      ctx.textAlign = "left";
      D.steps.forEach((st, k) => {
        if (st.t_begin == null || st.t_end == null) return;
        const x0 = u.valToPos(st.t_begin / 1000, "x", true), x1 = u.valToPos(st.t_end / 1000, "x", true);
        const label = (st.index >= 0 ? "step " + st.index : "added") + " " + st.op;
        if (x1 - x0 > ctx.measureText(label).width + 4 * px || x1 - x0 > 30 * px)
          ctx.fillText(label, Math.min(Math.max(x0, u.bbox.left) + 3 * px, u.bbox.left + u.bbox.width - ctx.measureText(label).width - 3 * px),
            u.bbox.top + 3 * px + (k % 2) * 13 * px);
      });
    }
    if (bioBox.checked) {
      // Each bio beside its request: a thin bar over its sectors with a tick at its start.
      const b = D.bios, off = Math.round(4 * px), tick = Math.round(3 * px);
      ctx.fillStyle = COLORS.bios;
      for (let i = 0; i < b.t.length; i++) {
        const t = b.t[i] / 1000;
        if (t < u.scales.x.min || t > u.scales.x.max) continue;
        const x = Math.round(u.valToPos(t, "x", true)) + off;
        const y0 = Math.round(u.valToPos(b.s[i] + b.n[i], "y", true)), y1 = Math.round(u.valToPos(b.s[i], "y", true));
        ctx.fillRect(x, y0, Math.max(1, Math.round(px)), Math.max(1, y1 - y0));
        ctx.fillRect(x, y1 - Math.max(1, Math.round(px)), tick, Math.max(1, Math.round(px)));
      }
    }
    // The first offender of each failed expectation: a ring and its name.
    ctx.strokeStyle = COLORS.offender;
    ctx.fillStyle = COLORS.offender;
    ctx.lineWidth = Math.max(2, Math.round(2 * px));
    ctx.font = "bold " + Math.round(12 * px) + "px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    const right = u.bbox.left + u.bbox.width;
    for (const o of D.offenders) {
      if (o.t == null) continue;
      const x = u.valToPos(o.t / 1000, "x", true);
      const y = u.valToPos(o.s + o.n / 2, "y", true);
      const r = Math.round(9 * px);
      ctx.beginPath();
      ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.stroke();
      const label = "first offender: " + o.property + " (seq " + o.seq + ")";
      const after = x + r + 4 * px + ctx.measureText(label).width < right;
      ctx.textAlign = after ? "left" : "right";
      ctx.fillText(label, after ? x + r + 4 * px : x - r - 4 * px, y);
    }
    ctx.restore();
  }

  const fmtSector = (v) => (v >= 1e9 ? (v / 1e9).toFixed(2) + "G" : v >= 1e6 ? (v / 1e6).toFixed(2) + "M" : v >= 1e4 ? (v / 1e3).toFixed(0) + "K" : String(Math.round(v)));
  // The content box's width (app's padding excluded).
  const width = () => {
    const cs = getComputedStyle(app);
    return Math.max(600, Math.min(app.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight), 1600));
  };
  let plot = null;
  const shown = Object.fromEntries(marks.map((m) => [m.name, true]));
  if (marks.length === 0) {
    wrap.append(el("p", { class: "note" }, "The device saw no requests outside the marker reads."));
  } else {
    const opts = {
      mode: 2,
      width: width(),
      height: 440,
      legend: { show: false },
      cursor: { drag: { x: true, y: true, uni: 20 }, points: { show: false } },
      scales: {
        x: { time: false, range: (u, lo, hi) => [lo == null ? 0 : lo, hi == null ? tMax * 1.02 : hi] },
        y: { range: (u, lo, hi) => [lo == null ? 0 : lo, hi == null ? sMax * 1.03 : hi] },
      },
      axes: [
        { label: "device time (ms since the trace started)", stroke: "#374151", grid: { stroke: "#f3f4f6" } },
        { label: "sector", size: 70, stroke: "#374151", grid: { stroke: "#f3f4f6" }, values: (u, vs) => vs.map(fmtSector) },
      ],
      series: [{}, ...marks.map((m) => ({ label: LABELS[m.name], stroke: COLORS[m.name], fill: COLORS[m.name],
        facets: [{ scale: "x", auto: false }, { scale: "y", auto: false }], paths: drawBars, points: { show: false } }))],
      hooks: { drawClear: [drawBands], draw: [drawOverlays, (u) => finish(u)], setCursor: [showTip] },
    };
    const data = [null, ...marks.map((m) => [m.t.map((t) => t / 1000), m.s])];
    plot = new uPlot(opts, data, wrap);
    plot.setScale("x", { min: view[0], max: view[1] });
    plot.setScale("y", { min: 0, max: sMax * 1.03 });
    for (const m of marks) {
      const item = el("span", { class: "item", "data-mark": m.name },
        el("span", { class: "swatch", style: "background:" + COLORS[m.name] }), LABELS[m.name] + " (" + fmtInt(m.count) + ")");
      item.addEventListener("click", () => {
        shown[m.name] = !shown[m.name];
        item.classList.toggle("off", !shown[m.name]);
        plot.series[marks.indexOf(m) + 1].show = shown[m.name];
        plot.redraw(false);
      });
      legend.append(item);
    }
    const zoom = (x0, x1) => { plot.setScale("x", { min: x0, max: x1 }); plot.setScale("y", { min: 0, max: sMax * 1.03 }); };
    const reset = () => zoom(view[0], view[1]);
    document.getElementById("reset-zoom").addEventListener("click", reset);
    document.getElementById("whole-trace").addEventListener("click", () => zoom(0, tMax * 1.02));
    plot.over.addEventListener("dblclick", reset);
    bioBox.addEventListener("change", () => plot.redraw(false));
    bandBox.addEventListener("change", () => plot.redraw(false));
    window.addEventListener("resize", () => plot.setSize({ width: width(), height: 440 }));
  }

  // The nearest request under the cursor (a plain scan: it runs on mouse moves only).
  function showTip(u) {
    const { left, top } = u.cursor;
    if (left == null || left < 0) { tip.style.display = "none"; return; }
    let best = null, bestD = 64;
    marks.forEach((m, k) => {
      if (!shown[m.name]) return;
      for (let i = 0; i < m.t.length; i++) {
        const x = u.valToPos(m.t[i] / 1000, "x"), dx = x - left;
        if (dx * dx > bestD) continue;
        const y0 = u.valToPos(m.s[i] + m.n[i], "y"), y1 = u.valToPos(m.s[i], "y");
        const dy = top < y0 ? y0 - top : top > y1 ? top - y1 : 0;
        const d = dx * dx + dy * dy;
        if (d <= bestD) { bestD = d; best = [m, i]; }
      }
    });
    if (!best) { tip.style.display = "none"; return; }
    const [m, i] = best;
    tip.textContent = "seq " + m.seq[i] + "  " + m.name + (m.step[i] >= 0 ? "  step " + m.step[i] : "") +
      "\nsector " + fmtInt(m.s[i]) + " + " + fmtInt(m.n[i]) + "\nt " + fmtMs(m.t[i]) + " ms, latency " + fmtInt(m.lat[i]) + " us";
    tip.style.display = "block";
    tip.style.left = (u.bbox.left / (devicePixelRatio || 1) + left + 14) + "px";
    tip.style.top = (top + 10) + "px";
  }

  // Histograms over every request (computed when the page was written).
  app.append(el("h2", {}, "Request size and latency"));
  const hists = el("div", { class: "hists" });
  app.append(hists);
  function histogram(title, h, xlabel) {
    const box = el("div", {}, el("div", {}, el("b", {}, title)));
    hists.append(box);
    const names = Object.keys(h.series);
    if (!names.length) { box.append(el("p", { class: "sub" }, "no requests")); return; }
    const xs = h.labels.map((_, i) => i);
    // Grouped bars: op k of K takes the k-th slice of each bucket's 0.9 width.
    const bw = 0.9 / names.length;
    const barsOf = (k) => uPlot.paths.bars({ disp: {
      x0: { unit: 1, values: () => xs.map((i) => i - 0.45 + k * bw) },
      size: { unit: 1, values: () => [bw] } } });
    new uPlot({
      width: 560, height: 260,
      legend: { show: true, live: false },
      cursor: { show: false },
      scales: { x: { time: false, range: [-0.6, xs.length - 0.4] }, y: { range: (u, lo, hi) => [0, Math.max(1, hi * 1.08)] } },
      axes: [{ label: xlabel, space: 44,
        // A label on whole buckets only, every stride-th one so they do not overlap.
        splits: (u, ai, lo, hi, incr) => xs.filter((i) => i % Math.max(1, Math.ceil(incr)) === 0),
        values: (u, vs) => vs.map((v) => h.labels[v] ?? "") },
        { label: "requests", size: (u, vs) => 30 + 7 * Math.max(3, ...(vs || []).map((v) => String(v).length)) }],
      series: [{}, ...names.map((n, k) => ({ label: n, stroke: COLORS[n], fill: COLORS[n] + "cc", width: 1,
        points: { show: false }, paths: barsOf(k) }))],
    }, [xs, ...names.map((n) => h.series[n])], box);
  }
  histogram("Request size (bytes, log2 buckets)", D.hist.size, "bytes");
  histogram("Latency (submit to complete, log2 buckets)", D.hist.latency, "latency");

  // Steps.
  app.append(el("h2", {}, "Steps"));
  app.append(table(["step", "op", "path", "verdict", "ret", "device requests", "from (ms)", "to (ms)"],
    D.steps.map((st) => [
      st.index >= 0 ? st.index : "(run)", st.op, st.path,
      el("td", { class: st.verdict === "ok" ? "ok" : st.verdict === "failed" || st.verdict === "did not run" ? "bad" : "" },
        st.verdict + ((st.failed_checks || []).length ? ": " + st.failed_checks.join("; ") : "")),
      num(st.ran ? st.ret + (st.error ? " " + st.error : "") : ""), num(fmtInt(st.requests)), num(fmtMs(st.t_begin)), num(fmtMs(st.t_end)),
    ])));

  // Expectations, each offender a link that zooms the plot onto it.
  app.append(el("h2", {}, "Expectations"));
  if (!D.expect.length) app.append(el("p", { class: "sub" }, "No [[expect]] tables."));
  else {
    const focus = (seq) => {
      const o = D.offenders.find((x) => x.seq === seq);
      if (!plot || !o || o.t == null) return;
      const t = o.t / 1000, dt = Math.max(tMax / 200, 0.05), ds = Math.max(sMax / 100, o.n * 4, 64);
      plot.setScale("x", { min: t - dt, max: t + dt });
      plot.setScale("y", { min: Math.max(0, o.s - ds), max: o.s + o.n + ds });
      wrap.scrollIntoView();
    };
    app.append(table(["expectation", "property", "verdict", "offenders", "first offender", "message"],
      D.expect.map((e) => [e.where, e.property, el("td", { class: e.ok ? "ok" : "bad" }, e.ok ? "PASS" : "FAIL"), num(fmtInt(e.offenders)),
        e.offender_seq == null ? "" : el("td", {}, el("a", { class: "seq", onclick: () => focus(e.offender_seq) }, "seq " + e.offender_seq)),
        e.message])));
  }

  app.append(el("h2", {}, "Findings"));
  if (!D.findings.length) app.append(el("p", { class: "sub" }, "None: the guest's requests and the device's agree."));
  for (const f of D.findings) app.append(el("pre", { class: "finding" }, f));
  if (D.notes.length) {
    app.append(el("h2", {}, "Notes"));
    for (const n of D.notes) app.append(el("pre", { class: "finding", style: "border-color:#9ca3af" }, n));
  }

  // For tests and tools: what was drawn, and where the plot is on the page.
  // uPlot draws in a microtask after this script, so the plot reports from its draw hook.
  for (const m of D.marks) body.dataset["points" + m.name[0].toUpperCase() + m.name.slice(1)] = m.t.length;
  body.dataset.steps = D.steps.length;
  body.dataset.offenders = D.offenders.length;
  body.dataset.bios = D.bios.t.length;
  finish(plot);
  function finish(u) {
    if (u) {
      const r = u.over.getBoundingClientRect();
      if (r.width === 0) return;  // not drawn yet: the draw hook calls again
      body.dataset.plotBox = [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height].map(Math.round).join(",");
    }
    body.dataset.drawnMs = Math.round(performance.now());  // since navigation started: the page's load time
    if (body.dataset.state !== "error") body.dataset.state = "drawn";
  }
})();
