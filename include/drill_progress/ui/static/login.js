// Login bridge: /drill-progress/login#token=<Airflow JWT>[&next=/same/origin/path]. The token travels in the URL
// fragment, which browsers never send to the server, and is removed from the address bar at
// once. It is exchanged for Airflow's own _token cookie by POST session with the token as a
// Bearer header (the server validates it); then the page opens. No data is served here.
(function () {
  "use strict";
  var params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  var token = params.get("token");
  // optional same-origin path to open afterwards (e.g. /plugin/drill-progress, the page inside
  // Airflow's UI); anything else falls back to the page itself
  var next = "./";
  var wanted = params.get("next");
  if (wanted && /^\/[^\/\\]/.test(wanted)) {
    var target = new URL(wanted, window.location.origin);
    if (target.origin === window.location.origin) { next = target.pathname + target.search; }
  }
  history.replaceState(null, "", window.location.pathname);
  var message = document.getElementById("message");
  if (!token) {
    message.textContent = "No token given: sign in to Airflow, then open Drill Progress from its menu.";
    return;
  }
  fetch("session", {
    method: "POST",
    credentials: "same-origin",
    headers: {"Authorization": "Bearer " + token},
  }).then(function (response) {
    if (response.status === 204) {
      window.location.replace(next);
    } else {
      message.textContent = "The token was refused (HTTP " + response.status + ").";
    }
  }).catch(function (error) {
    message.textContent = "Sign-in failed: " + error;
  });
})();
