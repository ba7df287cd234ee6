// Jobs: a filterable list, newest first, kept live by the change feed.

import { api } from "../api.js";
import { ago, button, duration, gpusOf, h, link, money, replace, status, table } from "../dom.js";
import { refreshOnLive } from "../live.js";

const STATUSES = ["pending", "allocated", "running", "succeeded", "failed", "cancelled", "timed_out", "allocation_failed"];

export async function mount(root, { query }, ctx) {
  const statusSel = h(
    "select",
    { id: "jobs-status", "aria-label": "Status" },
    h("option", { value: "" }, "any status"),
    h("option", { value: "active" }, "active (pending, allocated, running)"),
    STATUSES.map((s) => h("option", { value: s }, s)),
  );
  statusSel.value = query.get("status") || "";
  const label = h("input", { id: "jobs-label", type: "search", placeholder: "label key=value", "aria-label": "Label (key=value)", value: query.get("label") || "" });
  const listSlot = h("div");
  const more = h("div");
  replace(
    root,
    h("h1", null, "Jobs"),
    h(
      "form.toolbar",
      {
        onsubmit: (e) => {
          e.preventDefault();
          apply();
        },
      },
      statusSel,
      label,
      h("button", { type: "submit" }, "Filter"),
    ),
    listSlot,
    more,
  );
  statusSel.addEventListener("change", apply);

  function apply() {
    const q = new URLSearchParams();
    if (statusSel.value) q.set("status", statusSel.value);
    if (label.value.trim()) q.set("label", label.value.trim());
    const target = "#/jobs" + (q.toString() ? "?" + q : "");
    if (location.hash !== target) location.hash = target;
    else refresh();
  }

  function params(cursor) {
    const s = statusSel.value;
    return {
      status: s === "active" ? ["pending", "allocated", "running"] : s || undefined,
      label: label.value.trim() || undefined,
      limit: 50,
      cursor,
    };
  }

  let items = [];
  function row(j) {
    const end = j.finished_at ? new Date(j.finished_at) : new Date();
    const ran = j.started_at ? duration((end - new Date(j.started_at)) / 1000) : "–";
    return [link(`#/jobs/${j.id}`, j.name), status(j.status), gpusOf(j.requirements), ago(j.created_at), ran, money(j.cost)];
  }

  function render(nextCursor) {
    replace(listSlot, table(["job", "status", "asks for", "submitted", "ran", "cost"], items.map(row), { caption: "Jobs, newest first", empty: "No jobs match." }));
    replace(
      more,
      nextCursor
        ? button("Load more", async () => {
            const page = await api("/v1/jobs", { params: params(nextCursor) });
            items = items.concat(page.items);
            render(page.next_cursor);
          })
        : [],
    );
  }

  async function refresh() {
    const page = await api("/v1/jobs", { params: params() });
    items = page.items;
    render(page.next_cursor);
  }

  await refresh();
  const stopLive = refreshOnLive(ctx.live, (e) => e.entity_type === "job", refresh, 250);
  return {
    dispose() {
      stopLive();
    },
  };
}
