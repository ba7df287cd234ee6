// Charts drawn as SVG here (no chart library): a time series and horizontal bars. Each chart
// carries a text alternative (aria-label) and its numbers in a table beside it.

import { h } from "./dom.js";

const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children) if (c !== null && c !== undefined) el.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
  return el;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function timeLabel(t, spanMs) {
  const d = new Date(t);
  const iso = d.toISOString();
  if (spanMs > 2 * 86400_000) return iso.slice(5, 10) + " " + iso.slice(11, 16);
  return spanMs < 600_000 ? iso.slice(11, 19) : iso.slice(11, 16);
}

/**
 * A line chart of one or more series over time.
 * series: [{name, points: [{t: ms, v: number|null}], cls}]; opts: {title, unit, max, height, start, end (ms)}
 */
export function lineChart(series, { title, unit = "", max, height = 200, width = 960, start, end } = {}) {
  const pad = { l: 52, r: 28, t: 12, b: 24 };
  const all = series.flatMap((x) => x.points.filter((p) => p.v !== null && p.v !== undefined));
  const t0 = start ?? (all.length ? Math.min(...all.map((p) => p.t)) : Date.now() - 3600_000);
  const t1 = end ?? (all.length ? Math.max(...all.map((p) => p.t)) : Date.now());
  const span = Math.max(1, t1 - t0);
  const top = max ?? niceMax(Math.max(0, ...all.map((p) => p.v)));
  const x = (t) => pad.l + ((t - t0) / span) * (width - pad.l - pad.r);
  const y = (v) => pad.t + (1 - v / top) * (height - pad.t - pad.b);
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart",
    role: "img",
    "aria-label": summary(series, title, unit),
  });
  for (let i = 0; i <= 4; i++) {
    const v = (top * i) / 4;
    svg.appendChild(s("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "grid" }));
    svg.appendChild(s("text", { x: pad.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, `${+v.toFixed(1)}${unit}`));
  }
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (span * i) / 4;
    svg.appendChild(s("text", { x: x(t), y: height - 6, class: "axis", "text-anchor": "middle" }, timeLabel(t, span)));
  }
  series.forEach((one, k) => {
    let d = "";
    let pen = false;
    for (const p of one.points) {
      if (p.v === null || p.v === undefined) {
        pen = false;
        continue;
      }
      d += `${pen ? "L" : "M"}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`;
      pen = true;
    }
    svg.appendChild(s("path", { d, class: `line ${one.cls || "s" + k}` }));
    if (one.points.length === 1 && one.points[0].v !== null) {
      svg.appendChild(s("circle", { cx: x(one.points[0].t), cy: y(one.points[0].v), r: 3, class: `dot ${one.cls || "s" + k}` }));
    }
  });
  if (!all.length) svg.appendChild(s("text", { x: width / 2, y: height / 2, class: "axis", "text-anchor": "middle" }, "no samples in this range"));
  const legend = h("ul.legend", null, series.map((one, k) => h("li", null, h("span.key." + (one.cls || "s" + k), { "aria-hidden": "true" }), one.name)));
  return h("figure.chart", null, title ? h("figcaption", null, title) : null, svg, series.length > 1 ? legend : null);
}

function summary(series, title, unit) {
  const parts = series.map((one) => {
    const vals = one.points.map((p) => p.v).filter((v) => v !== null && v !== undefined);
    if (!vals.length) return `${one.name}: no samples`;
    const avg = vals.reduce((a, b) => a + b, 0) / vals.length;
    return `${one.name}: latest ${vals[vals.length - 1].toFixed(1)}${unit}, average ${avg.toFixed(1)}${unit}, peak ${Math.max(...vals).toFixed(1)}${unit}`;
  });
  return `${title || "chart"}. ${parts.join("; ")}`;
}

/** Horizontal bars: rows [{label, value, text}], each bar labelled with its number. */
export function barChart(rows, { title, width = 960 } = {}) {
  const rowH = 22;
  const labelW = 200;
  const height = Math.max(rowH, rows.length * rowH) + 4;
  const top = niceMax(Math.max(0, ...rows.map((r) => r.value)));
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    class: "chart bars",
    role: "img",
    "aria-label": `${title || "chart"}. ` + rows.map((r) => `${r.label}: ${r.text}`).join("; "),
  });
  rows.forEach((r, i) => {
    const y = i * rowH + 2;
    const w = Math.max(1, (r.value / top) * (width - labelW - 110));
    svg.appendChild(s("text", { x: labelW - 6, y: y + 15, class: "axis", "text-anchor": "end" }, clip(r.label, 28)));
    svg.appendChild(s("rect", { x: labelW, y: y + 3, width: w, height: rowH - 8, class: "bar" }));
    svg.appendChild(s("text", { x: labelW + w + 6, y: y + 15, class: "axis" }, r.text));
  });
  return h("figure.chart", null, title ? h("figcaption", null, title) : null, svg);
}

function clip(text, n) {
  const t = String(text);
  return t.length > n ? t.slice(0, n - 1) + "…" : t;
}

/** Samples of the metrics API as chart points. */
export function points(apiPoints, field) {
  return apiPoints.map((p) => ({ t: new Date(p.ts).getTime(), v: p[field] }));
}
