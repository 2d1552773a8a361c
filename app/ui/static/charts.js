// pollhook's dashboard charts, drawn with the vendored uPlot. The data comes from the page:
// the overview's live fragment carries it in data-charts (refreshed by htmx with the figures),
// a provider's completion curve in data-quantiles. No inline script: the pages' CSP allows
// only pollhook's own files.
(function () {
  "use strict";

  var charts = {};

  function color(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#0b5cad";
  }

  function size(el) {
    return { width: Math.max(240, el.clientWidth || 400), height: 200 };
  }

  function axes() {
    var fg = color("--muted");
    var grid = { stroke: color("--line"), width: 1 };
    return [{ stroke: fg, grid: grid }, { stroke: fg, grid: grid, size: 50 }];
  }

  function lineChart(el, xs, ys, label, time) {
    var opts = Object.assign(size(el), {
      scales: { x: { time: time } },
      legend: { show: false },
      series: [{}, { label: label, stroke: color("--accent"), width: 2, fill: "rgba(11,92,173,0.12)" }],
      axes: axes(),
    });
    return new uPlot(opts, [xs, ys], el);
  }

  function barChart(el, bars, label) {
    var labels = bars.labels;
    var xs = labels.map(function (_, i) { return i; });
    var shown = axes();
    shown[0].splits = function () { return xs; };
    shown[0].values = function (u, splits) {
      // Every bucket's edge does not fit under a narrow chart: label as many as fit, evenly.
      var every = Math.max(1, Math.ceil(labels.length * 48 / Math.max(u.bbox.width / (window.devicePixelRatio || 1), 1)));
      return splits.map(function (i) {
        return labels[i] === undefined || i % every !== 0 ? "" : labels[i];
      });
    };
    var opts = Object.assign(size(el), {
      scales: { x: { time: false, range: [-0.5, labels.length - 0.5] } },
      legend: { show: false },
      series: [{}, {
        label: label,
        stroke: color("--accent"),
        fill: color("--accent"),
        paths: uPlot.paths.bars({ size: [0.7, 60] }),
        points: { show: false },
      }],
      axes: shown,
    });
    return new uPlot(opts, [xs, bars.counts], el);
  }

  function overviewData() {
    var live = document.getElementById("live");
    if (!live || !live.dataset.charts) { return null; }
    return JSON.parse(live.dataset.charts);
  }

  function drawOverview() {
    var data = overviewData();
    if (!data) { return; }
    document.querySelectorAll(".chart[data-chart]").forEach(function (el) {
      var name = el.dataset.chart;
      if (name === "completion") { return; }
      var rows;
      if (name === "detection_gap" || name === "delivery_latency") {
        rows = [data[name].labels.map(function (_, i) { return i; }), data[name].counts];
      } else {
        rows = [data.minutes, data[name]];
      }
      if (charts[name]) {
        charts[name].setData(rows);
      } else if (name === "detection_gap" || name === "delivery_latency") {
        charts[name] = barChart(el, data[name], "tasks");
      } else {
        charts[name] = lineChart(el, data.minutes, data[name], "per second", true);
      }
    });
  }

  function drawCompletion() {
    document.querySelectorAll('.chart[data-chart="completion"]').forEach(function (el) {
      if (el.dataset.drawn) { return; }
      var ages = JSON.parse(el.dataset.quantiles);
      var shares = ages.map(function (_, i) { return i; });
      lineChart(el, ages, shares, "% done", false);
      el.dataset.drawn = "1";
    });
  }

  function start() {
    if (typeof uPlot === "undefined") { return; }
    drawOverview();
    drawCompletion();
    document.body.addEventListener("htmx:afterSettle", drawOverview);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
