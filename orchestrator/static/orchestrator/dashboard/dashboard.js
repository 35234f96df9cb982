/* Draws the dashboard's charts with Chart.js from the data the page carries in
   <script type="application/json" id="dashboard-charts"> (orchestrator/dashboard/panels.py). */
(function () {
  "use strict";
  var tenant = document.getElementById("tenant-select");
  if (tenant) {
    tenant.addEventListener("change", function () { tenant.form.submit(); });
  }
  var source = document.getElementById("dashboard-charts");
  if (!source || typeof Chart === "undefined") {
    return;
  }
  var charts = JSON.parse(source.textContent);
  var numbers = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

  Chart.defaults.font.family = 'system-ui, -apple-system, "Segoe UI", Roboto, Arial, sans-serif';
  Chart.defaults.font.size = 12;
  Chart.defaults.color = "#475569";
  Chart.defaults.animation = false;

  function timeLabel(iso, stepSeconds) {
    var at = new Date(iso);
    if (stepSeconds >= 3 * 3600) {
      return at.toLocaleString(undefined, { weekday: "short", hour: "2-digit", minute: "2-digit", hour12: false });
    }
    return at.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hour12: false });
  }

  function withUnit(value, unit) {
    if (value === null || value === undefined) {
      return "–";
    }
    return numbers.format(value) + (unit === "%" ? " %" : unit ? " " + unit : "");
  }

  function config(spec) {
    var horizontal = Boolean(spec.horizontal);
    var valueAxis = horizontal ? "x" : "y";
    var labels = spec.time
      ? spec.labels.map(function (iso) { return timeLabel(iso, spec.step_seconds); })
      : spec.labels;
    var datasets = spec.datasets.map(function (d) {
      return {
        label: d.label,
        data: d.data,
        backgroundColor: spec.kind === "line" ? d.color + "33" : d.color,
        borderColor: d.color,
        borderWidth: spec.kind === "line" ? 2 : 0,
        pointRadius: spec.kind === "line" ? 2.5 : 0,
        pointHitRadius: 6,
        spanGaps: false,
        fill: spec.kind === "line",
        tension: 0.25,
        maxBarThickness: 28
      };
    });
    var scales = {};
    scales[valueAxis] = {
      beginAtZero: true,
      stacked: Boolean(spec.stacked),
      grid: { color: "#eef2f7" },
      ticks: {
        precision: spec.integer ? 0 : undefined,
        maxRotation: 0,
        callback: function (v) { return withUnit(v, spec.unit); }
      }
    };
    scales[horizontal ? "y" : "x"] = {
      stacked: Boolean(spec.stacked),
      grid: { display: false },
      ticks: { autoSkip: true, maxTicksLimit: spec.time ? 12 : 40, maxRotation: 0 }
    };
    if (spec.unit === "%") {
      scales[valueAxis].suggestedMax = 10;
    }
    return {
      type: spec.kind,
      data: { labels: labels, datasets: datasets },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        indexAxis: horizontal ? "y" : "x",
        interaction: { mode: "index", intersect: false },
        scales: scales,
        plugins: {
          legend: { display: datasets.length > 1, position: "bottom", labels: { boxWidth: 12, boxHeight: 12 } },
          tooltip: {
            callbacks: {
              label: function (ctx) {
                return ctx.dataset.label + ": " + withUnit(ctx.parsed[valueAxis], spec.unit);
              }
            }
          }
        }
      }
    };
  }

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var spec = charts[canvas.dataset.chart];
    if (spec) {
      new Chart(canvas, config(spec));
    }
  });
})();
