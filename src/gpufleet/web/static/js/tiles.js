// GPU tiles, shared by the fleet and host pages: colour by utilization, and the same facts as
// text (utilization %, memory, temperature, health), so nothing depends on seeing colour.

import { gb, h, num, setText } from "./dom.js";

const HEALTH = { available: "free", allocated: "in use", unhealthy: "UNHEALTHY", maintenance: "maint.", offline: "offline" };

export function utilClass(gpu) {
  if (gpu.utilization_pct === null || gpu.utilization_pct === undefined) return "u-none";
  return "u" + Math.min(10, Math.floor(gpu.utilization_pct / 10));
}

function label(gpu, host) {
  const parts = [`${host ? host.name + " " : ""}GPU ${gpu.index}`, gpu.model, gpu.status];
  if (gpu.status_reason) parts.push(gpu.status_reason);
  if (gpu.utilization_pct === null || gpu.utilization_pct === undefined) parts.push("no recent sample");
  else {
    parts.push(`${num(gpu.utilization_pct)}% utilization`);
    parts.push(`memory ${gb(gpu.memory_used_mb)} of ${gb(gpu.memory_mb)} GB`);
    if (gpu.temperature_c !== null) parts.push(`${num(gpu.temperature_c)} °C`);
    if (gpu.power_w !== null) parts.push(`${num(gpu.power_w)} W`);
  }
  if (gpu.allocated_milli) parts.push(`${gpu.allocated_milli / 10}% allocated`);
  if (gpu.foreign_usage) parts.push(`foreign usage: ${gpu.foreign_usage}`);
  if (gpu.simulated) parts.push("simulated");
  return parts.join(", ");
}

function classes(gpu) {
  return `tile ${utilClass(gpu)} g-${gpu.status}${gpu.simulated ? " sim" : ""}${gpu.foreign_usage ? " foreign" : ""}`;
}

/** A tile: a link to the GPU's page, reachable by arrow keys (see keyboardGrid). */
export function tile(gpu, host) {
  const util = h("span.util");
  const mem = h("span.mem");
  const temp = h("span.temp");
  const health = h("span.health");
  const el = h(
    "a",
    { href: `#/gpus/${gpu.id}`, tabindex: "-1", dataset: { id: gpu.id } },
    h("span.idx", { "aria-hidden": "true" }, String(gpu.index)),
    util,
    mem,
    temp,
    health,
  );
  el._parts = { util, mem, temp, health };
  updateTile(el, gpu, host);
  return el;
}

export function updateTile(el, gpu, host) {
  const cls = classes(gpu);
  if (el.className !== cls) el.className = cls;
  const p = el._parts;
  const sampled = gpu.utilization_pct !== null && gpu.utilization_pct !== undefined;
  setText(p.util, sampled ? `${num(gpu.utilization_pct)}%` : "–");
  setText(p.mem, sampled ? `${gb(gpu.memory_used_mb)}/${gb(gpu.memory_mb)}G` : `${gb(gpu.memory_mb)}G`);
  setText(p.temp, sampled && gpu.temperature_c !== null ? `${num(gpu.temperature_c)}°C` : "");
  setText(p.health, (HEALTH[gpu.status] || gpu.status) + (gpu.simulated ? " · sim" : ""));
  const text = label(gpu, host);
  if (el.getAttribute("aria-label") !== text) {
    el.setAttribute("aria-label", text);
    el.title = text;
  }
}

/**
 * Arrow keys move between tiles: left/right within a host, up/down to the next host's tile at
 * the same position; Home/End to a host's first and last. One tile per host is a Tab stop.
 */
export function keyboardGrid(container) {
  container.addEventListener("keydown", (e) => {
    const t = e.target.closest("a.tile");
    if (!t) return;
    const row = t.parentElement;
    const tiles = [...row.children];
    const i = tiles.indexOf(t);
    let next = null;
    if (e.key === "ArrowRight") next = tiles[i + 1];
    else if (e.key === "ArrowLeft") next = tiles[i - 1];
    else if (e.key === "Home") next = tiles[0];
    else if (e.key === "End") next = tiles[tiles.length - 1];
    else if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      const rows = [...container.querySelectorAll(".tiles")].filter((r) => !r.closest("[hidden]"));
      const j = rows.indexOf(row) + (e.key === "ArrowDown" ? 1 : -1);
      if (rows[j]) next = rows[j].children[Math.min(i, rows[j].children.length - 1)];
    }
    if (next) {
      e.preventDefault();
      t.tabIndex = -1;
      next.tabIndex = 0;
      next.focus();
    }
  });
}

export function legend() {
  const steps = [0, 2, 4, 6, 8, 10].map((k) => h("li", null, h("span.swatch.u" + k, { "aria-hidden": "true" }), `${k * 10}%`));
  return h(
    "ul.legend",
    { "aria-label": "Tile colour: GPU utilization; every tile also shows it as a number" },
    h("li", null, "utilization:"),
    steps,
    h("li", null, h("span.swatch.u-none", { "aria-hidden": "true" }), "no recent sample"),
    h("li", null, h("span.swatch.g-unhealthy", { "aria-hidden": "true" }), "unhealthy (red frame)"),
  );
}
