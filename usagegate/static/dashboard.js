// usagegate dashboard: draws the server-built plotly figures and wires a few conveniences.
// Figures arrive as JSON in <script type="application/json" id="..."> tags (no inline code, so the
// page can run under a strict Content-Security-Policy).
(function () {
  "use strict";

  var CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"] };

  function drawCharts() {
    document.querySelectorAll("[data-figure]").forEach(function (el) {
      var source = document.getElementById(el.getAttribute("data-figure"));
      if (!source || typeof Plotly === "undefined") { return; }
      var figure = JSON.parse(source.textContent);
      Plotly.newPlot(el, figure.data, figure.layout, CONFIG).then(function () {
        // Points may carry a link (customdata[0] is a dashboard path): click to open it.
        el.on("plotly_click", function (event) {
          var point = event.points && event.points[0];
          var link = point && point.customdata && (Array.isArray(point.customdata) ? point.customdata[0] : point.customdata);
          if (typeof link === "string" && link.charAt(0) === "/") { window.location.href = link; }
        });
      });
    });
  }

  function rowLinks() {
    document.querySelectorAll("tr[data-href]").forEach(function (row) {
      row.addEventListener("click", function (event) {
        if (event.target.closest("a, button, summary, input")) { return; }
        window.location.href = row.getAttribute("data-href");
      });
    });
  }

  function rangePicker() {
    var toggle = document.querySelector("[data-custom-toggle]");
    var box = document.querySelector(".custom-range");
    if (toggle && box) {
      toggle.addEventListener("click", function (event) {
        event.preventDefault();
        box.classList.toggle("open");
      });
    }
  }

  function autoSubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (select) {
      select.addEventListener("change", function () { select.form.submit(); });
    });
  }

  function addPlanRow() {
    var button = document.querySelector("[data-add-plan]");
    if (!button) { return; }
    button.addEventListener("click", function () {
      var template = document.getElementById("plan-row-template");
      var rows = document.getElementById("plan-rows");
      rows.appendChild(template.content.cloneNode(true));
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    drawCharts();
    rowLinks();
    rangePicker();
    autoSubmit();
    addPlanRow();
  });
})();
