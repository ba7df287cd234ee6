// Usage and costs: GPU-hours and spend by day, user and model (the costs API), and budgets.

import { api } from "../api.js";
import { h, money, num, replace, table } from "../dom.js";
import { barChart } from "../chart.js";

const SINCE = [
  ["7d", "last 7 days"],
  ["30d", "last 30 days"],
  ["90d", "last 90 days"],
];

export async function mount(root, _params, ctx) {
  const since = h("select", { id: "usage-since", "aria-label": "Period" }, SINCE.map(([v, t]) => h("option", { value: v }, t)));
  since.value = "30d";
  const measure = h("select", { id: "usage-measure", "aria-label": "Measure" }, h("option", { value: "cost" }, "cost"), h("option", { value: "gpu_hours" }, "GPU-hours"));
  const totals = h("p");
  const charts = h("div");
  const budgets = h("div");
  replace(root, h("h1", null, "Usage and costs"), h("div.toolbar", null, since, measure), totals, charts, h("h2", null, "Budgets"), budgets);

  async function refresh() {
    const [byDay, byUser, byModel, budgetList] = await Promise.all([
      api("/v1/usage", { params: { by: "day", since: since.value } }),
      api("/v1/usage", { params: { by: "user", since: since.value } }),
      api("/v1/usage", { params: { by: "model", since: since.value } }),
      api("/v1/budgets"),
    ]);
    const cur = byDay.currency;
    const m = measure.value;
    const value = (g) => Number(m === "cost" ? g.cost : g.gpu_hours);
    const text = (g) => (m === "cost" ? money(g.cost, cur) : `${num(g.gpu_hours, 2)} GPU-h`);
    replace(totals, `Since ${new Date(byDay.since).toISOString().slice(0, 10)}: `, h("strong", null, money(byDay.total_cost, cur)), ` for ${num(byDay.total_gpu_hours, 2)} GPU-hours, running work included.`);
    const chartOf = (usage, title, sortByKey) => {
      const groups = [...usage.groups];
      if (sortByKey) groups.sort((a, b) => String(a.key).localeCompare(String(b.key)));
      else groups.sort((a, b) => value(b) - value(a));
      if (!groups.length) return h("div", null, h("h2", null, title), h("p.empty", null, "No usage in this period."));
      return h(
        "div",
        null,
        h("h2", null, title),
        barChart(groups.map((g) => ({ label: g.name || g.key, value: value(g), text: text(g) })), { title: `${m === "cost" ? "Cost" : "GPU-hours"} ${title.toLowerCase()}` }),
        h("details.data", null, h("summary", null, "as a table"), table(["group", "GPU-hours", "cost"], groups.map((g) => [g.name || g.key, num(g.gpu_hours, 3), money(g.cost, cur)]))),
      );
    };
    replace(charts, chartOf(byDay, "By day", true), chartOf(byUser, "By user", false), chartOf(byModel, "By GPU model", false));
    replace(
      budgets,
      table(
        ["scope", "period", "amount", "spent", "reserved", "remaining", "used", "kind"],
        budgetList.map((b) => [
          b.scope || (b.user_id ? `user ${b.user_id}` : b.label ? `label ${b.label}` : "organization"),
          b.period === "custom" ? `${b.period_days} days` : b.period,
          money(b.amount, b.currency),
          money(b.spent, b.currency),
          money(b.reserved, b.currency),
          money(b.remaining, b.currency),
          h("span", null, h("meter", { min: 0, max: 100, value: Math.min(100, Number(b.percent)), high: 80, "aria-hidden": "true" }), ` ${num(b.percent, 0)}%`),
          b.hard ? (b.stop_running ? "hard, stops running work" : "hard") : "soft (alerts)",
        ]),
        { empty: "No budgets." },
      ),
    );
  }

  since.addEventListener("change", () => refresh().catch((e) => ctx.status(String(e.message || e), "error")));
  measure.addEventListener("change", () => refresh().catch((e) => ctx.status(String(e.message || e), "error")));
  await refresh();
  return null;
}
