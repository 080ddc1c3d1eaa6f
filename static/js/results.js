// Confidence bars of the results table. The width travels in data-w and is
// set through the CSSOM: the Content-Security-Policy refuses style attributes.
(function () {
  "use strict";
  document.querySelectorAll(".conf[data-w]").forEach((cell) => {
    cell.style.setProperty("--w", Number(cell.dataset.w) + "%");
  });
})();
