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
    this.anomalies = [];
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

  /** Mark these spikes (from GET /api/v1/anomalies) on the chart; [] removes the marks. */
  setAnomalies(anomalies) {
    this.anomalies = anomalies ?? [];
    if (this.trend && this.trend.series.length) this.render(this.trend, this.options);
  }

  /** The bucket index an anomaly starts in, or -1. */
  bucketIndex(anomaly) {
    const { buckets, granularity } = this.trend;
    if (anomaly.granularity !== granularity) return -1;
    if (granularity === "day") return buckets.indexOf(anomaly.start.slice(0, 10));
    const at = Date.parse(anomaly.start);
    return buckets.findIndex((b) => Date.parse(b) === at);
  }

  anomalyText(a) {
    const who = a.scope === "model" ? a.model : (a.api_key_name ?? a.api_key_id);
    const value = fmt.integer(Math.round(a.value));
    const baseline = fmt.integer(Math.round(a.baseline));
    return t("anomaly.tip", {
      kind: t(`anomaly.kind.${a.kind}`), who, metric: t(`metric.${a.metric}`),
      gran: t(`gran.${a.granularity}`), value, baseline,
      times: (a.baseline > 0 ? a.value / a.baseline : 0).toFixed(1), score: a.score.toFixed(1),
    });
  }

  /** markPoint data per series id (spikes of a model) and markLine data (spikes of a key). */
  anomalyMarks() {
    const points = {};
    const lines = [];
    if (!this.trend) return { points, lines };
    for (const a of this.anomalies) {
      if (a.kind !== "spike" || a.metric !== this.trend.metric) continue;
      const index = this.bucketIndex(a);
      if (index < 0) continue;
      const text = this.anomalyText(a);
      const series = a.scope === "model" ? this.trend.series.find((s) => s.name === a.model) : null;
      if (series && series.values[index] !== null) {
        (points[series.name] ??= []).push({
          coord: [index, Number(series.values[index])], value: "!", name: text, anomalyId: a.id,
        });
      } else {
        lines.push({ xAxis: index, name: text, anomalyId: a.id });
      }
    }
    return { points, lines };
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
    const marks = this.anomalyMarks();
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
      series: trend.series.map((s, i) => ({
        ...this.markOptions(marks, s.name, i === 0),
        id: s.name, name: s.label, type: bar ? "bar" : "line", stack: bar ? "total" : undefined,
        data: s.values.map((v) => (v === null ? EMPTY : Number(v))),
        connectNulls: false, showSymbol: true, symbolSize: trend.buckets.length > 200 ? 2 : 5,
        emphasis: { focus: "series" }, barMaxWidth: 36,
      })),
    }, { notMerge: true });
  }

  markOptions(marks, name, first) {
    const tooltip = { trigger: "item", confine: true, formatter: (p) => escapeHtml(p.name) };
    const options = {};
    if (marks.points[name]) {
      options.markPoint = {
        symbol: "pin", symbolSize: 38, itemStyle: { color: "#dc2626" },
        label: { color: "#fff", fontWeight: "bold" }, tooltip, data: marks.points[name],
      };
    }
    if (first && marks.lines.length) {
      options.markLine = {
        symbol: "none", silent: false, tooltip,
        lineStyle: { color: "#dc2626", type: "dashed", width: 2 },
        label: { formatter: "!", color: "#dc2626", fontWeight: "bold" }, data: marks.lines,
      };
    }
    return options;
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
