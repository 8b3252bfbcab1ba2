// The usage trend chart (ECharts): one series per model from GET /api/v1/usage/trend.
// A bucket without calls is null in the API and a gap here, never 0. The tooltip shows the
// API's exact values (cost as its decimal string).

import * as fmt from "./format.js";
import { t } from "./i18n.js";

/* global echarts */

export const PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2",
  "#db2777", "#65a30d", "#ea580c", "#475569"];
const EMPTY = "-"; // ECharts' "no value": a gap in a line, no bar

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export class TrendChart {
  constructor(el, box, message) {
    this.el = el;
    this.box = box;
    this.message = message;
    this.trend = null;
    this.chart = echarts.init(el, null, { renderer: "canvas" });
    new ResizeObserver(() => this.chart.resize()).observe(el);
  }

  setState(state, text = "") {
    this.box.dataset.state = state;
    this.message.textContent = text;
  }

  loading() {
    this.setState("loading", t("state.loading"));
  }

  failed(error, show) {
    this.setState("error");
    show(this.message, error);
  }

  /** Which series the legend hides now, to keep them hidden across a re-render. */
  hiddenSeries() {
    const legend = this.chart.getOption()?.legend?.[0];
    return Object.entries(legend?.selected ?? {}).filter(([, on]) => !on).map(([name]) => name);
  }

  render(trend, { chartType, currency }) {
    const hidden = this.hiddenSeries();
    this.trend = trend;
    this.options = { chartType, currency };
    if (trend.series.length === 0) {
      this.chart.clear();
      this.setState("empty", t("state.noDataRange"));
      return;
    }
    this.setState("ready");
    const bar = chartType === "bar";
    const selected = Object.fromEntries(hidden.map((name) => [name, false]));
    this.chart.setOption({
      animationDuration: 300,
      color: PALETTE,
      legend: { type: "scroll", top: 0, left: 0, right: 0, selected },
      grid: { left: 8, right: 28, top: 44, bottom: 8, containLabel: true },
      tooltip: {
        trigger: "axis", confine: true, className: "chart-tip", appendTo: "body",
        axisPointer: { type: bar ? "shadow" : "line" },
        formatter: (params) => this.tooltip(params),
      },
      xAxis: {
        type: "category", boundaryGap: bar,
        data: trend.buckets.map((b) => fmt.bucketLabel(b, trend.granularity)),
        axisLabel: { hideOverlap: true, alignMinLabel: "left", alignMaxLabel: "right" },
      },
      yAxis: {
        type: "value",
        axisLabel: { formatter: (v) => (trend.metric === "cost" ? v : fmt.compact(v)) },
      },
      series: trend.series.map((s) => ({
        id: s.name, name: s.label, type: bar ? "bar" : "line", stack: bar ? "total" : undefined,
        data: s.values.map((v) => (v === null ? EMPTY : Number(v))),
        connectNulls: false, showSymbol: true, symbolSize: trend.buckets.length > 200 ? 2 : 5,
        emphasis: { focus: "series" }, barMaxWidth: 36,
      })),
    }, { notMerge: true });
  }

  tooltip(params) {
    const list = Array.isArray(params) ? params : [params];
    if (!list.length || !this.trend) return "";
    const index = list[0].dataIndex;
    const bucket = this.trend.buckets[index];
    const rows = list.map((p) => {
      const raw = this.trend.series[p.seriesIndex].values[index];
      const text = raw === null ? t("state.noData")
        : fmt.metricValue(this.trend.metric, raw, this.options.currency);
      const swatch = `swatch-${p.seriesIndex % PALETTE.length}`;
      return `<div class="tip-row"><span class="swatch ${swatch}"></span>`
        + `<span class="tip-name">${escapeHtml(p.seriesName)}</span>`
        + `<b class="${raw === null ? "nodata" : ""}">${escapeHtml(text)}</b></div>`;
    });
    return `<div class="tip-head">${escapeHtml(fmt.bucketLabel(bucket, this.trend.granularity))}`
      + ` <span class="muted">${escapeHtml(bucket)}</span></div>${rows.join("")}`;
  }

  downloadPng() {
    if (!this.trend || this.trend.series.length === 0) return;
    const link = document.createElement("a");
    link.href = this.chart.getDataURL({ type: "png", pixelRatio: 2, backgroundColor: "#fff" });
    link.download = `tallygate-trend-${this.trend.metric}.png`;
    document.body.append(link);
    link.click();
    link.remove();
  }
}
