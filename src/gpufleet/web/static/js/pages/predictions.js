// Predictions and deployments (Replicate's shapes): replicas, queue depth and latency. Until the
// server has the predictions API (404), the page says there are none yet.

import { api, ApiError } from "../api.js";
import { ago, h, replace, short, status, table } from "../dom.js";
import { every } from "../live.js";

function replicas(d) {
  const r = d.replicas;
  if (r === undefined || r === null) return "–";
  if (typeof r === "number") return String(r);
  if (Array.isArray(r)) {
    const ready = r.filter((x) => x && x.status === "ready").length;
    return `${ready} ready of ${r.length}`;
  }
  if (typeof r === "object") return Object.entries(r).map(([k, v]) => `${v} ${k}`).join(", ");
  return String(r);
}

function queueOf(d) {
  if (typeof d.queued === "number") {
    const age = d.oldest_queued_s;
    return age ? `${d.queued} (oldest ${Number(age).toFixed(1)} s)` : String(d.queued);
  }
  const q = d.queue;
  if (q === undefined || q === null) return "–";
  if (typeof q === "number") return String(q);
  if (typeof q === "object") return Object.entries(q).map(([k, v]) => `${v} ${k}`).join(", ");
  return String(q);
}

function seconds(x) {
  return x === null || x === undefined ? "–" : `${Number(x).toFixed(2)} s`;
}

function quantile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export async function mount(root, _params, ctx) {
  const body = h("div");
  replace(root, h("h1", null, "Predictions and deployments"), body);

  async function refresh() {
    let deployments;
    let predictions;
    try {
      [deployments, predictions] = await Promise.all([api("/v1/deployments"), api("/v1/predictions")]);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        replace(body, h("p.empty", { id: "no-predictions" }, "No predictions yet: this server has no predictions API, or nothing has been deployed."));
        return;
      }
      throw err;
    }
    const preds = predictions.results || [];
    const byModel = {};
    for (const p of preds) {
      const t = p.metrics && p.metrics.predict_time;
      if (typeof t === "number") (byModel[p.model] = byModel[p.model] || []).push(t);
    }
    const deps = deployments.results || [];
    replace(
      body,
      h("h2", null, "Deployments"),
      table(
        ["deployment", "model", "version", "hardware", "instances", "replicas", "queue", "predict time p50 / p95"],
        deps.map((d) => {
          const rel = d.current_release || {};
          const conf = rel.configuration || {};
          const times = byModel[rel.model] || [];
          return [
            `${d.owner}/${d.name}`,
            rel.model || "–",
            rel.version ? short(rel.version) : "–",
            conf.hardware || "–",
            `${conf.min_instances ?? "–"}–${conf.max_instances ?? "–"}`,
            replicas(d),
            queueOf(d),
            times.length ? `${seconds(quantile(times, 0.5))} / ${seconds(quantile(times, 0.95))}` : "–",
          ];
        }),
        { empty: "No deployments." },
      ),
      h("h2", null, "Recent predictions"),
      table(
        ["id", "model", "status", "created", "queued", "predict time", "error"],
        preds.map((p) => [
          short(p.id),
          p.model || "–",
          status(p.status),
          ago(p.created_at),
          p.started_at ? seconds((new Date(p.started_at) - new Date(p.created_at)) / 1000) : "–",
          seconds(p.metrics && p.metrics.predict_time),
          p.error ? String(p.error).slice(0, 200) : "",
        ]),
        { empty: "No predictions yet." },
      ),
    );
  }

  await refresh();
  const stop = every(5000, refresh);
  return { dispose: stop };
}
