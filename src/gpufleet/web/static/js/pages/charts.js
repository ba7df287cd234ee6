// Utilization over time, from the metrics API: the fleet (or a model), one host, or one GPU,
// in 1m, 5m or 1h buckets. Redrawn every minute while shown.

import { api } from "../api.js";
import { h, replace, table, when } from "../dom.js";
import { lineChart, points } from "../chart.js";
import { every } from "../live.js";

const RANGES = [
  { label: "last hour, 1-minute buckets", hours: 1, bucket: "1m" },
  { label: "last 6 hours, 5-minute buckets", hours: 6, bucket: "5m" },
  { label: "last 7 days, hourly buckets", hours: 24 * 7, bucket: "1h" },
];
const FIELDS = [
  { key: "utilization_pct", label: "utilization", unit: "%", max: 100 },
  { key: "memory_used_mb", label: "memory used", unit: " MB" },
  { key: "temperature_c", label: "temperature", unit: " °C" },
  { key: "power_w", label: "power", unit: " W" },
];

/** scope: {gpuId} | {hostId} | {} (the fleet; a model filter is offered). */
export function utilizationChart(slot, scope, ctx) {
  const range = h("select", { "aria-label": "Chart range" }, RANGES.map((r, i) => h("option", { value: i }, r.label)));
  const field = h("select", { "aria-label": "Chart measure" }, FIELDS.map((f, i) => h("option", { value: i }, f.label)));
  const model = scope.gpuId || scope.hostId ? null : h("input", { type: "search", placeholder: "all models", "aria-label": "Chart: only GPUs of this model" });
  const body = h("div.chart-body", null, h("p.muted", null, "loading the chart…"));
  const data = h("details.data", null, h("summary", null, "Chart data as a table"));
  replace(slot, h("div.toolbar", null, h("span", null, "Chart:"), field, range, model), body, data);
  let seq = 0;

  async function draw() {
    const r = RANGES[Number(range.value)];
    const f = FIELDS[Number(field.value)];
    const end = new Date();
    const start = new Date(end.getTime() - r.hours * 3600_000);
    const params = { start: start.toISOString(), end: end.toISOString(), bucket: r.bucket, agg: "avg" };
    const mine = ++seq;
    let series;
    let title;
    if (scope.gpuId) {
      series = await api(`/v1/gpus/${scope.gpuId}/metrics`, { params });
      title = `GPU ${f.label}`;
    } else {
      series = await api("/v1/fleet/metrics", { params: { ...params, host_id: scope.hostId, model: model && model.value.trim() } });
      title = `${scope.hostId ? "Host" : "Fleet"} ${f.label}, average over ${series.gpus} GPU${series.gpus === 1 ? "" : "s"}`;
    }
    if (mine !== seq) return; // a newer request was made meanwhile
    replace(body, lineChart([{ name: f.label, points: points(series.points, f.key) }], { title, unit: f.unit, max: f.max, start: start.getTime(), end: end.getTime() }));
    const rows = series.points.slice(-60).map((p) => [when(p.ts), p[f.key] === null ? "–" : p[f.key].toFixed(1) + f.unit, String(p.samples)]);
    replace(data, h("summary", null, "Chart data as a table (latest 60 points)"), table(["bucket start", f.label, "samples"], rows, { empty: "no samples" }));
  }

  const redraw = () =>
    draw().catch((err) => {
      replace(body, h("p.error", null, `The chart could not load: ${err.message || err}`));
    });
  range.addEventListener("change", redraw);
  field.addEventListener("change", redraw);
  if (model) model.addEventListener("change", redraw);
  redraw();
  const stop = every(60_000, draw);
  return { dispose: stop, redraw };
}
