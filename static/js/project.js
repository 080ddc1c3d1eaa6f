// The project page's charts (their data comes from the page's json_script tags).
(function () {
  "use strict";
  crowdlabCharts.bar("hist-chart", "hist-data", { xTitle: "labels per item", yTitle: "items" });
  crowdlabCharts.bar("timeline-chart", "timeline-data", { yTitle: "labels" });
})();
