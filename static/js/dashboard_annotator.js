// One annotator's dashboard: learned confusion heatmap and ω histogram.
(function () {
  "use strict";
  crowdlabCharts.heatmap("learned-heatmap", "learned-heatmap-data");
  crowdlabCharts.bar("omega-chart", "omega-data", { xTitle: "ω", yTitle: "labels" });
})();
