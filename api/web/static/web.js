// The pages' only script: draw the Bokeh charts from their JSON data blocks, show the
// decision fields of the chosen action, keep a form from being sent twice, print.
"use strict";

function drawCharts() {
  for (const target of document.querySelectorAll("div.chart[data-source]")) {
    const data = document.getElementById(target.dataset.source);
    if (!data || !window.Bokeh) {
      target.textContent = "图表组件未加载";
      continue;
    }
    try {
      window.Bokeh.embed.embed_item(JSON.parse(data.textContent), target.id);
      target.dataset.drawn = "true";
    } catch (error) {
      target.textContent = "图表无法显示";
    }
  }
}

function followDecision(form) {
  const fields = form.querySelectorAll("[data-for]");
  const update = () => {
    const chosen = form.querySelector("input[name=action]:checked");
    for (const field of fields) {
      field.hidden = chosen !== null && field.dataset.for !== chosen.value;
    }
  };
  form.addEventListener("change", update);
  update();
}

function submitOnce(form) {
  form.addEventListener("submit", (event) => {
    if (form.dataset.sent === "true") {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "true";
    for (const button of form.querySelectorAll("button[type=submit]")) {
      button.disabled = true;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  drawCharts();
  const decision = document.getElementById("decision-form");
  if (decision) {
    followDecision(decision);
  }
  for (const form of document.querySelectorAll("form[method=post]")) {
    submitOnce(form);
  }
  for (const button of document.querySelectorAll("[data-print]")) {
    button.addEventListener("click", () => window.print());
  }
});
