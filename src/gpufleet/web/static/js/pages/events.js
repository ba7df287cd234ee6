// Events (the organization's change feed, newest first, live) and, for admins, webhooks with
// their deliveries and every attempt.

import { api, can } from "../api.js";
import { every } from "../live.js";
import { actor, shortIds, button, h, link, replace, short, status, table, when } from "../dom.js";

const WINDOWS = [
  ["1", "last hour"],
  ["24", "last 24 hours"],
  ["168", "last 7 days"],
];
const KEEP = 300;
const OPEN = new Set(); // deliveries whose attempts are unfolded: kept open across refreshes

function linkTo(e) {
  const id = e.entity_id;
  if (e.entity_type === "job") return link(`#/jobs/${id}`, `job ${short(id)}`);
  if (e.entity_type === "host") return link(`#/hosts/${id}`, `host ${short(id)}`);
  if (e.entity_type === "gpu") return link(`#/gpus/${id}`, `gpu ${short(id)}`);
  return `${e.entity_type} ${short(id)}`;
}

function summary(data) {
  if (!data || typeof data !== "object") return "";
  const parts = [];
  if (data.from && data.to) parts.push(`${data.from} → ${data.to}`);
  for (const k of ["name", "reason", "url", "status"]) if (data[k] && typeof data[k] !== "object") parts.push(String(data[k]));
  return shortIds(parts.join("; ").slice(0, 300));
}

export async function mount(root, _params, ctx) {
  const windowSel = h("select", { id: "events-window", "aria-label": "Period" }, WINDOWS.map(([v, t]) => h("option", { value: v }, t)));
  const typeInput = h("input", { id: "events-type", type: "search", placeholder: "type, e.g. job.*", "aria-label": "Event type (exact, or a prefix like job.*)" });
  const feedSlot = h("div");
  const hooksSlot = h("div");
  replace(
    root,
    h("h1", null, "Events"),
    h("form.toolbar", { onsubmit: (e) => (e.preventDefault(), load()) }, windowSel, typeInput, h("button", { type: "submit" }, "Show")),
    feedSlot,
    can("webhooks.read") ? [h("h2", null, "Webhooks"), hooksSlot] : null,
  );
  windowSel.addEventListener("change", () => load());
  let events = [];

  function render() {
    replace(
      feedSlot,
      table(
        ["#", "when", "event", "object", "details", "by"],
        events.map((e) => [String(e.seq), when(e.created_at), e.type, linkTo(e), summary(e.data), actor(e.actor)]),
        { caption: `Newest first (at most ${KEEP})`, empty: "No events in this period." },
      ),
    );
  }

  async function load() {
    const since = new Date(Date.now() - Number(windowSel.value) * 3600_000).toISOString();
    const type = typeInput.value.trim() || undefined;
    let after = 0;
    let out = [];
    // Oldest first from `since`; read up to five pages and keep the newest.
    for (let i = 0; i < 5; i++) {
      const page = await api("/v1/events", { params: { after_seq: after, since, type, limit: 200 } });
      out = out.concat(page.events);
      if (page.events.length < 200) break;
      after = page.last_seq;
    }
    events = out.reverse().slice(0, KEEP);
    render();
  }

  await load();
  const unsubscribe = ctx.live.subscribe((evs) => {
    const type = typeInput.value.trim();
    const prefix = type.replace(/\*$/, "").replace(/\.$/, "");
    const fresh = evs.filter((e) => !type || e.type === type || e.type.startsWith(prefix + "."));
    if (!fresh.length) return;
    events = [...fresh.reverse(), ...events].slice(0, KEEP);
    render();
  });
  const watch = { stop: null };
  if (can("webhooks.read")) await webhooks(hooksSlot, ctx, watch);
  return {
    dispose() {
      unsubscribe();
      if (watch.stop) watch.stop();
    },
  };
}

async function webhooks(slot, ctx, watch) {
  const page = await api("/v1/webhooks", { params: { limit: 100 } });
  const detail = h("div", { id: "deliveries" });
  // The deliveries shown are read again every 5 s while open (retries come and go).
  const show = (w) => {
    if (watch.stop) watch.stop();
    const load = () => deliveries(w, detail, ctx);
    load();
    watch.stop = every(5000, load);
  };
  replace(
    slot,
    table(
      ["receiver", "events", "state", ""],
      page.items.map((w) => [
        w.url,
        w.event_types.length ? w.event_types.join(", ") : "all",
        w.enabled ? (w.failing_since ? h("span.st.st-failed", null, "failing since " + when(w.failing_since)) : status("enabled")) : h("span.st.st-disabled", null, "disabled: " + (w.disabled_reason || "")),
        button("Deliveries", () => show(w), "small"),
      ]),
      { empty: "No webhooks." },
    ),
    detail,
  );
}

async function deliveries(w, slot, ctx) {
  const page = await api(`/v1/webhooks/${w.id}/deliveries`, { params: { limit: 50 } });
  const redeliver = (d) => () =>
    ctx.act(`redeliver ${short(d.id)}`, () => api(`/v1/webhooks/${w.id}/deliveries/${d.id}/redeliver`, { method: "POST" })).then(() => deliveries(w, slot, ctx));
  replace(
    slot,
    h("h3", null, "Deliveries to ", w.url),
    table(
      ["event", "status", "attempts", "last answer", "created", "delivered", ""],
      page.items.map((d) => [
        `${d.event_type}${d.event_seq !== null ? " #" + d.event_seq : ""}`,
        status(d.status),
        h(
          "details",
          {
            open: OPEN.has(d.id),
            ontoggle: (e) => (e.target.open ? OPEN.add(d.id) : OPEN.delete(d.id)),
          },
          h("summary", null, String(d.attempts_made)),
          h("ol", null, d.attempts.map((a) => h("li", null, `${when(a.created_at)}: ${a.succeeded ? "ok" : "failed"} ${a.status_code ?? ""} ${a.error || ""} (${a.latency_ms} ms)`))),
        ),
        d.last_error || (d.last_status_code ? `HTTP ${d.last_status_code}` : "–"),
        when(d.created_at),
        when(d.delivered_at),
        can("webhooks.manage") && d.status !== "delivering" ? button("Redeliver", redeliver(d), "small") : "",
      ]),
      { empty: "No deliveries yet." },
    ),
  );
}
