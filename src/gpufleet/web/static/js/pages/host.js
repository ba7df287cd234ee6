// One host (its facts, GPUs and chart; drain and maintenance for admins) and one GPU (its facts,
// chart; maintenance and clearing health for admins).

import { api, can } from "../api.js";
import { ago, badge, button, gb, h, link, money, replace, status, when } from "../dom.js";
import { every } from "../live.js";
import { keyboardGrid, tile } from "../tiles.js";
import { utilizationChart } from "./charts.js";

function facts(pairs) {
  return h("dl.facts", null, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [h("dt", null, k), h("dd", null, v)]));
}

// The page's first render, then its refresh every `ms` and its utilization chart of `scope` until disposed.
async function liveWithChart(refresh, ms, chart, scope, ctx) {
  await refresh();
  const chartCtl = utilizationChart(chart, scope, ctx);
  const stop = every(ms, refresh);
  return {
    dispose() {
      stop();
      chartCtl.dispose();
    },
  };
}

export async function mountHost(root, { id }, ctx) {
  const head = h("div");
  const tiles = h("div.fleet");
  const chart = h("div.chart-slot");
  replace(root, head, tiles, chart);
  keyboardGrid(tiles);

  async function refresh() {
    const [host, fleet] = await Promise.all([api(`/v1/hosts/${id}`), api("/v1/fleet")]);
    const live = fleet.hosts.find((x) => x.id === id);
    const post = (what, path, body) => () => ctx.act(`${what} ${host.name}`, () => api(path, { method: "POST", body })).then(refresh);
    const actions = [];
    if (can("hosts.manage")) {
      if (host.status === "ready") actions.push(button("Drain", post("drain", `/v1/hosts/${id}/drain`, {})));
      if (host.status === "draining") actions.push(button("Undrain", post("undrain", `/v1/hosts/${id}/undrain`)));
      if (host.status === "maintenance") actions.push(button("End maintenance", post("end maintenance of", `/v1/hosts/${id}/maintenance`, { on: false })));
      else if (host.status !== "unreachable" && !host.removed_at) actions.push(button("Maintenance", post("maintenance of", `/v1/hosts/${id}/maintenance`, { on: true })));
    }
    replace(
      head,
      h("p.crumbs", null, link("#/fleet", "Fleet"), " / host"),
      h("h1", null, host.name, " ", status(host.status), host.simulated ? badge("SIMULATED", "sim") : null),
      host.status_reason ? h("p", null, host.status_reason) : null,
      h("div.actions", null, actions),
      facts([
        ["hostname", host.hostname],
        ["heartbeat", ago(host.last_heartbeat_at)],
        ["OS", `${host.os} ${host.kernel} (${host.arch})`],
        ["CPU", `${host.cpu_cores} cores, ${host.cpu_milli_allocated / 1000} allocated`],
        ["RAM", `${gb(host.ram_mb)} GB, ${gb(host.ram_mb_allocated)} GB allocated`],
        ["driver / CUDA", `${host.driver_version || "–"} / ${host.cuda_version || "–"}`],
        ["agent", host.agent_version],
        ["labels", Object.entries(host.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")],
        ["registered", when(host.registered_at)],
      ]),
    );
    const row = h("div.tiles", { "aria-label": `GPUs of ${host.name}` });
    (live ? live.gpus : []).forEach((g, i) => {
      const t = tile(g, live);
      if (i === 0) t.tabIndex = 0;
      row.appendChild(t);
    });
    replace(tiles, h("h2", null, "GPUs"), row.children.length ? row : h("p.empty", null, "no GPUs"));
  }

  return liveWithChart(refresh, 5000, chart, { hostId: id }, ctx);
}

export async function mountGpu(root, { id }, ctx) {
  const head = h("div");
  const chart = h("div.chart-slot");
  replace(root, head, chart);

  async function refresh() {
    const gpu = await api(`/v1/gpus/${id}`);
    const post = (what, path, body) => () => ctx.act(`${what} GPU ${gpu.index}`, () => api(path, { method: "POST", body })).then(refresh);
    const actions = [];
    if (can("gpus.manage")) {
      if (gpu.status === "maintenance") actions.push(button("End maintenance", post("end maintenance of", `/v1/gpus/${id}/maintenance`, { on: false })));
      else if (gpu.status !== "offline") actions.push(button("Maintenance", post("maintenance of", `/v1/gpus/${id}/maintenance`, { on: true })));
      if (gpu.status === "unhealthy") actions.push(button("Clear health", post("clear health of", `/v1/gpus/${id}/clear-health`)));
    }
    replace(
      head,
      h("p.crumbs", null, link("#/fleet", "Fleet"), " / ", link(`#/hosts/${gpu.host_id}`, "host"), " / GPU"),
      h("h1", null, `GPU ${gpu.index} · ${gpu.model} `, status(gpu.status), gpu.simulated ? badge("SIMULATED", "sim") : null),
      gpu.status_reason ? h("p", null, gpu.status_reason) : null,
      gpu.foreign_usage ? h("p.warn", null, "Foreign usage: ", gpu.foreign_usage) : null,
      h("div.actions", null, actions),
      facts([
        ["UUID", gpu.uuid],
        ["memory", `${gb(gpu.memory_mb)} GB, ${gb(gpu.allocated_memory_mb)} GB allocated`],
        ["allocated", `${gpu.allocated_milli / 10}% of the GPU`],
        ["PCI bus", gpu.pci_bus_id],
        ["driver", gpu.driver_version],
        ["price", gpu.hourly_price === null ? null : `${money(gpu.hourly_price)} per hour`],
        ["XID errors", gpu.xid_errors_last],
        ["last seen", ago(gpu.last_seen_at)],
      ]),
    );
  }

  return liveWithChart(refresh, 10_000, chart, { gpuId: id }, ctx);
}
