// The project dashboard's charts: common confusion, loss curves, accuracy per run.
(function () {
  "use strict";
  crowdlabCharts.heatmap("common-heatmap", "common-heatmap-data");
  const loss = crowdlabCharts.data("loss-data") || [];
  const longest = Math.max(0, ...loss.map((d) => d.data.length));
  crowdlabCharts.multiLine("loss-chart", { labels: Array.from({ length: longest }, (_, i) => i + 1), datasets: loss }, { xTitle: "epoch", yTitle: "loss" });
  const acc = crowdlabCharts.data("accuracy-data");
  crowdlabCharts.multiLine("accuracy-chart", { labels: acc.labels, datasets: [
    { label: "agreement with majority vote", data: acc.agreement_with_mv },
    { label: "accuracy on gold", data: acc.gold_accuracy },
  ].filter((d) => d.data.some((v) => v !== null)) }, { type: acc.labels.length > 6 ? "line" : "bar", yTitle: "share", yMin: 0, yMax: 1 });
})();
