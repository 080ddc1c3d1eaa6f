// Follow an inference run: poll its status until it finishes.
(function () {
  "use strict";
  const panel = document.getElementById("run-panel");
  if (!panel || !panel.dataset.statusUrl) return;
  const bar = panel.querySelector(".bar");
  const meter = document.getElementById("run-progress");
  const text = document.getElementById("run-text");
  let delay = 1000;

  function show(run) {
    const percent = run.progress === null ? 0 : Math.round(run.progress * 100);
    bar.style.width = percent + "%";
    meter.setAttribute("aria-valuenow", String(percent));
    panel.dataset.status = run.status;
    if (run.status === "pending") {
      text.textContent = "Waiting for an inference worker to pick the run up…";
    } else if (run.status === "running") {
      text.textContent = run.total ? "Training: epoch " + run.epoch + " of " + run.total + " (" + percent + " %)" : "Reading the annotations…";
    } else if (run.status === "published") {
      text.replaceChildren("Published. ");
      const link = document.createElement("a");
      link.href = panel.dataset.resultsUrl;
      link.textContent = "See the results";
      text.append(link);
      if (run.final_loss !== null) text.append(" · final loss " + run.final_loss.toFixed(4));
    } else if (run.status === "cancelled") {
      text.textContent = run.error || "Cancelled.";
      panel.classList.add("cancelled");
    } else {
      text.textContent = run.status_display + (run.error ? ": " + run.error : "");
      panel.classList.add("failed");
    }
    // Only an active run can be cancelled.
    const cancel = document.getElementById("run-cancel-form");
    if (cancel) cancel.hidden = Boolean(run.finished);
  }

  async function poll() {
    try {
      const response = await fetch(panel.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error("status " + response.status);
      const run = await response.json();
      show(run);
      if (run.finished) {
        for (const id of ["run-now", "run-cold"]) {
          const button = document.getElementById(id);
          if (button) button.disabled = false;
        }
        return;
      }
      delay = 1000;
    } catch (error) {
      // A blip (server restart): keep following, a little slower.
      text.textContent = "Lost contact with the server (" + error.message + "); retrying…";
      delay = Math.min(delay * 2, 10000);
    }
    setTimeout(poll, delay);
  }
  poll();
})();
