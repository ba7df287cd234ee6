// Fleet: every host and every GPU as a tile, live. Built once, then updated in place (only
// changed texts and classes are touched), so a fleet of thousands of GPUs stays responsive.

import { api, can } from "../api.js";
import { ago, badge, button, h, replace, setText, status } from "../dom.js";
import { every } from "../live.js";
import { keyboardGrid, legend, tile, updateTile } from "../tiles.js";
import { utilizationChart } from "./charts.js";

const REFRESH_MS = 5000;

export async function mount(root, _params, ctx) {
  const started = performance.now();
  const summary = h("div.summary", { "aria-live": "off" });
  const search = h("input", { type: "search", id: "fleet-filter", placeholder: "host or model", "aria-label": "Filter by host name or GPU model" });
  const gpuStatus = h(
    "select",
    { id: "fleet-status", "aria-label": "Filter by GPU status" },
    ["all GPUs", "problems", "available", "allocated", "unhealthy", "maintenance", "offline"].map((s) => h("option", { value: s }, s)),
  );
  const grid = h("div.fleet", { id: "fleet-grid" });
  const chart = h("div.chart-slot");
  replace(
    root,
    h("h1", null, "Fleet"),
    summary,
    h("div.toolbar", null, search, gpuStatus, legend()),
    chart,
    grid,
  );
  keyboardGrid(grid);

  const cards = new Map(); // host id -> {el, host, tiles: Map(gpu id -> el), parts}
  let shape = null; // the hosts and GPUs shown, to know when to build the grid again

  function hostCard(host) {
    const name = h("a", { href: `#/hosts/${host.id}` }, host.name);
    const st = h("span");
    const beat = h("span.muted");
    const actions = h("span.actions");
    const tiles = new Map();
    const row = h("div.tiles", { "aria-label": `GPUs of ${host.name}` });
    host.gpus.forEach((g, i) => {
      const t = tile(g, host);
      if (i === 0) t.tabIndex = 0;
      tiles.set(g.id, t);
      row.appendChild(t);
    });
    const el = h(
      "section.host",
      { dataset: { id: host.id } },
      h("header", null, h("h2", null, name), st, host.simulated ? badge("SIMULATED", "sim") : null, beat, actions),
      host.gpus.length ? row : h("p.muted", null, "no GPUs"),
    );
    const card = { el, host, tiles, parts: { st, beat, actions }, status: null };
    updateCard(card, host);
    return card;
  }

  function updateCard(card, host) {
    card.host = host;
    const p = card.parts;
    if (card.status !== host.status) {
      replace(p.st, status(host.status));
      replace(p.actions, can("hosts.manage") ? hostActions(host) : []);
      card.status = host.status;
    }
    setText(p.beat, host.last_heartbeat_at ? `heartbeat ${ago(host.last_heartbeat_at)}` : "no heartbeat yet");
    if (host.status_reason) p.st.title = host.status_reason;
    for (const g of host.gpus) updateTile(card.tiles.get(g.id), g, host);
  }

  function hostActions(host) {
    const post = (what, path, body) => () => ctx.act(`${what} ${host.name}`, () => api(path, { method: "POST", body })).then(refresh);
    const out = [];
    if (host.status === "ready") out.push(button("Drain", post("drain", `/v1/hosts/${host.id}/drain`, {}), "small"));
    if (host.status === "draining") out.push(button("Undrain", post("undrain", `/v1/hosts/${host.id}/undrain`), "small"));
    if (host.status === "maintenance") out.push(button("End maintenance", post("end maintenance of", `/v1/hosts/${host.id}/maintenance`, { on: false }), "small"));
    else if (host.status !== "unreachable") out.push(button("Maintenance", post("maintenance of", `/v1/hosts/${host.id}/maintenance`, { on: true }), "small"));
    return out;
  }

  function renderSummary(hosts) {
    const byHost = {};
    const byGpu = {};
    let sampled = 0;
    let util = 0;
    let gpus = 0;
    let sim = 0;
    for (const host of hosts) {
      byHost[host.status] = (byHost[host.status] || 0) + 1;
      for (const g of host.gpus) {
        gpus += 1;
        byGpu[g.status] = (byGpu[g.status] || 0) + 1;
        if (g.simulated) sim += 1;
        if (g.utilization_pct !== null) {
          sampled += 1;
          util += g.utilization_pct;
        }
      }
    }
    const list = (o) => Object.entries(o).map(([k, v]) => `${v} ${k}`).join(", ") || "none";
    replace(
      summary,
      h("div", null, h("strong", null, `${hosts.length} hosts`), ` (${list(byHost)})`),
      h("div", null, h("strong", null, `${gpus} GPUs`), ` (${list(byGpu)})`, sim ? `, ${sim} simulated` : ""),
      h("div", null, h("strong", null, sampled ? `${(util / sampled).toFixed(1)}% average utilization` : "no recent samples"), sampled ? ` over ${sampled} GPUs sampled in the last 5 minutes` : ""),
    );
  }

  function applyFilter() {
    const q = search.value.trim().toLowerCase();
    const s = gpuStatus.value;
    for (const card of cards.values()) {
      const host = card.host;
      let show = !q || host.name.toLowerCase().includes(q) || host.gpus.some((g) => g.model.toLowerCase().includes(q));
      if (show && s !== "all GPUs") {
        show = s === "problems" ? host.status !== "ready" || host.gpus.some((g) => ["unhealthy", "offline", "maintenance"].includes(g.status) || g.foreign_usage) : host.gpus.some((g) => g.status === s);
      }
      card.el.hidden = !show;
    }
  }

  async function refresh() {
    const t0 = performance.now();
    const data = await api("/v1/fleet");
    const fetched = performance.now();
    const next = data.hosts.map((x) => x.id + ":" + x.gpus.map((g) => g.id).join(",")).join(";");
    if (next !== shape) {
      // Hosts or GPUs came or went: build the grid again (rare); otherwise update in place.
      cards.clear();
      const frag = document.createDocumentFragment();
      for (const host of data.hosts) {
        const card = hostCard(host);
        cards.set(host.id, card);
        frag.appendChild(card.el);
      }
      replace(grid, data.hosts.length ? frag : h("p.empty", null, "No hosts yet: start one with `gpufleet agent` (see `gpufleet hosts join-token`)."));
      shape = next;
    } else {
      for (const host of data.hosts) updateCard(cards.get(host.id), host);
    }
    renderSummary(data.hosts);
    applyFilter();
    // bench/dashboard.py reads these: the request, then the work on the page.
    performance.measure("fleet-fetch", { start: t0, end: fetched });
    performance.measure("fleet-apply", { start: fetched, end: performance.now() });
  }

  await refresh();
  // The benchmark (bench/dashboard.py) and the tests read this: first render, data included.
  performance.measure("fleet-render", { start: started, end: performance.now() });
  grid.dataset.rendered = "true";
  search.addEventListener("input", applyFilter);
  gpuStatus.addEventListener("change", applyFilter);
  const chartCtl = utilizationChart(chart, {}, ctx);
  const stopTimer = every(REFRESH_MS, refresh);
  const unsubscribe = ctx.live.subscribe((evs) => {
    if (evs.some((e) => e.entity_type === "host" || e.entity_type === "gpu")) refresh().catch(() => {});
  });
  return {
    dispose() {
      stopTimer();
      unsubscribe();
      chartCtl.dispose();
    },
  };
}
